package gossip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/vxsec/vxsec/announce"
	"github.com/vxsec/vxsec/internal/limit"
)

// maybePull queues a pull when m announces a newer table than installed:
// deltaWait later when its delta may still come, at once otherwise.
func (c *Cluster) maybePull(m serf.Member) { c.pullIfBehind(m, true) }

// queuePull queues a pull when m announces a newer table than installed,
// at once.
func (c *Cluster) queuePull(m serf.Member) { c.pullIfBehind(m, false) }

func (c *Cluster) pullIfBehind(m serf.Member, mayWait bool) {
	v, err := announce.ParseVersion(m.Tags[tagVersion])
	if err != nil {
		c.log.Warn("member announces no valid table version", "member", m.Name, "err", err)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.known[m.Name].Less(v) || c.pulling[m.Name] || c.refusedVersion[m.Name] == v {
		return
	}
	if mayWait && c.deferPull(m.Name, v) {
		return
	}
	select {
	case c.pulls <- m.Name:
		c.pulling[m.Name] = true
	default: // the repair pass will get to it
	}
}

func (c *Cluster) pullLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case name := <-c.pulls:
			ok, retry := c.pullMember(ctx, name)
			c.mu.Lock()
			delete(c.pulling, name)
			c.mu.Unlock()
			if retry {
				c.retryPull(ctx, name)
			}
			// Versions announced while the pull ran. The tags are read
			// after the pull is no longer marked running, so an
			// announcement is either seen here or pulls on its own.
			if m, alive := c.aliveMember(name); ok && alive {
				c.maybePull(m)
			}
		}
	}
}

// retryPull tries a failed pull again a moment later (250 ms to 1 s,
// at random): a member refuses connections while too many wait to
// authenticate (many members pulling one new version at once), and the
// anti-entropy pass would come back only after antiEntropy. One retry
// waits per member; a table the member refused on its merits (stale, its
// identity, over the bounds) is not retried.
func (c *Cluster) retryPull(ctx context.Context, name string) {
	c.mu.Lock()
	if c.retrying[name] {
		c.mu.Unlock()
		return
	}
	c.retrying[name] = true
	c.mu.Unlock()
	wait := pullRetryMin + rand.N(pullRetryMax-pullRetryMin)
	c.spawn(func() {
		defer func() {
			c.mu.Lock()
			delete(c.retrying, name)
			c.mu.Unlock()
		}()
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if m, alive := c.aliveMember(name); alive {
			c.maybePull(m)
		}
	})
}

// The bounds of retryPull's wait.
const (
	pullRetryMin = 250 * time.Millisecond
	pullRetryMax = time.Second
)

// pullMember installs the member's table if it is newer than the one
// installed, and reports whether the pull succeeded, and if not, whether
// it failed on the way (worth trying again soon) rather than on the table.
func (c *Cluster) pullMember(ctx context.Context, name string) (ok, retry bool) {
	member, alive := c.aliveMember(name)
	if !alive {
		return false, false
	}
	addr := net.JoinHostPort(member.Addr.String(), strconv.Itoa(int(member.Port)))
	host, _ := netip.AddrFromSlice(member.Addr)
	// What the member announced: a table older than that is a replay.
	announced, _ := announce.ParseVersion(member.Tags[tagVersion])
	t, h, err := c.pull(ctx, addr, host.Unmap(), announced)
	if errors.Is(err, errStale) {
		c.stats.add("table-stale")
		c.lim.Log(slog.LevelWarn, "table stale", "refusing a member's table older than the version it announced (replayed?)", "member", name, "err", err)
		return false, false
	}
	if errors.Is(err, errIdentity) {
		c.stats.add("table-identity")
		c.lim.Log(slog.LevelError, "table identity", "refusing a member's table: it does not prove its host", "member", name, "err", err)
		c.mu.Lock()
		was := c.untrusted[name]
		c.untrusted[name] = true
		c.mu.Unlock()
		if !was {
			c.updateMembers()
		}
		return false, false
	}
	overLimits := announce.IsLimit(err)
	if err != nil && !overLimits {
		c.log.Warn("pulling member's table", "member", name, "err", err)
		return false, ctx.Err() == nil
	}
	// A table refused for its size was not decoded, and names no host.
	if (err == nil || t.Host.IsValid()) && t.Host.String() != name {
		c.log.Warn("member sent another host's table", "member", name, "host", t.Host)
		return false, false
	}
	if overLimits {
		c.stats.add("table-limits")
		c.lim.Log(slog.LevelError, "table over limits", "refusing a member's table over the bounds", "member", name, "version", t.Version.String(), "err", err)
		c.mu.Lock()
		c.refusedVersion[name] = t.Version
		c.mu.Unlock()
		return false, false
	}
	c.mu.Lock()
	delete(c.refusedVersion, name)
	have := c.known[name]
	newer := have.Less(t.Version)
	if newer {
		c.known[name] = t.Version
		h.table = t
		c.held[name] = h
	}
	c.mu.Unlock()
	if newer {
		c.log.Debug("installing member's table", "member", name, "version", t.Version.String(), "endpoints", len(t.Endpoints))
		c.cfg.Sink.SetRemote(t)
		c.drainDeltas(name)
	}
	return true, false
}

func (c *Cluster) aliveMember(name string) (serf.Member, bool) {
	for _, m := range c.serf.Members() {
		if m.Name == name && m.Status == serf.StatusAlive {
			return m, true
		}
	}
	return serf.Member{}, false
}

// repairLoop is the anti-entropy pass: it pulls from every member whose
// announced version is ahead, and drops members failed past the grace.
func (c *Cluster) repairLoop(ctx context.Context) {
	fast := time.NewTicker(c.cfg.FailGrace / 4)
	slow := time.NewTicker(c.cfg.timing.antiEntropy)
	defer fast.Stop()
	defer slow.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-fast.C:
			var expired []string
			c.mu.Lock()
			for name, until := range c.failed {
				if !time.Now().Before(until) {
					expired = append(expired, name)
				}
			}
			c.mu.Unlock()
			for _, name := range expired {
				c.drop(name)
			}
			if len(expired) > 0 {
				c.updateMembers()
			}
		case <-slow.C:
			for _, m := range c.serf.Members() {
				if m.Name != c.serf.LocalMember().Name && m.Status == serf.StatusAlive {
					c.maybePull(m)
				}
			}
			c.updateMembers()
			c.repairs.Add(1)
		}
	}
}

// errStale marks a table older than the version its host announced: a
// genuine, signed table replayed by someone on the path (to undo a change,
// or bring back an X25519 key the host has retired). The host itself
// always serves its newest table.
var errStale = errors.New("table older than announced")

// pull fetches and decodes a member's table, with version 2 of
// the pull, or version 1 from a member found serving only that. A table
// older than announced is refused (errStale). The heldTable returned says
// what signed the table (its table field is left unset).
func (c *Cluster) pull(ctx context.Context, addr string, host netip.Addr, announced announce.Version) (announce.Table, heldTable, error) {
	if f := c.cfg.timing.failPulls; f != nil && f.Add(-1) >= 0 {
		return announce.Table{}, heldTable{}, errors.New("test: the member refused the connection")
	}
	plain, err := c.pullPlain(ctx, addr, c.servesEphemeral(host))
	if err != nil {
		return announce.Table{}, heldTable{}, err
	}
	raw, signer, err := c.unwrap(host, plain)
	if err != nil {
		return announce.Table{}, heldTable{}, err
	}
	var h heldTable
	if signer != "" {
		// What a delta of this table is checked with.
		if s, err := announce.DecodeSigned(plain); err == nil {
			h = heldTable{signed: true, signer: signer, chain: s.Chain, pass: s.Pass}
		}
	}
	t, err := announce.Decode(raw)
	if err == nil && t.Version.Less(announced) {
		return announce.Table{}, heldTable{}, fmt.Errorf("%w: %s serves version %s, and announced %s", errStale, host, t.Version, announced)
	}
	if err == nil && signer != "" {
		err = c.checkKeyNames(t, signer)
	}
	if err == nil && signer != "" && t.Host == host {
		c.mu.Lock()
		c.signers[host.String()] = signer
		was := c.untrusted[host.String()]
		delete(c.untrusted, host.String())
		c.mu.Unlock()
		if was {
			c.updateMembers()
		}
	}
	return t, h, err
}

// checkKeyNames refuses a table whose IPsec epochs are bound to an
// identity other than the one that signed it: its peers would derive SA
// keys under a name the signer does not hold. An epoch bound to none (a
// release before the binding) is taken; its SAs use the address-bound
// schedule.
func (c *Cluster) checkKeyNames(t announce.Table, signer string) error {
	name := c.cfg.Verifier.KeyName(signer)
	for _, k := range t.Keys {
		if k.ID != "" && k.ID != name {
			return fmt.Errorf("%w: the table of %s binds its IPsec epoch %d to identity %q, and was signed by %q", errIdentity, t.Host, k.Epoch, k.ID, name)
		}
	}
	return nil
}

// errIdentity marks a table refused for its signature or its absence.
var errIdentity = errors.New("table identity")

// unwrap returns the encoding of a pulled table: a signed table is checked
// by the Verifier (or only unwrapped in a secret-only cluster); an unsigned
// one is refused when signatures are required.
func (c *Cluster) unwrap(host netip.Addr, plain []byte) ([]byte, string, error) {
	if !announce.IsSigned(plain) {
		if c.cfg.Verifier != nil && c.cfg.RequireSigned {
			return nil, "", fmt.Errorf("%w: the table is not signed, and this cluster requires host identities", errIdentity)
		}
		return plain, "", nil
	}
	if c.cfg.Verifier == nil {
		s, err := announce.DecodeSigned(plain)
		return s.Table, "", err
	}
	raw, signer, newCRL, err := c.cfg.Verifier.OpenTable(host, plain)
	if newCRL {
		c.RevocationChanged()
	}
	if err != nil && !announce.IsLimit(err) {
		return nil, "", fmt.Errorf("%w: %w", errIdentity, err)
	}
	return raw, signer, err
}

// RevocationChanged acts on a newer revocation list the Verifier adopted
// (from a peer's table, or given to the daemon): the tables of hosts whose
// identity it revokes are dropped at once, with their endpoints and keys,
// and this host publishes a new table, so that every peer pulls the list.
func (c *Cluster) RevocationChanged() {
	if c.cfg.Verifier == nil {
		return
	}
	var revoked []string
	c.mu.Lock()
	for name, signer := range c.signers {
		if c.cfg.Verifier.Revoked(signer) {
			revoked = append(revoked, name)
			delete(c.signers, name)
			c.untrusted[name] = true
		}
	}
	c.mu.Unlock()
	for _, name := range revoked {
		c.lim.Log(slog.LevelWarn, "revoked", "dropping a revoked host's table", "member", name, "crl", c.cfg.Verifier.CRLNumber())
		c.drop(name)
	}
	if len(revoked) > 0 {
		c.updateMembers()
	}
	select {
	case c.resnap <- struct{}{}:
	default:
	}
}

// pullPlain runs a pull and returns what the secret opened.
func (c *Cluster) pullPlain(ctx context.Context, addr string, ephemeral bool) ([]byte, error) {
	c.mu.Lock()
	legacy := time.Now().Before(c.legacyUntil[addr])
	c.mu.Unlock()
	if !legacy {
		plain, err := c.pullOnce(ctx, addr, func(rw io.ReadWriter, secrets [][]byte, nonce []byte) ([]byte, error) {
			return clientPull(rw, secrets, nonce, c.prove(), ephemeral)
		})
		switch {
		case errors.Is(err, errOldServer):
			c.log.Info("member serves only version 1 table pulls; pulling it so for a while", "addr", addr, "for", legacyPullFor)
			c.mu.Lock()
			c.legacyUntil[addr] = time.Now().Add(legacyPullFor)
			c.mu.Unlock()
		case errors.Is(err, errNoHello):
			// An old member of an open cluster, or a new one that
			// refused this connection: try once, remember nothing.
		default:
			return plain, err
		}
	}
	return c.pullOnce(ctx, addr, clientPullV1)
}

// servesEphemeral tells whether the member at host announces pulls with
// ephemeral keys (tagPull). The tag travels in gossip, sealed with the
// cluster's key: someone on the path cannot strip it to force a pull
// without them.
func (c *Cluster) servesEphemeral(host netip.Addr) bool {
	m, ok := c.aliveMember(host.String())
	return ok && m.Tags[tagPull] == pullEphemeral
}

// prove is how this host proves its identity when it pulls: in a cluster
// that requires identities, its signature; else nothing.
func (c *Cluster) prove() func(msg []byte) ([]byte, error) {
	if c.cfg.Signer == nil || !c.cfg.RequireSigned {
		return nil
	}
	return c.cfg.Signer.SignPeer
}

// pullOnce runs one pull of a version's client on a fresh connection.
func (c *Cluster) pullOnce(ctx context.Context, addr string, client func(io.ReadWriter, [][]byte, []byte) ([]byte, error)) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, pullTimeout)
	defer cancel()
	conn, err := c.tr.dialer().DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	return client(conn, c.secrets(), newNonce())
}

// serveTable answers a version 2 pull, its magic byte read. Until the
// client proves it holds the secret it is sent only the server's nonce,
// and the ticket holds its place among the connections waiting to
// authenticate.
func (c *Cluster) serveTable(conn net.Conn, ticket *limit.Ticket) {
	defer conn.Close()
	from := conn.RemoteAddr().(*net.TCPAddr).AddrPort()
	authenticated := func() {
		ticket.Release()
		conn.SetDeadline(time.Now().Add(pullTimeout))
	}
	table := func() []byte {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.served
	}
	var checkPeer func(block, msg []byte) error
	if c.cfg.Verifier != nil && c.cfg.RequireSigned {
		checkPeer = func(block, msg []byte) error { return c.cfg.Verifier.CheckPeer(from.Addr().Unmap(), block, msg) }
	}
	if err := servePull(conn, c.secrets(), newNonce(), table, authenticated, checkPeer); err != nil {
		reason := "pull-proof"
		switch {
		case errors.Is(err, errNoIdentity):
			reason = "pull-identity"
		case !errors.Is(err, errBadProof):
			reason = readReason(err)
		}
		c.tr.refuse(reason, from, err)
		return
	}
	c.stats.accept("pull")
}

// serveTableV1 answers a version 1 pull from a member's address (a host of
// the previous release, during a rolling upgrade).
func (c *Cluster) serveTableV1(conn net.Conn, ticket *limit.Ticket) {
	defer conn.Close()
	ticket.Release()
	conn.SetDeadline(time.Now().Add(pullTimeout))
	from := conn.RemoteAddr().(*net.TCPAddr).AddrPort()
	table := func() []byte {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.served
	}
	if err := servePullV1(conn, c.secrets()[0], newNonce(), table); err != nil {
		c.tr.refuse(readReason(err), from, err)
		return
	}
	c.stats.accept("pull-v1")
}
