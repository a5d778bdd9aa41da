package gossip

import (
	"bytes"
	"context"
	"log/slog"
	"time"

	"github.com/vxsec/vxsec/announce"
)

// snapshotLoop makes every change of the local state this host's next
// table at once, with a new version; publishLoop announces it, spaced,
// and from then on pulls get it. Pulls get the version announced last,
// not a newer one: a member then holds a version the next delta is from
// (a table newer than announced would leave it off the chain of deltas,
// pulling every version after).
func (c *Cluster) snapshotLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.cfg.Local.Changed():
		case <-c.resnap:
		}
		if _, changed := c.takeSnapshot(); changed {
			select {
			case c.dirty <- struct{}{}:
			default:
			}
		}
	}
}

// publishLoop announces the newest version: at once after a quiet spell,
// and at most once per publishSpacing during a burst of changes. The
// delta goes to every member; the version tag follows from tagLoop.
func (c *Cluster) publishLoop(ctx context.Context) {
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.dirty:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(last.Add(publishSpacing(c.serf.NumNodes())))):
		}
		last = time.Now()
		c.mu.Lock()
		prev, next, nextRaw := c.announced, c.local, c.localRaw
		c.announced, c.served = next, c.signed
		c.mu.Unlock()
		// The delta goes first: a member that sees the tag before it
		// waits deltaWait for it. None after a new signature: members
		// check a delta with the chain they hold, which is the old one.
		sent := false
		if !c.resigned.Swap(false) {
			sent = c.sendDelta(prev, next, nextRaw)
		}
		if !sent {
			// Members learn of this version from the tag alone, and pull.
			c.tagNow.Store(true)
		}
		select {
		case c.tagDirty <- struct{}{}:
		default:
		}
	}
}

// tagLoop sets the version tag to the version announced last. After a
// delta it waits tagSpacing since the last tag: every member got the
// delta, and the tag is for those that missed it (lost, or joined since),
// while each change of it is a membership broadcast that every member
// relays several times (memberlist's retransmits). In the 50-host
// benchmark, tags set at every version were most of memberlist's CPU. A
// version no delta carried is tagged at once. It runs apart from
// publishLoop because SetTags waits (up to broadcastWait) for the
// broadcast, and the deltas must not wait with it; and it is the only
// setter of the tag while the cluster runs, so a tag never goes back.
func (c *Cluster) tagLoop(ctx context.Context) {
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.tagDirty:
		}
		spacing := tagSpacing(c.serf.NumNodes())
		if c.cfg.timing.tagSpacing != 0 {
			spacing = max(c.cfg.timing.tagSpacing, 0)
		}
		due := time.After(time.Until(last.Add(spacing)))
		for !c.tagNow.Load() {
			select {
			case <-ctx.Done():
				return
			case <-c.tagDirty: // another version; at once if it asks
				continue
			case <-due:
			}
			break
		}
		c.tagNow.Store(false)
		last = time.Now()
		c.stats.accept("tag-set")
		c.mu.Lock()
		v := c.announced.Version
		c.mu.Unlock()
		if err := c.serf.SetTags(tableTags(v)); err != nil {
			// The tag is set; only the confirmation of its broadcast timed
			// out. The repair pass covers any member that missed it.
			c.log.Debug("announcing table version", "version", v.String(), "err", err)
		}
	}
}

// takeSnapshot makes the local state's snapshot this host's table, with
// the next version, unless it is the table already served.
func (c *Cluster) takeSnapshot() (announce.Version, bool) {
	t := c.cfg.Local.Snapshot()
	c.mu.Lock()
	defer c.mu.Unlock()
	t.Host, t.Version = c.local.Host, c.local.Version
	if c.cfg.Verifier != nil {
		t.CRL = c.cfg.Verifier.CRLNumber()
	}
	raw, err := announce.Encode(t)
	if err != nil {
		c.lim.Log(slog.LevelError, "own table", "encoding this host's table", "err", err)
		return t.Version, false
	}
	// A pending Resign is consumed by any new version, changed or not.
	resign := c.resign.Swap(false)
	if bytes.Equal(raw, c.localRaw) && !resign {
		return t.Version, false
	}
	t.Version.Seq++
	if raw, err = announce.Encode(t); err != nil {
		return t.Version, false
	}
	if err := announce.Check(t, len(raw)); err != nil {
		// The driver refuses what would break the bounds; this is a bug
		// (or IPsec state beyond them), and every member will refuse it.
		c.lim.Log(slog.LevelError, "own table over limits", "this host's table is over the bounds every member checks; members will refuse it", "err", err)
	}
	served, err := c.sign(raw)
	if err != nil {
		c.lim.Log(slog.LevelError, "own table signature", "signing this host's table", "err", err)
		c.resign.Store(true)
		return t.Version, false
	}
	c.local, c.localRaw, c.signed = t, raw, served
	return t.Version, true
}

// Resign publishes this host's table again, signed anew, as a new version:
// the identity it is signed with changed (in swarm mode, a new manager's
// pass), and members that refused or hold the older signature pull it.
func (c *Cluster) Resign() {
	c.resigned.Store(true)
	c.resign.Store(true)
	select {
	case c.resnap <- struct{}{}:
	default:
	}
}

// sign is what pulls of raw get: raw signed by this host's identity, or
// raw itself without one.
func (c *Cluster) sign(raw []byte) ([]byte, error) {
	if c.cfg.Signer == nil {
		return raw, nil
	}
	return c.cfg.Signer.SignTable(raw)
}

// publishSpacing is the least time between two announcements of this
// host's table. Every member installs every version it hears of (from a
// delta, or pulled), so a member's versions cost the cluster members ×
// versions installs: spacing the versions in proportion to the cluster's
// size keeps what each member installs per second flat as the cluster
// grows (a burst of changes, like a host starting many containers,
// becomes a few versions), while a small cluster still hears of a change
// within tens of milliseconds.
func publishSpacing(members int) time.Duration {
	return min(max(time.Duration(members)*20*time.Millisecond, 50*time.Millisecond), time.Second)
}

// tagSpacing is the least time between two changes of the version tag
// that follow deltas (tagLoop): twice publishSpacing, so a burst of
// versions costs half as many membership broadcasts, and a member that
// lost a delta hears of the version at most that much later.
func tagSpacing(members int) time.Duration { return 2 * publishSpacing(members) }
