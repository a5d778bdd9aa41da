package gossip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vxsec/vxsec/announce"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"

	"github.com/vxsec/vxsec/internal/limit"
)

// Sink is how the cluster feeds the driver: the narrow interface between
// them. Calls come from the cluster's goroutines, one at a time.
type Sink interface {
	// SetRemote replaces all that is known of t.Host with t.
	SetRemote(t announce.Table)
	// DropRemote forgets a host that failed or left.
	DropRemote(host netip.Addr)
	// SetMembers gives the addresses of every current member, this host
	// included: the hosts VXLAN may come from.
	SetMembers(addrs []netip.Addr)
}

// Local is how the cluster reads this host's state: the other narrow
// interface. Snapshot may be called from any of the cluster's goroutines.
type Local interface {
	// Snapshot is this host's table now; the cluster sets its Host and
	// Version.
	Snapshot() announce.Table
	// Changed is signalled (without blocking the writer: a channel with a
	// buffer of one) after the snapshot changed.
	Changed() <-chan struct{}
}

// Config is what a Cluster is built from.
type Config struct {
	// Addr is this host's advertise address; its text is the node name.
	Addr netip.Addr
	Port int
	// Secret authenticates and encrypts the cluster; nil runs it open.
	Secret []byte
	// SnapshotPath lets a restarted daemon rejoin the members it knew.
	SnapshotPath string
	// Seeds are host:port addresses to join.
	Seeds []string
	Sink  Sink
	Log   *slog.Logger
	// Local is this host's side: what it announces. Its snapshot at
	// Start is the first table, so a restarted daemon announces what it
	// already has (an empty first table would make every peer drop its
	// endpoints until the next version arrived).
	Local Local
	// KeyPeriod is how long one gossip key is primary; zero means
	// DefaultKeyPeriod. Every member must use the same (it is not a
	// setting): periods are counted from the Unix epoch.
	KeyPeriod time.Duration
	// FailGrace is how long a failed member's entries are kept before they
	// are dropped, so that a daemon restarting faster than this loses
	// nothing. Zero means DefaultFailGrace.
	FailGrace time.Duration
	// RestartGrace replaces FailGrace for a member that announced it was
	// restarting (Close, not a crash). Zero means DefaultRestartGrace.
	RestartGrace time.Duration

	// timing shortens the cluster's timers in this package's tests; it is
	// zero everywhere else.
	timing timing
}

// DefaultKeyPeriod is the gossip key's lifetime as primary, as Docker's
// swarm rotates its gossip keys.
const DefaultKeyPeriod = 12 * time.Hour

// DefaultFailGrace: see Config.FailGrace. Long enough for a plugin to be
// disabled and enabled, or killed and restarted, without its peers
// forgetting its endpoints (whose data path never stopped).
const DefaultFailGrace = 10 * time.Second

// DefaultRestartGrace: see Config.RestartGrace. Long enough for `docker
// plugin upgrade` (disable, pull from a registry, enable) on a slow host.
const DefaultRestartGrace = 60 * time.Second

// Tag names published through serf.
const (
	tagVersion = "tv"
	// tagRestarting marks a member that stopped to start again (Close).
	tagRestarting = "rs"
)

// Timing of the cluster. Failure detection is bounded by memberlist's
// suspicion timeout (SuspicionMult × ProbeInterval, scaled by log10 of the
// cluster size) plus FailGrace.
const (
	probeInterval  = 500 * time.Millisecond
	probeTimeout   = 250 * time.Millisecond
	gossipInterval = 100 * time.Millisecond
	suspicionMult  = 3
	antiEntropy    = 5 * time.Second
	pullTimeout    = 5 * time.Second
	joinRetryMax   = 10 * time.Second
	// reconnectEvery is how often failed members are retried, which bounds
	// how long a healed partition stays split (serf's default is 30 s).
	reconnectEvery = 3 * time.Second
	// broadcastWait bounds how long a tag update waits to be sent; the tag
	// is set at once, the wait only confirms, and a long one would stall
	// shutdown (and with it a restarting plugin).
	broadcastWait = 500 * time.Millisecond
	// pushPull bounds how long a missed membership broadcast goes unrepaired.
	pushPull    = 10 * time.Second
	pullWorkers = 4
	// legacyPullFor is how long a member found serving only version 1
	// pulls is pulled with version 1 before version 2 is tried again (it
	// may have been upgraded meanwhile).
	legacyPullFor = time.Minute
)

// timing holds the timers of the cluster that tests shorten, so that what a
// test waits for (failure detection, a repair pass, a stranger's deadline,
// a leave) takes milliseconds rather than seconds. A zero field takes the
// default: the constant above, or serf's and memberlist's own.
type timing struct {
	probeInterval  time.Duration
	probeTimeout   time.Duration
	gossipInterval time.Duration
	// suspicionMaxMult is memberlist's SuspicionMaxTimeoutMult: how many
	// times the least suspicion timeout a suspect is waited for when no
	// other member confirms the suspicion (as in a cluster of two).
	suspicionMaxMult int
	antiEntropy      time.Duration
	preauthTimeout   time.Duration
	broadcastWait    time.Duration
	// leavePropagate is serf's LeavePropagateDelay: how long Leave stays
	// up after its broadcast, answering probes.
	leavePropagate time.Duration
}

// withDefaults fills the zero fields this package has defaults for; the
// others stay zero, leaving serf's and memberlist's defaults alone.
func (t timing) withDefaults() timing {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&t.probeInterval, probeInterval)
	def(&t.probeTimeout, probeTimeout)
	def(&t.gossipInterval, gossipInterval)
	def(&t.antiEntropy, antiEntropy)
	def(&t.preauthTimeout, preauthTimeout)
	def(&t.broadcastWait, broadcastWait)
	return t
}

// Member is a cluster member as status reports show it.
type Member struct {
	Name   string `json:"Name"`
	Addr   string `json:"Addr"`
	Status string `json:"Status"`
}

// Cluster is this host's membership in the vxsec cluster.
type Cluster struct {
	cfg  Config
	log  *slog.Logger
	serf *serf.Serf
	tr   *transport
	// lim carries every line a stranger or a misbehaving member can cause,
	// within a budget per kind of line.
	lim   *limit.Logger
	stats *counters

	mu       sync.Mutex
	local    announce.Table
	localRaw []byte
	known    map[string]announce.Version // member name → version of its table installed
	failed   map[string]time.Time        // member name → when its entries go
	// pulling holds the members with a pull queued or running: a member
	// that announces many versions in a burst is pulled once more after
	// the running pull, not once per version.
	pulling map[string]bool
	// refusedVersion is the version of a member's table last refused for
	// breaking the bounds: not pulled again until it changes.
	refusedVersion map[string]announce.Version
	// legacyUntil holds the addresses of members found serving only
	// version 1 pulls, and until when to pull them so.
	legacyUntil map[string]time.Time
	dirty       chan struct{}
	pulls       chan string
	// repairs counts the anti-entropy passes done (tests wait on it).
	repairs atomic.Int64

	// keyring holds the gossip keys of the periods around period; nil
	// without a secret. keyMu orders keyLoop and SetSecret. auth holds the
	// same keys for the transport, which checks what arrives before
	// memberlist sees it.
	keyring *memberlist.Keyring
	auth    *authenticator
	period  atomic.Int64
	keyMu   sync.Mutex
	// secret is the cluster secret in use; oldSecret the one it replaced,
	// still accepted until oldUntil (members that have not switched yet).
	secret    []byte
	oldSecret []byte
	oldUntil  time.Time
	ctx       context.Context

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start creates the serf instance (binding the gossip port) and starts the
// cluster's goroutines; joining happens in the background.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.FailGrace == 0 {
		cfg.FailGrace = DefaultFailGrace
	}
	if cfg.KeyPeriod == 0 {
		cfg.KeyPeriod = DefaultKeyPeriod
	}
	if cfg.RestartGrace == 0 {
		cfg.RestartGrace = DefaultRestartGrace
	}
	cfg.timing = cfg.timing.withDefaults()
	ctx, cancel := context.WithCancel(ctx)
	c := &Cluster{
		cfg:            cfg,
		log:            cfg.Log.With("component", "gossip"),
		stats:          newCounters(),
		known:          map[string]announce.Version{},
		failed:         map[string]time.Time{},
		pulling:        map[string]bool{},
		refusedVersion: map[string]announce.Version{},
		legacyUntil:    map[string]time.Time{},
		dirty:          make(chan struct{}, 1),
		pulls:          make(chan string, 256),
		cancel:         cancel,
		secret:         cfg.Secret,
		ctx:            ctx,
	}
	c.lim = limit.NewLogger(c.log, limit.DefaultLogBurst, limit.DefaultLogWindow)
	c.local = cfg.Local.Snapshot()
	c.local.Host, c.local.Version = cfg.Addr, announce.Version{Epoch: time.Now().UnixNano()}
	var err error
	if c.localRaw, err = announce.Encode(c.local); err != nil {
		cancel()
		return nil, err
	}

	if cfg.Secret != nil {
		c.period.Store(keyPeriod(time.Now(), cfg.KeyPeriod))
		prev, cur, next, err := gossipKeys(cfg.Secret, c.period.Load())
		if err == nil {
			c.keyring, err = memberlist.NewKeyring([][]byte{prev, next}, cur)
		}
		if err == nil {
			c.auth, err = newAuthenticator([][]byte{prev, cur, next})
		}
		if err != nil {
			cancel()
			return nil, fmt.Errorf("making the gossip keyring: %w", err)
		}
	}
	mlog := &memberlistLogger{lim: c.lim}
	tr, err := newTransport(cfg.Addr, cfg.Port, c.serveTable, c.serveTableV1, c.auth, c.stats, c.lim, c.log, cfg.timing.preauthTimeout)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("binding the gossip port %s:%d: %w", cfg.Addr, cfg.Port, err)
	}
	c.tr = tr

	events := make(chan serf.Event, 256)
	sc := serf.DefaultConfig()
	sc.NodeName = cfg.Addr.String()
	sc.Tags = map[string]string{tagVersion: c.local.Version.String()}
	sc.EventCh = events
	sc.SnapshotPath = cfg.SnapshotPath
	sc.RejoinAfterLeave = true
	sc.ReconnectInterval = reconnectEvery
	sc.BroadcastTimeout = cfg.timing.broadcastWait
	sc.Logger = mlog.std()
	if cfg.timing.leavePropagate != 0 {
		sc.LeavePropagateDelay = cfg.timing.leavePropagate
	}
	sc.MemberlistConfig = memberlist.DefaultLANConfig()
	mc := sc.MemberlistConfig
	mc.Name = sc.NodeName
	mc.Transport = tr
	mc.AdvertiseAddr, mc.AdvertisePort = cfg.Addr.String(), cfg.Port
	mc.BindAddr, mc.BindPort = cfg.Addr.String(), cfg.Port
	mc.ProbeInterval, mc.ProbeTimeout = cfg.timing.probeInterval, cfg.timing.probeTimeout
	mc.GossipInterval = cfg.timing.gossipInterval
	mc.SuspicionMult = suspicionMult
	if cfg.timing.suspicionMaxMult != 0 {
		mc.SuspicionMaxTimeoutMult = cfg.timing.suspicionMaxMult
	}
	mc.PushPullInterval = pushPull
	// Messages are small and the links fast: compressing every gossip
	// packet was about 5 % of the daemons' CPU with 50 members.
	mc.EnableCompression = false
	mc.Logger = mlog.std()
	if c.keyring != nil {
		mc.Keyring = c.keyring
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	if cfg.SnapshotPath != "" {
		if err := os.MkdirAll(filepath.Dir(cfg.SnapshotPath), 0o700); err != nil {
			tr.Shutdown()
			cancel()
			return nil, fmt.Errorf("creating the snapshot directory: %w", err)
		}
	}
	s, err := serf.Create(sc)
	if err != nil {
		tr.Shutdown()
		cancel()
		return nil, fmt.Errorf("starting serf: %w", err)
	}
	c.serf = s
	c.log.Info("cluster started", "node", sc.NodeName, "port", cfg.Port, "encrypted", cfg.Secret != nil, "seeds", cfg.Seeds)

	c.spawn(func() { c.lim.Run(ctx) })
	c.spawn(func() { c.eventLoop(ctx, events) })
	c.spawn(func() { c.publishLoop(ctx) })
	for i := 0; i < pullWorkers; i++ {
		c.spawn(func() { c.pullLoop(ctx) })
	}
	c.spawn(func() { c.repairLoop(ctx) })
	if c.keyring != nil {
		c.spawn(func() { c.keyLoop(ctx) })
	}
	if len(cfg.Seeds) > 0 {
		c.spawn(func() { c.joinLoop(ctx, cfg.Seeds) })
	}
	c.updateMembers()
	return c, nil
}

func (c *Cluster) spawn(f func()) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
}

// Close stops the cluster without leaving it: a restarting daemon must not
// make its peers forget its endpoints, which keep working meanwhile.
//
// Close first tells the members that this host is restarting (a serf tag,
// sent within broadcastWait), so that they keep its entries for
// RestartGrace rather than FailGrace: a plugin being disabled, upgraded or
// restarted with its engine comes back later than a crashed one is
// declared gone, and its data path never stopped.
func (c *Cluster) Close() error {
	tags := map[string]string{tagRestarting: "1"}
	for k, v := range c.serf.LocalMember().Tags {
		if k != tagRestarting {
			tags[k] = v
		}
	}
	if err := c.serf.SetTags(tags); err != nil {
		c.log.Debug("announcing the restart", "err", err)
	}
	c.cancel()
	err := c.serf.Shutdown()
	c.wg.Wait()
	if terr := c.tr.Shutdown(); err == nil {
		err = terr
	}
	return err
}

// Leave tells the cluster this host is going for good, then stops.
func (c *Cluster) Leave() error {
	if err := c.serf.Leave(); err != nil {
		return fmt.Errorf("leaving the cluster: %w", err)
	}
	return c.Close()
}

// ForceLeave removes a member that is gone for good (swarm removed its
// node): its endpoints leave every host at once instead of after failure
// detection.
func (c *Cluster) ForceLeave(addr netip.Addr) {
	if err := c.serf.RemoveFailedNode(addr.String()); err != nil {
		c.log.Warn("removing member", "member", addr, "err", err)
	}
	c.drop(addr.String())
	c.updateMembers()
}

// Join adds seed addresses (host:port) to join, in the background.
func (c *Cluster) Join(seeds []string) {
	c.spawn(func() { c.joinLoop(context.Background(), seeds) })
}

// TryJoin makes one attempt to join seeds (host:port), for callers that
// retry on their own schedule; it returns how many answered.
func (c *Cluster) TryJoin(seeds []string) (int, error) {
	return c.serf.Join(seeds, true)
}

// joinLoop retries until one seed answers: seeds may start after us.
func (c *Cluster) joinLoop(ctx context.Context, seeds []string) {
	wait := 200 * time.Millisecond
	for {
		n, err := c.serf.Join(seeds, true)
		if n > 0 {
			c.log.Info("joined cluster", "contacted", n)
			return
		}
		c.log.Debug("join failed; retrying", "seeds", seeds, "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return
		case <-c.serf.ShutdownCh():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, joinRetryMax)
	}
}

// publishLoop announces this host's table: at once after a quiet spell,
// and at most once per publishSpacing during a burst of changes, which
// the snapshot taken after the wait folds into one version.
func (c *Cluster) publishLoop(ctx context.Context) {
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.cfg.Local.Changed():
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(last.Add(publishSpacing(c.serf.NumNodes())))):
		}
		v, changed := c.takeSnapshot()
		if !changed {
			continue
		}
		last = time.Now()
		if err := c.serf.SetTags(map[string]string{tagVersion: v.String()}); err != nil {
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
	raw, err := announce.Encode(t)
	if err != nil {
		c.lim.Log(slog.LevelError, "own table", "encoding this host's table", "err", err)
		return t.Version, false
	}
	if bytes.Equal(raw, c.localRaw) {
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
	c.local, c.localRaw = t, raw
	return t.Version, true
}

// publishSpacing is the least time between two announcements of this
// host's table. Every member pulls every version it hears of, so a member
// is asked for members × versions pulls: spacing the versions in
// proportion to the cluster's size keeps what each member pulls per
// second flat as the cluster grows (a burst of changes, like a host
// starting many containers, becomes a few versions), while a small
// cluster still hears of a change within tens of milliseconds.
func publishSpacing(members int) time.Duration {
	return min(max(time.Duration(members)*20*time.Millisecond, 50*time.Millisecond), time.Second)
}

// Members lists the cluster as this host sees it.
func (c *Cluster) Members() []Member {
	var out []Member
	for _, m := range c.serf.Members() {
		out = append(out, Member{Name: m.Name, Addr: m.Addr.String(), Status: m.Status.String()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (c *Cluster) eventLoop(ctx context.Context, events <-chan serf.Event) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-events:
			me, ok := ev.(serf.MemberEvent)
			if !ok {
				continue
			}
			for _, m := range me.Members {
				if m.Name == c.serf.LocalMember().Name {
					continue
				}
				c.memberEvent(me.Type, m)
			}
			// A new table version changes no member's status.
			if me.Type != serf.EventMemberUpdate {
				c.updateMembers()
			}
		}
	}
}

func (c *Cluster) memberEvent(t serf.EventType, m serf.Member) {
	c.log.Debug("member event", "event", t.String(), "member", m.Name, "status", m.Status.String())
	switch t {
	case serf.EventMemberJoin, serf.EventMemberUpdate:
		c.mu.Lock()
		delete(c.failed, m.Name)
		c.mu.Unlock()
		c.maybePull(m)
	case serf.EventMemberFailed:
		grace := c.cfg.FailGrace
		if m.Tags[tagRestarting] != "" {
			// It said it was stopping to start again (Close): its data
			// path runs on meanwhile, so keep its entries longer.
			grace = max(grace, c.cfg.RestartGrace)
		}
		c.mu.Lock()
		c.failed[m.Name] = time.Now().Add(grace)
		c.mu.Unlock()
	case serf.EventMemberLeave, serf.EventMemberReap:
		c.drop(m.Name)
	}
}

// maybePull queues a pull when m announces a newer table than installed.
func (c *Cluster) maybePull(m serf.Member) {
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
	select {
	case c.pulls <- m.Name:
		c.pulling[m.Name] = true
	default: // the repair pass will get to it
	}
}

func (c *Cluster) drop(name string) {
	c.mu.Lock()
	_, had := c.known[name]
	delete(c.known, name)
	delete(c.failed, name)
	c.mu.Unlock()
	addr, err := netip.ParseAddr(name)
	if err != nil {
		return
	}
	if had {
		c.log.Info("forgetting member's endpoints", "member", name)
	}
	c.cfg.Sink.DropRemote(addr)
}

// updateMembers hands the sink every member that may send VXLAN: alive,
// suspected, or failed but still within the grace period.
func (c *Cluster) updateMembers() {
	var addrs, known []netip.Addr
	for _, m := range c.serf.Members() {
		if a, ok := netip.AddrFromSlice(m.Addr); ok {
			known = append(known, a.Unmap())
		}
		switch m.Status {
		case serf.StatusAlive, serf.StatusLeaving:
		case serf.StatusFailed:
			c.mu.Lock()
			until, ok := c.failed[m.Name]
			c.mu.Unlock()
			if !ok || !time.Now().Before(until) {
				continue
			}
		default:
			continue
		}
		if a, ok := netip.AddrFromSlice(m.Addr); ok {
			addrs = append(addrs, a.Unmap())
		}
	}
	// Connections from any address serf knows, failed or left members'
	// included (they come back), wait under the members' limits.
	c.tr.setMembers(known)
	sort.Slice(addrs, func(i, j int) bool { return addrs[i].Less(addrs[j]) })
	c.cfg.Sink.SetMembers(addrs)
}

func (c *Cluster) pullLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case name := <-c.pulls:
			ok := c.pullMember(ctx, name)
			c.mu.Lock()
			delete(c.pulling, name)
			c.mu.Unlock()
			// Versions announced while the pull ran. The tags are read
			// after the pull is no longer marked running, so an
			// announcement is either seen here or pulls on its own.
			if m, alive := c.aliveMember(name); ok && alive {
				c.maybePull(m)
			}
		}
	}
}

// pullMember installs the member's table if it is newer than the one
// installed, and reports whether the pull succeeded.
func (c *Cluster) pullMember(ctx context.Context, name string) bool {
	member, ok := c.aliveMember(name)
	if !ok {
		return false
	}
	addr := net.JoinHostPort(member.Addr.String(), strconv.Itoa(int(member.Port)))
	t, err := c.pull(ctx, addr)
	overLimits := announce.IsLimit(err)
	if err != nil && !overLimits {
		c.log.Warn("pulling member's table", "member", name, "err", err)
		return false
	}
	// A table refused for its size was not decoded, and names no host.
	if (err == nil || t.Host.IsValid()) && t.Host.String() != name {
		c.log.Warn("member sent another host's table", "member", name, "host", t.Host)
		return false
	}
	if overLimits {
		c.stats.add("table-limits")
		c.lim.Log(slog.LevelError, "table over limits", "refusing a member's table over the bounds", "member", name, "version", t.Version.String(), "err", err)
		c.mu.Lock()
		c.refusedVersion[name] = t.Version
		c.mu.Unlock()
		return false
	}
	c.mu.Lock()
	delete(c.refusedVersion, name)
	have := c.known[name]
	newer := have.Less(t.Version)
	if newer {
		c.known[name] = t.Version
	}
	c.mu.Unlock()
	if newer {
		c.log.Debug("installing member's table", "member", name, "version", t.Version.String(), "endpoints", len(t.Endpoints))
		c.cfg.Sink.SetRemote(t)
	}
	return true
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

// pull fetches and decodes a member's table, with version 2 of
// the pull, or version 1 from a member found serving only that.
func (c *Cluster) pull(ctx context.Context, addr string) (announce.Table, error) {
	c.mu.Lock()
	legacy := time.Now().Before(c.legacyUntil[addr])
	c.mu.Unlock()
	if !legacy {
		plain, err := c.pullOnce(ctx, addr, clientPull)
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
			return decodeTable(plain, err)
		}
	}
	return decodeTable(c.pullOnce(ctx, addr, clientPullV1))
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

func decodeTable(plain []byte, err error) (announce.Table, error) {
	if err != nil {
		return announce.Table{}, err
	}
	return announce.Decode(plain)
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
		return c.localRaw
	}
	if err := servePull(conn, c.secrets(), newNonce(), table, authenticated); err != nil {
		reason := "pull-proof"
		if !errors.Is(err, errBadProof) {
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
		return c.localRaw
	}
	if err := servePullV1(conn, c.secrets()[0], newNonce(), table); err != nil {
		c.tr.refuse(readReason(err), from, err)
		return
	}
	c.stats.accept("pull-v1")
}

// Stats reports what the gossip port let through and refused.
func (c *Cluster) Stats() Stats { return c.stats.snapshot() }

// memberlistLogger carries serf's and memberlist's "[LEVEL] text" lines
// into slog at their level, every line within the log budget: memberlist
// logs, among others, each packet and stream that fails, which strangers
// choose.
type memberlistLogger struct{ lim *limit.Logger }

func (l *memberlistLogger) std() *log.Logger { return log.New(l, "", 0) }

func (l *memberlistLogger) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelDebug
	switch {
	case strings.HasPrefix(line, "[ERR]"):
		level = slog.LevelError
	case strings.HasPrefix(line, "[WARN]"):
		level = slog.LevelWarn
	case strings.HasPrefix(line, "[INFO]"):
		level = slog.LevelInfo
	}
	// serf's INFO lines are chatty; they are debug detail for vxsec.
	if level == slog.LevelInfo {
		level = slog.LevelDebug
	}
	l.lim.Log(level, logKind(line), line)
	return len(p), nil
}

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
	if c.oldSecret != nil && time.Now().Before(c.oldUntil) {
		op, oc, on, err := gossipKeys(c.oldSecret, p)
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
	out := [][]byte{c.secret}
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
