package gossip

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/vxsec/vxsec/announce"
)

// Deltas: a new version of a host's table that changes only its
// endpoints, networks and IPsec state (containers started and stopped,
// networks made, keys rotated: the common cases) is also sent as the
// change from the version announced before, signed by the host's
// identity (announce.Delta), in a UDP packet of its own to each member,
// sealed with the gossip key
// (transport.sendDelta). Sent to each member once, a delta costs the
// cluster N-1 packets; gossiped, it would cost several times that, in the
// queue membership news waits in. A member holding that previous version
// installs the new one from it, with no pull: no connection, no key
// exchange, one signature checked. Everything else is as before: the
// version tag is still set on every change, and a member that did not get
// the delta (lost, a gap, a restart, a change to its revocation list, a
// change too large for a packet) pulls the table when it sees the tag,
// deltaWait later. A delta gets no more trust than a
// pull: it is checked with the certificate chain (and pass, in swarm mode)
// of the table it applies to, by the same Verifier, its IPsec epochs must
// be bound to that signer, it must name that table's version as its base,
// and the table it makes must hash to what the host signed.

// heldTable is a member's table installed, with what signed it.
type heldTable struct {
	table announce.Table
	// signed: the table came signed; then signer, chain and pass are
	// what OpenTable checked it with.
	signed bool
	signer string
	chain  [][]byte
	pass   []byte
}

// sendDelta sends the delta from prev, the table announced last, to next
// (encoded nextRaw), if only endpoints changed and it fits one event.
func (c *Cluster) sendDelta(prev, next announce.Table, nextRaw []byte) bool {
	if c.cfg.timing.noDeltas {
		return false
	}
	d, ok := announce.Diff(prev, next, nextRaw, 72)
	if !ok {
		return false
	}
	if c.cfg.Signer != nil {
		body, err := d.Body()
		if err == nil {
			d.Sig, err = c.cfg.Signer.SignRaw(body)
		}
		if err != nil {
			// No identity to sign with yet: members pull.
			c.log.Debug("not sending a delta", "version", next.Version.String(), "err", err)
			return false
		}
	}
	wire, err := announce.EncodeDelta(d)
	if err != nil {
		return false // a signature longer than planned for: members pull
	}
	var key []byte
	if c.keyring != nil {
		key = c.keyring.GetPrimaryKey()
	}
	self := c.serf.LocalMember().Name
	var to []netip.AddrPort
	for _, m := range c.serf.Members() {
		if a, ok := netip.AddrFromSlice(m.Addr); ok && m.Name != self && m.Status == serf.StatusAlive {
			to = append(to, netip.AddrPortFrom(a.Unmap(), m.Port))
		}
	}
	if err := c.tr.sendDelta(key, wire, to); err != nil {
		c.log.Debug("sending a delta", "version", next.Version.String(), "err", err)
		return false
	}
	c.stats.accept("delta-sent")
	return true
}

// deltaLoop takes the deltas the transport received. It takes what has
// queued up at once, then installs each member's run of deltas together
// (installChain): a host that falls behind, as when many hosts change at
// once on a busy machine, catches up with one signature checked per
// member, not one per version.
func (c *Cluster) deltaLoop(ctx context.Context) {
	for {
		var first []byte
		select {
		case <-ctx.Done():
			return
		case first = <-c.tr.deltas:
		}
		c.installing.Store(true)
		ready := map[string]bool{}
		for p, more := first, true; more; {
			if name, ok := c.onDelta(p); ok {
				ready[name] = true
			}
			select {
			case p = <-c.tr.deltas:
			default:
				more = false
			}
		}
		for name := range ready {
			c.drainDeltas(name)
		}
		c.installing.Store(false)
	}
}

// onDelta keeps a member's delta, if this host holds the version the delta
// is from or one before it, and reports the member. UDP does not keep
// order, so a delta from a version not held yet waits for the one before
// it; drainDeltas installs them.
func (c *Cluster) onDelta(payload []byte) (string, bool) {
	d, body, err := announce.DecodeDelta(payload)
	if err != nil {
		c.stats.add("delta-malformed")
		c.lim.Log(slog.LevelWarn, "delta malformed", "refusing a malformed table delta", "err", err)
		return "", false
	}
	name := d.Host.String()
	if name == c.serf.LocalMember().Name {
		return "", false
	}
	if _, alive := c.aliveMember(name); !alive {
		return "", false
	}
	c.mu.Lock()
	_, held := c.held[name]
	base := c.known[name]
	usable := held && !c.untrusted[name] && d.Prev.Epoch == base.Epoch && base.Less(d.Next)
	if usable {
		c.keepDelta(name, pendingDelta{d, body})
	}
	c.mu.Unlock()
	switch {
	case !usable:
		// Older than the table held, or from another run of its host:
		// the version tag leads to a pull if one is needed.
		c.stats.add("delta-gap")
		return "", false
	case base != d.Prev:
		c.stats.accept("delta-early")
	}
	return name, true
}

// pendingDelta is a delta kept until the version it is from is held.
type pendingDelta struct {
	d    announce.Delta
	body []byte
}

// maxPending bounds the deltas kept per member.
const maxPending = 8

// keepDelta keeps a delta from a version not held yet; under c.mu.
func (c *Cluster) keepDelta(name string, p pendingDelta) {
	list := c.early[name]
	if len(list) >= maxPending {
		list = list[1:]
	}
	c.early[name] = append(list, p)
}

// drainDeltas installs the kept deltas that follow the version now held,
// in order, and forgets those it went past: a run of them at once
// (installChain), or, if that fails, one at a time, each checked.
func (c *Cluster) drainDeltas(name string) {
	if c.installChain(name) {
		return
	}
	for {
		c.mu.Lock()
		base := c.known[name]
		var next *pendingDelta
		kept := c.early[name][:0]
		for _, p := range c.early[name] {
			switch {
			case p.d.Prev == base && next == nil:
				next = &p
			case base.Less(p.d.Next) && p.d.Prev.Epoch == base.Epoch:
				kept = append(kept, p)
			}
		}
		if len(kept) == 0 {
			delete(c.early, name)
		} else {
			c.early[name] = kept
		}
		c.mu.Unlock()
		if next == nil || !c.installDelta(name, *next) {
			return
		}
	}
}

// installChain installs the run of two or more kept deltas that follows
// the version held, checking only the last one's signature and the hash
// of the table the run makes: that table is exactly the one its host
// signed, whatever the deltas before it were, and none of the tables in
// between is installed. It reports whether it installed the run; when it
// did not (no run, or one that does not check: a forged delta in it), the
// deltas stay kept for drainDeltas to try one at a time.
func (c *Cluster) installChain(name string) bool {
	c.mu.Lock()
	h, held := c.held[name]
	base := c.known[name]
	var chain []pendingDelta
	for at := base; held && !c.untrusted[name]; {
		i := slices.IndexFunc(c.early[name], func(p pendingDelta) bool { return p.d.Prev == at })
		if i < 0 {
			break
		}
		chain = append(chain, c.early[name][i])
		at = c.early[name][i].d.Next
	}
	c.mu.Unlock()
	if len(chain) < 2 {
		return false
	}
	t, rekeyed := h.table, false
	var err error
	for i, p := range chain {
		rekeyed = rekeyed || p.d.IPsec != nil
		if i < len(chain)-1 {
			t, err = p.d.Apply(t)
		} else {
			t, _, err = p.d.Install(t)
		}
		if err != nil {
			return false
		}
	}
	last := chain[len(chain)-1]
	if err := c.checkDelta(last.d, last.body, h); err != nil {
		return false
	}
	if rekeyed && h.signed && c.checkKeyNames(t, h.signer) != nil {
		return false
	}
	c.commitDelta(name, base, h, t, len(chain))
	return true
}

// installDelta checks a delta from the version held and installs the table
// it makes, and reports whether it did.
func (c *Cluster) installDelta(name string, p pendingDelta) bool {
	d := p.d
	c.mu.Lock()
	h, held := c.held[name]
	ok := held && c.known[name] == d.Prev && !c.untrusted[name]
	c.mu.Unlock()
	if !ok {
		return false
	}
	if err := c.checkDelta(d, p.body, h); err != nil {
		c.refuseDelta(name, err)
		return false
	}
	t, _, err := d.Install(h.table)
	if err != nil {
		c.stats.add("delta-mismatch")
		c.lim.Log(slog.LevelWarn, "delta mismatch", "a table delta does not rebuild the table its host signed; pulling it", "member", name, "err", err)
		return false
	}
	// As for a pulled table: its IPsec epochs are bound to its signer's
	// name.
	if d.IPsec != nil && h.signed {
		if err := c.checkKeyNames(t, h.signer); err != nil {
			c.refuseDelta(name, err)
			return false
		}
	}
	return c.commitDelta(name, d.Prev, h, t, 1)
}

// refuseDelta counts and logs a delta that does not prove its host.
func (c *Cluster) refuseDelta(name string, err error) {
	c.stats.add("delta-identity")
	c.lim.Log(slog.LevelWarn, "delta identity", "refusing a table delta: it does not prove its host with the identity of its table held; pulling the table", "member", name, "err", err)
}

// commitDelta records t, made from the table held at version base by n
// deltas, as name's table, forgets the kept deltas it went past, and hands
// t to the driver. It reports false, changing nothing, when a pull or a
// drop came first.
func (c *Cluster) commitDelta(name string, base announce.Version, h heldTable, t announce.Table, n int) bool {
	c.mu.Lock()
	if c.known[name] != base || c.untrusted[name] {
		c.mu.Unlock()
		return false
	}
	c.known[name] = t.Version
	h.table = t
	c.held[name] = h
	kept := c.early[name][:0]
	for _, p := range c.early[name] {
		if t.Version.Less(p.d.Next) {
			kept = append(kept, p)
		}
	}
	c.early[name] = kept
	c.mu.Unlock()
	for range n {
		c.stats.accept("delta")
	}
	if n > 1 {
		c.stats.accept("delta-run")
	}
	c.log.Debug("installing member's table from deltas", "member", name, "version", t.Version.String(), "deltas", n, "endpoints", len(t.Endpoints))
	c.cfg.Sink.SetRemote(t)
	return true
}

// errDeltaUnsigned: a delta without a signature, for a table that had
// one (or in a cluster that requires them).
var errDeltaUnsigned = errors.New("the delta is not signed, and the table it changes was")

// checkDelta checks a delta's signature as its table's would be: with the
// chain (and pass) of the table it applies to, by the Verifier, now
// (revocation, expiry, the pass's validity included).
func (c *Cluster) checkDelta(d announce.Delta, body []byte, h heldTable) error {
	if c.cfg.Verifier == nil {
		return nil
	}
	if !h.signed {
		if c.cfg.RequireSigned {
			return errDeltaUnsigned
		}
		return nil
	}
	if len(d.Sig) == 0 {
		return errDeltaUnsigned
	}
	wrapped, err := announce.EncodeSigned(announce.Signed{Chain: h.chain, Pass: h.pass, Sig: d.Sig, Table: body})
	if err != nil {
		return err
	}
	_, signer, _, err := c.cfg.Verifier.OpenTable(d.Host, wrapped)
	if err != nil {
		return err
	}
	if signer != h.signer {
		return errors.New("the delta's signer is not its table's")
	}
	return nil
}

// deferPull pulls name after deltaWait, unless its delta installed the
// version it announced meanwhile; longer (up to behindWait) while this
// host still has deltas to install (queued, or a batch being installed):
// it is behind, and the delta is more likely late than lost. It reports
// false when the member is not one a delta can reach (nothing held from
// its current run), and the pull should go at once.
func (c *Cluster) deferPull(name string, v announce.Version) bool {
	// Under c.mu (maybePull).
	h, held := c.held[name]
	if !held || h.table.Version.Epoch != v.Epoch {
		return false
	}
	if c.deferred[name] {
		return true
	}
	c.deferred[name] = true
	c.spawn(func() {
		for waited := time.Duration(0); ; {
			select {
			case <-c.ctx.Done():
				return
			case <-time.After(c.cfg.timing.deltaWait):
			}
			waited += c.cfg.timing.deltaWait
			behind := len(c.tr.deltas) > 0 || c.installing.Load()
			if !behind || waited >= c.cfg.timing.behindWait {
				break
			}
			c.stats.accept("delta-behind")
		}
		c.mu.Lock()
		delete(c.deferred, name)
		c.mu.Unlock()
		if m, alive := c.aliveMember(name); alive {
			c.queuePull(m)
		}
	})
	return true
}
