package gossip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// DefaultKeyPeriod is the gossip key's lifetime as primary, as Docker's
// swarm rotates its gossip keys.
const DefaultKeyPeriod = 12 * time.Hour

// keyLoop moves the gossip keyring on at every period boundary: the next
// period's key is installed, the current one becomes primary, and the key
// two periods old is removed. Members whose clocks disagree by less than a
// period still share two keys, so nobody drops out.
func (c *Cluster) keyLoop(ctx context.Context) {
	for {
		next := time.Unix(0, (c.period.Load()+1)*int64(c.cfg.KeyPeriod))
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		p := keyPeriod(time.Now(), c.cfg.KeyPeriod)
		if p <= c.period.Load() {
			continue
		}
		if err := c.rotateKeys(p); err != nil {
			c.log.Error("rotating the gossip key", "err", err)
			continue
		}
		c.log.Info("gossip key rotated", "period", p)
	}
}

func (c *Cluster) rotateKeys(p int64) error {
	c.keyMu.Lock()
	defer c.keyMu.Unlock()
	return c.rotateKeysLocked(p)
}

// rotateKeysLocked installs the keys of periods p-1..p+1 (and, during a
// secret change, the old secret's), makes period p's primary and removes
// every other key.
func (c *Cluster) rotateKeysLocked(p int64) error {
	prev, cur, next, err := gossipKeys(c.secret, p)
	if err != nil {
		return err
	}
	keep := [][]byte{prev, cur, next}
	others := c.accept
	if c.oldSecret != nil && time.Now().Before(c.oldUntil) {
		others = append(slices.Clip(others), c.oldSecret)
	}
	for _, o := range others {
		op, oc, on, err := gossipKeys(o, p)
		if err != nil {
			return err
		}
		keep = append(keep, op, oc, on)
	}
	if err := c.auth.setKeys(keep); err != nil {
		return err
	}
	for _, k := range keep {
		if err := c.keyring.AddKey(k); err != nil {
			return err
		}
	}
	if err := c.keyring.UseKey(cur); err != nil {
		return err
	}
	// GetKeys returns the keyring's own slice, which RemoveKey shifts in
	// place: iterate over a copy.
	for _, k := range slices.Clone(c.keyring.GetKeys()) {
		if !slices.ContainsFunc(keep, func(x []byte) bool { return bytes.Equal(x, k) }) {
			if err := c.keyring.RemoveKey(k); err != nil {
				return err
			}
		}
	}
	c.period.Store(p)
	return nil
}

// secrets lists the secrets a table may be sealed with, current first.
func (c *Cluster) secrets() [][]byte {
	c.keyMu.Lock()
	defer c.keyMu.Unlock()
	out := append([][]byte{c.secret}, c.accept...)
	if c.oldSecret != nil && time.Now().Before(c.oldUntil) {
		out = append(out, c.oldSecret)
	}
	return out
}

// SecretGrace is how long a replaced secret is still accepted.
const SecretGrace = 2 * time.Minute

// SetSecret moves the cluster to another secret: in swarm mode the nodes
// converge on one. Its keys become primary at once; the old secret's stay
// accepted for SecretGrace, so members that have not switched yet are
// understood meanwhile (they cannot read us until they switch, which the
// swarm agreement makes happen within seconds).
func (c *Cluster) SetSecret(secret []byte) error {
	if c.keyring == nil {
		return errors.New("the cluster started without a secret; restart it to use one")
	}
	c.keyMu.Lock()
	defer c.keyMu.Unlock()
	if bytes.Equal(secret, c.secret) {
		return nil
	}
	c.oldSecret, c.oldUntil, c.secret = c.secret, time.Now().Add(SecretGrace), slices.Clone(secret)
	if err := c.rotateKeysLocked(c.period.Load()); err != nil {
		return fmt.Errorf("installing the new secret's gossip keys: %w", err)
	}
	c.log.Info("cluster secret replaced; the old one is accepted for a while", "grace", SecretGrace)
	c.spawn(func() {
		select {
		case <-c.ctx.Done():
		case <-time.After(SecretGrace + time.Second):
			if err := c.rotateKeys(c.period.Load()); err != nil {
				c.log.Error("removing the old secret's gossip keys", "err", err)
			}
		}
	})
	return nil
}

// KeyPeriod is the gossip key period in use (for status and tests).
func (c *Cluster) KeyPeriod() int64 { return c.period.Load() }
