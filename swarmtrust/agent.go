package swarmtrust

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/vxsec/vxsec/atomicfile"
	"github.com/vxsec/vxsec/config"
	"github.com/vxsec/vxsec/internal/limit"
)

// SecretBytes is the length of the cluster secret, the same as
// VXSEC_SECRET's.
const SecretBytes = config.SecretBytes

// Defaults of Config.
const (
	DefaultInterval      = 30 * time.Second
	DefaultGenerateAfter = 20 * time.Second
	DefaultRotateEvery   = 12 * time.Hour
	DefaultRotateStagger = 5 * time.Minute
	dialTimeout          = 5 * time.Second
	exchangeTimeout      = 10 * time.Second
	// maxMessage bounds a peer's message: a record with a chain of two
	// certificates is about 2.5 KiB, a pass as much, and an eviction list
	// of maxEvicted nodes about 16 KiB.
	maxMessage = 32 << 10
	// protocolVersion 2 carries signed records; a node of protocol 1
	// (unsigned records, the oldest wins) and one of 2 do not exchange.
	protocolVersion = 2
)

// portLimits bound what a stranger costs on the trust port, where nothing
// is known of a peer until its certificate has been verified.
type portLimits struct {
	// conns bounds the connections open at once (in total, per source)
	// and how fast new ones come.
	conns limit.GateLimits
	// handshakes bounds the TLS handshakes under way at once; beyond it
	// a connection is refused rather than queued.
	handshakes int
	// handshakeTimeout bounds the handshake, which ends with the client's
	// certificate verified.
	handshakeTimeout time.Duration
	// handshakeBytes bounds what a peer may send before its certificate
	// is verified.
	handshakeBytes int64
}

// defaultPortLimits: exchanges are few. Each node exchanges with each
// manager every Interval (every second while it has no secret), so a
// manager of a 500-node swarm serves about 17 a second, each over within
// milliseconds. A client's whole handshake with the longest chain swarm
// presents (a node certificate and the cross-signed root during a CA
// rotation) measures 2.4 KiB; 32 KiB is thirteen times that.
var defaultPortLimits = portLimits{
	conns: limit.GateLimits{
		Pending: 64, PendingPerSource: 4,
		Rate: 50, Burst: 100,
		SourceRate: 5, SourceBurst: 10,
		Sources: 1024,
	},
	handshakes:       16,
	handshakeTimeout: 5 * time.Second,
	handshakeBytes:   32 << 10,
}

var (
	errHandshakes    = errors.New("too many TLS handshakes under way")
	errHandshakeSize = errors.New("the peer sent more than a handshake needs before its certificate was verified")
)

// Config is what an Agent is built from.
type Config struct {
	// Dir is the engine's swarm directory.
	Dir string
	// Addr and Port are where the agent listens (the underlay address and
	// the trust port); peers are reached on the same port.
	Addr netip.Addr
	Port int
	// Bind, if valid, is where the agent listens instead of Addr: the
	// host's own address when Addr is a NAT's that forwards to it.
	Bind netip.Addr
	// SecretFile keeps the agreed secret across restarts; empty keeps none.
	SecretFile string
	// Interval is how often the secret is compared with the managers'.
	Interval time.Duration
	// GenerateAfter is how long a manager that is not the first by node ID
	// looks for an existing secret before it makes one.
	GenerateAfter time.Duration
	// RotateEvery is how long a secret lives: the first manager by node
	// ID issues a new one when the record is older (the others, in their
	// order, a RotateStagger later each, should it be down). Zero never
	// rotates by itself.
	RotateEvery time.Duration
	// RotateStagger separates the managers' turns; zero means
	// DefaultRotateStagger.
	RotateStagger time.Duration
	// Peers lists the vxsec cluster's members: a node that adopts another
	// secret tells them at once, so the cluster does not stay split for a
	// whole Interval. May be nil.
	Peers func() []netip.Addr
	Log   *slog.Logger

	// limits replaces defaultPortLimits (tests).
	limits *portLimits
}

// message is the one line each side sends.
type message struct {
	Version int     `json:"v"`
	Cluster string  `json:"cluster"`
	Record  *record `json:"record"`
	// Addr is the client's address, sent when it wants a pass for it;
	// a manager answers with Pass if the connection comes from Addr.
	Addr string `json:"addr,omitempty"`
	Pass *pass  `json:"pass,omitempty"`
	// Evictions is the sender's eviction list, if any.
	Evictions *evictions `json:"evictions,omitempty"`
}

// savedFile is SecretFile's content: the secret belongs to one swarm.
type savedFile struct {
	Cluster   string     `json:"cluster"`
	Record    *record    `json:"record"`
	Evictions *evictions `json:"evictions,omitempty"`
	// Pass is this node's pass, checked again at start.
	Pass *pass `json:"pass,omitempty"`
}

// Agent agrees the cluster secret with the swarm's other nodes.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	start time.Time
	// lim carries the lines strangers cause (refusals), within a budget.
	lim    *limit.Logger
	limits portLimits

	// mu guards the state in memory below. Nothing that waits on the
	// outside happens under it: no file is written, no channel sent on
	// (publish does that after mu is released).
	mu  sync.Mutex
	rec *record
	// ver counts the records rec has held; publish compares it with
	// published to tell whether there is anything new to publish.
	ver     uint64
	cluster string
	status  Status
	// pushing is set while a push round runs (one at a time).
	pushing bool
	// runCtx is Run's context, which push rounds run under.
	runCtx context.Context
	// creds are the credentials the last round read (nil before it):
	// what tables are signed and checked with.
	creds *credentials
	// pass is this node's manager's pass for its address (nil: none
	// yet); passChanged is signalled when it is replaced.
	pass        *pass
	passChanged chan struct{}
	// evict is the newest eviction list held; evictChanged is signalled
	// when it is replaced. evictWant are the nodes this manager evicted,
	// issued again should a concurrent list without them win.
	evict        *evictions
	evictChanged chan struct{}
	evictWant    []string

	// pubMu serialises publish, and guards what only publish touches
	// after New: published, SecretFile, closing ready and sending on
	// changed. It is taken before mu, never while mu is held.
	pubMu sync.Mutex
	// published is the ver of the record last published.
	published uint64
	// delivered is the secret last made known (ready or changed): a
	// record re-issued with the same secret changes nothing to deliver.
	delivered []byte
	// ready is closed once the first secret is known (kept or
	// published).
	ready   chan struct{}
	changed chan []byte

	wg sync.WaitGroup
}

// Status is the agent's state, for `vxsec status`.
type Status struct {
	NodeID        string    `json:"node_id,omitempty"`
	Role          string    `json:"role,omitempty"`
	ClusterID     string    `json:"cluster_id,omitempty"`
	CertNotAfter  time.Time `json:"cert_not_after,omitempty"`
	SecretID      string    `json:"secret_id,omitempty"`
	SecretCreated time.Time `json:"secret_created,omitempty"`
	SecretBy      string    `json:"secret_by,omitempty"`
	// SecretGeneration is the record's generation: it rises each time a
	// manager issues the secret (a new one, or the same one re-issued).
	SecretGeneration uint64     `json:"secret_generation,omitempty"`
	LastRound        time.Time  `json:"last_round,omitempty"`
	Exchanges        []Exchange `json:"exchanges,omitempty"`
	Served           int        `json:"served"`
	Refused          int        `json:"refused"`
	LastRefusal      string     `json:"last_refusal,omitempty"`
	// RecordsRefused counts secret records of peers that failed
	// verification (not a manager's, forged, of a node no longer a
	// manager).
	RecordsRefused    int    `json:"records_refused"`
	LastRecordRefusal string `json:"last_record_refusal,omitempty"`
	// PassBy and PassNotAfter describe the manager's pass for this
	// node's address that its tables are signed with.
	PassBy       string    `json:"pass_by,omitempty"`
	PassNotAfter time.Time `json:"pass_not_after,omitempty"`
	// PassesIssued counts the passes this node (a manager) issued;
	// PassesRefused those it would not (the client was not at the
	// address it asked for).
	PassesIssued    int    `json:"passes_issued,omitempty"`
	PassesRefused   int    `json:"passes_refused,omitempty"`
	LastPassRefusal string `json:"last_pass_refusal,omitempty"`
	// EvictionSeq and Evicted are the eviction list held; EvictionsRefused
	// counts lists of peers that failed verification.
	EvictionSeq         uint64   `json:"eviction_seq,omitempty"`
	Evicted             []string `json:"evicted,omitempty"`
	EvictionsRefused    int      `json:"evictions_refused,omitempty"`
	LastEvictionRefusal string   `json:"last_eviction_refusal,omitempty"`
	Err                 string   `json:"error,omitempty"`
}

// Exchange is the last exchange with one peer.
type Exchange struct {
	Addr   string    `json:"addr"`
	NodeID string    `json:"node_id,omitempty"`
	At     time.Time `json:"at"`
	Err    string    `json:"error,omitempty"`
}

// New makes an agent, with the secret SecretFile kept if it belongs to the
// swarm the engine is in now.
func New(cfg Config) (*Agent, error) {
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.GenerateAfter == 0 {
		cfg.GenerateAfter = DefaultGenerateAfter
	}
	if cfg.RotateStagger == 0 {
		cfg.RotateStagger = DefaultRotateStagger
	}
	a := &Agent{
		cfg: cfg, log: cfg.Log.With("component", "swarmtrust"), start: time.Now(),
		ready: make(chan struct{}), changed: make(chan []byte, 1), passChanged: make(chan struct{}, 1), evictChanged: make(chan struct{}, 1),
		limits: defaultPortLimits,
	}
	if cfg.limits != nil {
		a.limits = *cfg.limits
	}
	a.lim = limit.NewLogger(a.log, limit.DefaultLogBurst, limit.DefaultLogWindow)
	node, err := ReadNode(cfg.Dir)
	if err != nil {
		return nil, err
	}
	a.cluster = node.ClusterID
	if cfg.SecretFile != "" {
		raw, err := os.ReadFile(cfg.SecretFile)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("reading the kept swarm secret: %w", err)
		default:
			var f savedFile
			if err := json.Unmarshal(raw, &f); err != nil || f.Record == nil || len(f.Record.Secret) != SecretBytes {
				a.log.Warn("ignoring a damaged kept swarm secret", "file", cfg.SecretFile)
			} else if f.Cluster != node.ClusterID {
				a.log.Info("the kept secret is of another swarm; looking for this one's", "kept", f.Cluster, "swarm", node.ClusterID)
			} else {
				a.rec, a.delivered = f.Record, f.Record.Secret
				a.evict = f.Evictions
				if creds, err := loadCredentials(cfg.Dir); err == nil && f.Pass != nil && creds.verifyPass(f.Pass, node.ID, cfg.Addr, time.Now()) == nil {
					a.pass, a.creds = f.Pass, &creds
					a.status.PassBy, a.status.PassNotAfter = f.Pass.By, time.Unix(f.Pass.NotAfter, 0)
				}
				close(a.ready)
			}
		}
	}
	a.noteNodeLocked(node)
	a.noteSecretLocked()
	return a, nil
}

// Secret waits for the first secret (kept, received or made).
func (a *Agent) Secret(ctx context.Context) ([]byte, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-a.ready:
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.rec.Secret), nil
}

// Changed delivers the secret each time the node adopts another one after
// the first (the latest only, if several come quickly).
func (a *Agent) Changed() <-chan []byte { return a.changed }

// Status reports the agent's state.
func (a *Agent) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.status
	st.Exchanges = slices.Clone(st.Exchanges)
	return st
}

// Run serves the trust port and compares secrets with the managers every
// Interval, until ctx ends. It fails only if the port cannot be bound.
func (a *Agent) Run(ctx context.Context) error {
	var lc net.ListenConfig
	bind := a.cfg.Addr
	if a.cfg.Bind.IsValid() {
		bind = a.cfg.Bind
	}
	addr := net.JoinHostPort(bind.String(), strconv.Itoa(a.cfg.Port))
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("binding the trust port %s: %w", addr, err)
	}
	a.mu.Lock()
	a.runCtx = ctx
	node, role := a.status.NodeID, a.status.Role
	a.mu.Unlock()
	a.log.Info("swarm trust serving", "addr", addr, "node", node, "role", role)
	a.wg.Add(2)
	go func() {
		defer a.wg.Done()
		<-ctx.Done()
		l.Close()
	}()
	go func() {
		defer a.wg.Done()
		a.lim.Run(ctx)
	}()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.serve(ctx, l)
	}()
	for {
		a.round(ctx, nil)
		wait := a.cfg.Interval
		if !a.hasSecret() {
			wait = min(wait, time.Second)
		}
		select {
		case <-ctx.Done():
			a.wg.Wait()
			return nil
		case <-time.After(wait):
		}
	}
}

func (a *Agent) hasSecret() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.rec != nil
}

// round exchanges with every manager, or with extra only when extra is
// set (a push), then makes a secret if this node is the one to.
func (a *Agent) round(ctx context.Context, extra []netip.Addr) {
	creds, err := loadCredentials(a.cfg.Dir)
	if err != nil {
		a.setErr(err)
		a.log.Warn("swarm trust: no usable node identity", "err", err)
		return
	}
	if creds.node.ClusterID != a.clusterID() {
		// The engine left this swarm and joined another: its secret is
		// not this one's.
		a.resetCluster(creds.node)
	}
	a.mu.Lock()
	a.creds = &creds
	a.mu.Unlock()
	type target struct{ addr, node string }
	var targets []target
	if extra == nil {
		for _, m := range creds.node.Managers {
			if m.NodeID == creds.node.ID {
				continue
			}
			targets = append(targets, target{net.JoinHostPort(m.Host(), strconv.Itoa(a.cfg.Port)), m.NodeID})
		}
	} else {
		for _, p := range extra {
			if p == a.cfg.Addr {
				continue
			}
			targets = append(targets, target{net.JoinHostPort(p.String(), strconv.Itoa(a.cfg.Port)), ""})
		}
	}
	results := make([]Exchange, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := a.exchange(ctx, creds, t.addr, t.node)
			results[i] = Exchange{Addr: t.addr, NodeID: t.node, At: time.Now()}
			if err != nil {
				results[i].Err = err.Error()
				a.log.Debug("swarm trust exchange failed", "peer", t.addr, "node", t.node, "err", err)
			}
		}()
	}
	wg.Wait()

	if creds.node.Role == RoleManager && a.wantsPass(creds, time.Now()) {
		// A manager vouches for its own address.
		if p, err := issuePass(creds, creds.node.ID, a.cfg.Addr, time.Now()); err == nil {
			a.considerPass(creds, p, "self")
		} else {
			a.log.Error("issuing this manager's own pass", "err", err)
		}
	}
	a.mu.Lock()
	if extra == nil {
		a.status.Exchanges = results
		a.status.LastRound = time.Now()
	}
	a.status.Err = ""
	a.noteNodeLocked(creds.node)
	cur := a.rec
	fresh := (cur == nil || cur.placeholder()) &&
		(lowestManager(creds.node.ID, creds.node.Managers) || time.Since(a.start) > a.cfg.GenerateAfter)
	a.mu.Unlock()
	if creds.node.Role == RoleManager {
		a.reissueEvictions(creds)
		a.manage(creds, cur, fresh)
	}
}

// manage is a manager's part of a round: it issues a secret when nobody
// has one (fresh), or re-issues the one it holds when that is due
// (reissueDue).
func (a *Agent) manage(creds credentials, cur *record, fresh bool) {
	var (
		secret []byte
		gen    uint64 = 1
		why    string
	)
	switch {
	case fresh:
		secret, why = newSecret(), "no swarm node has a vxsec secret"
	case cur != nil && !cur.placeholder() && a.rotationDue(creds, cur, time.Now()):
		secret, gen, why = newSecret(), cur.Generation+1, fmt.Sprintf("scheduled rotation: the secret is older than %s", a.cfg.RotateEvery)
	case cur != nil && !cur.placeholder():
		due, reason := creds.reissueDue(cur, time.Now())
		if !due {
			return
		}
		secret, gen, why = cur.Secret, cur.Generation+1, reason
	default:
		return
	}
	r, err := issue(creds, secret, gen)
	if err == nil {
		// A record this node would refuse would be re-issued every
		// round: say why instead.
		_, err = creds.verifyRecord(r)
	}
	if err != nil {
		a.setErr(fmt.Errorf("issuing the cluster secret: %w", err))
		a.log.Error("issuing the cluster secret", "err", err)
		return
	}
	if !a.adoptIfNewer(r) {
		return
	}
	a.log.Info("issued the cluster secret", "secret", r.id(), "generation", r.Generation, "why", why)
	a.publish()
	if cur != nil && !bytes.Equal(cur.Secret, r.Secret) {
		a.push()
	}
}

// exchange: both sides send their record, both keep the newer.
func (a *Agent) exchange(ctx context.Context, creds credentials, addr, node string) error {
	ctx, cancel := context.WithTimeout(ctx, exchangeTimeout)
	defer cancel()
	// From the advertised address: a manager issues a pass for the
	// address an exchange comes from.
	local := &net.TCPAddr{IP: a.cfg.Addr.AsSlice()}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: dialTimeout, LocalAddr: local}, Config: creds.clientConfig(node)}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if peer, ok := peerNode(conn.(*tls.Conn)); ok && a.isEvicted(peer.ID) {
		// Nothing for an evicted node, not even the eviction list.
		return fmt.Errorf("%w: node %s", ErrEvicted, peer.ID)
	}
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	m := a.message()
	if a.wantsPass(creds, time.Now()) {
		m.Addr = a.cfg.Addr.Unmap().String()
	}
	if err := writeMessage(conn, m); err != nil {
		return err
	}
	peer, err := receive(conn)
	if errors.Is(err, io.EOF) && node != "" && a.wantsLegacy() {
		// A manager of the previous release closes on a version it does
		// not know; ask it in its own.
		return a.exchangeLegacy(ctx, creds, addr, node)
	}
	if err != nil {
		return err
	}
	// The eviction list and the pass first: once the record is adopted
	// the cluster starts, and its first table is signed with the pass.
	if peer.Evictions != nil {
		a.considerEvictions(creds, peer.Evictions, addr)
	}
	if peer.Pass != nil {
		a.considerPass(creds, peer.Pass, addr)
	}
	a.consider(peer, addr, creds)
	return nil
}

func (a *Agent) serve(ctx context.Context, l net.Listener) {
	conns := limit.NewGate(a.limits.conns)
	handshakes := make(chan struct{}, a.limits.handshakes)
	for {
		conn, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			a.lim.Log(slog.LevelWarn, "accept", "swarm trust accept", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		ticket, err := conns.Admit(remoteAddr(conn))
		if err != nil {
			conn.Close()
			a.refused(conn.RemoteAddr(), limit.Reason(err), err)
			continue
		}
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			defer ticket.Release()
			a.serveConn(ctx, conn, handshakes)
		}()
	}
}

func remoteAddr(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr()
	}
	return netip.Addr{}
}

// serveConn answers one exchange. Credentials are read per connection,
// so a renewed certificate or a rotated root CA takes effect at once.
// Until the client's certificate is verified the connection holds a place
// among the handshakes (handshakes, a semaphore), has a deadline of its
// own and may make us read only a handshake's worth of bytes.
func (a *Agent) serveConn(ctx context.Context, raw net.Conn, handshakes chan struct{}) {
	defer raw.Close()
	select {
	case handshakes <- struct{}{}:
	default:
		a.refused(raw.RemoteAddr(), "handshakes", errHandshakes)
		return
	}
	inHandshake := true
	done := func() {
		if inHandshake {
			inHandshake = false
			<-handshakes
		}
	}
	defer done()
	raw.SetDeadline(time.Now().Add(a.limits.handshakeTimeout))
	creds, err := loadCredentials(a.cfg.Dir)
	if err != nil {
		a.refused(raw.RemoteAddr(), "credentials", err)
		return
	}
	capped := &cappedConn{Conn: raw, left: a.limits.handshakeBytes}
	conn := tls.Server(capped, creds.serverConfig())
	if err := conn.HandshakeContext(ctx); err != nil {
		a.refused(raw.RemoteAddr(), "handshake", err)
		return
	}
	// The client is a node of this swarm: the exchange's own bounds hold
	// from here (receive reads one line of at most maxMessage).
	done()
	if peer, ok := peerNode(conn); ok && a.isEvicted(peer.ID) {
		a.refused(raw.RemoteAddr(), "evicted", fmt.Errorf("%w: node %s", ErrEvicted, peer.ID))
		return
	}
	capped.left = -1
	raw.SetDeadline(time.Now().Add(exchangeTimeout))
	peer, err := receive(conn)
	if errors.Is(err, errLegacyPeer) {
		if a.answerLegacy(conn) == nil {
			a.mu.Lock()
			a.status.Served++
			a.mu.Unlock()
		}
		return
	}
	if err != nil {
		a.refused(raw.RemoteAddr(), "message", err)
		return
	}
	if peer.Evictions != nil {
		a.considerEvictions(creds, peer.Evictions, raw.RemoteAddr().String())
	}
	a.consider(peer, raw.RemoteAddr().String(), creds)
	reply := a.message()
	if peer.Addr != "" && creds.node.Role == RoleManager {
		reply.Pass = a.answerPass(creds, conn, peer.Addr, remoteAddr(raw))
	}
	if err := writeMessage(conn, reply); err != nil {
		return
	}
	a.mu.Lock()
	a.status.Served++
	a.mu.Unlock()
}

// refused counts a refusal and logs it within the log budget of its
// stage: strangers choose how many there are.
func (a *Agent) refused(from net.Addr, stage string, err error) {
	a.lim.Log(slog.LevelWarn, "refused: "+stage, "swarm trust: refused a peer", "peer", from, "stage", stage, "err", err)
	a.mu.Lock()
	a.status.Refused++
	a.status.LastRefusal = fmt.Sprintf("%s: %v", from, err)
	a.mu.Unlock()
}

// cappedConn fails reads past left bytes; -1 is no bound.
type cappedConn struct {
	net.Conn
	left int64
}

func (c *cappedConn) Read(p []byte) (int, error) {
	if c.left < 0 {
		return c.Conn.Read(p)
	}
	if c.left == 0 {
		return 0, errHandshakeSize
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.Conn.Read(p)
	c.left -= int64(n)
	return n, err
}

// message is what this node sends: its record.
func (a *Agent) message() message {
	a.mu.Lock()
	m := message{Version: protocolVersion, Cluster: a.cluster, Record: a.rec, Evictions: a.evict}
	a.mu.Unlock()
	if m.Record != nil && m.Record.Generation == 0 {
		// Unsigned: peers would refuse it; a manager re-issues it.
		m.Record = nil
	}
	return m
}

func writeMessage(conn net.Conn, m message) error {
	b, _ := json.Marshal(m)
	_, err := conn.Write(append(b, '\n'))
	return err
}

func receive(conn net.Conn) (message, error) {
	// At most maxMessage bytes: a peer cannot make us buffer more.
	line, err := bufio.NewReader(io.LimitReader(conn, maxMessage)).ReadBytes('\n')
	if err != nil {
		return message{}, fmt.Errorf("reading the peer's message: %w", err)
	}
	var m message
	if err := json.Unmarshal(line, &m); err != nil {
		return message{}, fmt.Errorf("decoding the peer's message: %w", err)
	}
	if m.Version == legacyVersion {
		return message{}, errLegacyPeer
	}
	if m.Version != protocolVersion {
		return message{}, fmt.Errorf("peer speaks version %d, want %d", m.Version, protocolVersion)
	}
	if m.Record != nil && len(m.Record.Secret) != SecretBytes {
		return message{}, fmt.Errorf("peer's secret has %d bytes, want %d", len(m.Record.Secret), SecretBytes)
	}
	if m.Record != nil && (len(m.Record.Chain) > maxChain || len(m.Record.Sig) > maxSig) {
		return message{}, fmt.Errorf("peer's record has %d certificates and a %d-byte signature, bounds %d and %d", len(m.Record.Chain), len(m.Record.Sig), maxChain, maxSig)
	}
	if m.Pass != nil && (len(m.Pass.Chain) > maxChain || len(m.Pass.Sig) > maxSig) {
		return message{}, fmt.Errorf("peer's pass has %d certificates and a %d-byte signature, bounds %d and %d", len(m.Pass.Chain), len(m.Pass.Sig), maxChain, maxSig)
	}
	if m.Record != nil {
		// One form for "none": an empty signature or chain is absent,
		// as the record encodes it.
		if len(m.Record.Sig) == 0 {
			m.Record.Sig = nil
		}
		if len(m.Record.Chain) == 0 {
			m.Record.Chain = nil
		}
	}
	return m, nil
}

// consider adopts the peer's record if it is a manager's (verifyRecord) and
// newer than this node's; when that changes the secret in use, the
// cluster's members are told at once.
func (a *Agent) consider(m message, from string, creds credentials) {
	if m.Record == nil {
		return
	}
	if _, err := creds.verifyRecord(m.Record); err != nil {
		a.refusedRecord(from, m.Record, err)
		return
	}
	a.mu.Lock()
	if m.Cluster != a.cluster || !m.Record.newer(a.rec) {
		a.mu.Unlock()
		return
	}
	replaced := a.rec
	a.adoptLocked(m.Record)
	a.mu.Unlock()
	r := m.Record
	switch {
	case replaced == nil:
		a.log.Info("adopting the swarm's vxsec secret", "from", from, "secret", r.id(), "generation", r.Generation, "issued_by", r.By)
		a.publish()
	case bytes.Equal(replaced.Secret, r.Secret):
		a.log.Info("adopting the secret re-issued", "from", from, "secret", r.id(), "generation", r.Generation, "issued_by", r.By)
		a.publish()
	default:
		a.log.Info("adopting the swarm's newer vxsec secret", "from", from, "secret", r.id(), "generation", r.Generation, "issued_by", r.By, "replaces", replaced.id())
		a.publish()
		a.push()
	}
}

// refusedRecord counts a record that failed verification: a member that
// is no manager trying to hand out a secret, or a node whose list of
// managers lags (state.json), which the next round corrects.
func (a *Agent) refusedRecord(from string, r *record, err error) {
	a.lim.Log(slog.LevelWarn, "refused: record", "swarm trust: refused a secret record", "peer", from, "issued_by", r.By, "generation", r.Generation, "err", err)
	a.mu.Lock()
	a.status.RecordsRefused++
	a.status.LastRecordRefusal = fmt.Sprintf("%s: %v", from, err)
	a.mu.Unlock()
}

// rotationDue: the record is older than RotateEvery plus this manager's
// turn (its rank among the managers by node ID, times RotateStagger), by
// its issuer's clock and this node's. A clock ahead or behind moves when
// the rotation comes, never whether: a newer generation from any manager
// restarts the count everywhere.
func (a *Agent) rotationDue(creds credentials, r *record, now time.Time) bool {
	if a.cfg.RotateEvery <= 0 || r.Generation == 0 {
		return false
	}
	rank := 0
	for _, m := range creds.node.Managers {
		if m.NodeID < creds.node.ID {
			rank++
		}
	}
	return now.Sub(time.Unix(0, r.Created)) > a.cfg.RotateEvery+time.Duration(rank)*a.cfg.RotateStagger
}

// Rotate issues a new cluster secret, as the next generation, and tells
// the cluster's members at once; they move to it as they would to any
// newer record (gossip keeps the old secret's keys for a grace period).
// Only a manager can: records of anyone else are refused by every node.
func (a *Agent) Rotate() (id string, gen uint64, err error) {
	creds, err := loadCredentials(a.cfg.Dir)
	if err != nil {
		return "", 0, err
	}
	if creds.node.Role != RoleManager {
		return "", 0, fmt.Errorf("only a swarm manager can rotate the cluster secret: this node (%s) is a %s; run it on a manager", creds.node.ID, creds.node.Role)
	}
	a.mu.Lock()
	cur := a.rec
	a.mu.Unlock()
	gen = 1
	if cur != nil {
		gen = cur.Generation + 1
	}
	r, err := issue(creds, newSecret(), gen)
	if err != nil {
		return "", 0, err
	}
	if !a.adoptIfNewer(r) {
		return "", 0, errors.New("a newer secret arrived meanwhile; try again")
	}
	a.log.Info("rotated the cluster secret on request", "secret", r.id(), "generation", r.Generation)
	a.publish()
	a.push()
	return r.id(), r.Generation, nil
}

// push starts a push round to the cluster's members, unless one is under
// way.
func (a *Agent) push() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cfg.Peers != nil && !a.pushing && a.runCtx != nil {
		a.pushing = true
		ctx := a.runCtx
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.round(ctx, a.cfg.Peers())
			a.mu.Lock()
			a.pushing = false
			a.mu.Unlock()
		}()
	}
}

// adoptIfNewer adopts r, a record this node issued, unless a newer one
// arrived since it read the one it held; the caller publishes.
func (a *Agent) adoptIfNewer(r *record) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !r.newer(a.rec) {
		return false
	}
	a.adoptLocked(r)
	return true
}

// adoptLocked makes r the node's record, in memory only: the caller calls
// publish once it has released mu.
func (a *Agent) adoptLocked(r *record) {
	a.rec = r
	a.ver++
	a.noteSecretLocked()
}

// publish makes the record in memory kept and known: it writes SecretFile,
// then closes ready (the first secret) or delivers the secret on changed
// (any later one). Every adoption is followed by a publish, called after
// mu is released.
//
// Why the file never ends up with an older secret although adoptions and
// publishes interleave: publishes run one at a time (pubMu), and each reads
// the record to publish (rec, ver, cluster) under mu only once it holds
// pubMu. So the records publishes read never go backwards, the file is
// only overwritten with a record at least as new as the one it holds, and
// a publish that finds the record it would publish already published does
// nothing. An adoption's own publish starts after the adoption, so it reads
// that record or a newer one: once the publishes are done, the file holds
// the latest record, and changed was last sent it (unless it was the
// first, which closed ready instead). A publish may thus write a record
// adopted after it was called, whose own publish then has nothing to do.
// changed is sent on only here, under pubMu: the drain-then-send never
// blocks, and the value left in it is the latest.
func (a *Agent) publish() {
	a.pubMu.Lock()
	defer a.pubMu.Unlock()
	a.mu.Lock()
	r, ver, cluster, ev, ps := a.rec, a.ver, a.cluster, a.evict, a.pass
	a.mu.Unlock()
	if r == nil || ver == a.published {
		return
	}
	a.published = ver
	if a.cfg.SecretFile != "" {
		b, _ := json.Marshal(savedFile{Cluster: cluster, Record: r, Evictions: ev, Pass: ps})
		if err := os.MkdirAll(filepath.Dir(a.cfg.SecretFile), 0o700); err == nil {
			err = atomicfile.Write(filepath.Dir(a.cfg.SecretFile), filepath.Base(a.cfg.SecretFile), b)
			if err != nil {
				a.log.Error("keeping the swarm secret", "err", err)
			}
		}
	}
	select {
	case <-a.ready:
	default:
		a.delivered = r.Secret
		close(a.ready) // only here (or in New): no other can close it
		return
	}
	if bytes.Equal(a.delivered, r.Secret) {
		return
	}
	a.delivered = r.Secret
	select {
	case <-a.changed:
	default:
	}
	a.changed <- slices.Clone(r.Secret)
}

func (a *Agent) clusterID() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cluster
}

// resetCluster replaces the secret of a swarm the engine left with a
// placeholder: the old swarm's secret must not open the new swarm's
// cluster. The new swarm's record replaces it as soon as it arrives.
func (a *Agent) resetCluster(n Node) {
	a.mu.Lock()
	was := a.cluster
	a.cluster = n.ClusterID
	a.start = time.Now()
	a.pass = nil
	replace := a.rec != nil
	if replace {
		// A placeholder nobody else holds until this swarm's record
		// arrives (or this node, a manager, issues one).
		a.adoptLocked(&record{Secret: newSecret(), Created: time.Now().UnixNano()})
	}
	a.mu.Unlock()
	a.log.Info("the engine is in another swarm now", "was", was, "now", n.ClusterID)
	if replace {
		a.publish()
	}
}

func (a *Agent) setErr(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.status.Err = err.Error()
}

// noteNodeLocked shows the identity the last round read.
func (a *Agent) noteNodeLocked(n Node) {
	a.status.NodeID, a.status.Role, a.status.ClusterID, a.status.CertNotAfter = n.ID, n.Role, n.ClusterID, n.NotAfter
}

func (a *Agent) noteSecretLocked() {
	if a.rec != nil {
		a.status.SecretID, a.status.SecretCreated, a.status.SecretBy = a.rec.id(), time.Unix(0, a.rec.Created), a.rec.By
		a.status.SecretGeneration = a.rec.Generation
	}
}
