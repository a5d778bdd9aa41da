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
	others := c.othersLocked()
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
	return append([][]byte{c.secret}, c.othersLocked()...)
}

// othersLocked lists the secrets accepted besides the one in use: the
// configured ones, the one SetSecret gave until it is promoted, and the
// one it replaced during the grace.
func (c *Cluster) othersLocked() [][]byte {
	out := slices.Clone(c.accept)
	if c.pending != nil {
		out = append(out, c.pending)
	}
	if c.oldSecret != nil && time.Now().Before(c.oldUntil) {
		out = append(out, c.oldSecret)
	}
	return out
}

// SecretGrace is how long a replaced secret is still accepted.
const SecretGrace = 2 * time.Minute

// DefaultSecretPromote is how long a new secret is only accepted before
// it is sent with: long enough for every member to have been given it
// (swarm nodes exchange within seconds, even on a slow machine), so that
// no member sends with a key its peers cannot read yet and is taken for
// failed meanwhile; short against SecretGrace, which keeps the replaced
// secret accepted after the switch.
const DefaultSecretPromote = 30 * time.Second

// SetSecret moves the cluster to another secret: in swarm mode the nodes
// converge on one. The new secret is accepted at once (gossip keys and
// table pulls) and sent with after SecretPromote; then the old one stays
// accepted for SecretGrace, for members that switched later. A member that
// took the secret a little later than this one, or sooner, reads it all
// along.
func (c *Cluster) SetSecret(secret []byte) error {
	if c.keyring == nil {
		return errors.New("the cluster started without a secret; restart it to use one")
	}
	c.keyMu.Lock()
	defer c.keyMu.Unlock()
	switch {
	case bytes.Equal(secret, c.pending):
		return nil
	case bytes.Equal(secret, c.secret):
		// Back to the secret in use before the pending one was sent with.
		c.pending = nil
		c.pendingSeq++
		return c.rotateKeysLocked(c.period.Load())
	}
	c.pending = slices.Clone(secret)
	c.pendingSeq++
	seq := c.pendingSeq
	if err := c.rotateKeysLocked(c.period.Load()); err != nil {
		return fmt.Errorf("installing the new secret's gossip keys: %w", err)
	}
	c.log.Info("new cluster secret accepted; sending with it shortly", "after", c.cfg.SecretPromote)
	c.spawn(func() {
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(c.cfg.SecretPromote):
		}
		if err := c.promote(seq); err != nil {
			c.log.Error("sending with the new secret", "err", err)
		}
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

// promote makes the pending secret of SetSecret number seq the one sent
// with, unless a later SetSecret replaced it.
func (c *Cluster) promote(seq uint64) error {
	c.keyMu.Lock()
	defer c.keyMu.Unlock()
	if c.pendingSeq != seq || c.pending == nil {
		return nil
	}
	c.oldSecret, c.oldUntil, c.secret, c.pending = c.secret, time.Now().Add(SecretGrace), c.pending, nil
	if err := c.rotateKeysLocked(c.period.Load()); err != nil {
		return fmt.Errorf("installing the new secret's gossip keys: %w", err)
	}
	c.log.Info("cluster secret replaced; the old one is accepted for a while", "grace", SecretGrace)
	return nil
}

// KeyPeriod is the gossip key period in use (for status and tests).
func (c *Cluster) KeyPeriod() int64 { return c.period.Load() }
