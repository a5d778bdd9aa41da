package gossip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"

	"github.com/vxsec/vxsec/announce"
	"github.com/vxsec/vxsec/internal/limit"
)

// Sink is how the cluster feeds the driver: the narrow interface between
// them. Calls come from the cluster's goroutines, one at a time.
type Sink interface {
	// SetRemote replaces all that is known of t.Host with t. Calls for
	// one host may come out of order (a pull and a delta race, each
	// handing its table over without the cluster's lock): a table older
	// than the one held is to be ignored.
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
	// Bind is the address the gossip port is bound to, and connections
	// leave from: Addr, unless the host is behind NAT (Addr is the NAT's,
	// which forwards the gossip port to Bind). Zero means Addr.
	Bind netip.Addr
	Port int
	// Secret authenticates and encrypts the cluster; nil runs it open.
	Secret []byte
	// SnapshotPath lets a restarted daemon rejoin the members it knew.
	SnapshotPath string
	// EpochFile keeps the last run's table epoch, so that versions move
	// forward across restarts even when the clock went back (nextEpoch).
	// Empty trusts the clock.
	EpochFile string
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
	// SecretPromote is how long a secret SetSecret gives is accepted
	// before this member sends with it; zero means DefaultSecretPromote.
	SecretPromote time.Duration

	// Accept are other secrets whose gossip keys and table pulls are
	// accepted but never used to send: a rolling change of the secret
	// (VXSEC_SECRET_ACCEPT). Needs Secret.
	Accept [][]byte

	// Signer signs this host's tables with its identity; nil publishes
	// them unsigned.
	Signer TableSigner
	// Verifier checks the signed tables of other hosts; nil trusts every
	// table the cluster secret opens (a secret-only cluster).
	Verifier TableVerifier
	// RequireSigned refuses unsigned tables; set with Verifier (unset only
	// while a cluster moves to identities, host by host).
	RequireSigned bool

	// Queries answers the cluster's queries (Ask): a member's `vxsec
	// doctor` asking every member what it sees. Nil answers none.
	Queries QueryHandler

	// timing shortens the cluster's timers in this package's tests; it is
	// zero everywhere else.
	timing timing
}

// TableSigner signs a table's encoding, and proves this host's identity
// to a member it pulls from (package identity).
type TableSigner interface {
	SignTable(table []byte) ([]byte, error)
	// SignRaw is the signature SignTable makes, alone: what a delta of
	// the table carries (the receiver holds the rest from its last pull).
	SignRaw(table []byte) ([]byte, error)
	// SignPeer returns the identity block that proves this host signed
	// msg.
	SignPeer(msg []byte) ([]byte, error)
}

// TableVerifier checks the signed tables of other hosts (package
// identity).
type TableVerifier interface {
	// OpenTable checks a signed table pulled from host and returns the
	// table's encoding and its signer. A revocation list newer than the
	// one held, in front of the table, is adopted (newCRL).
	OpenTable(host netip.Addr, signed []byte) (table []byte, signer string, newCRL bool, err error)
	// Revoked tells whether a signer OpenTable returned is revoked now.
	Revoked(signer string) bool
	// KeyName is the identity a signer OpenTable returned binds its IPsec
	// epochs to (announce.Key.ID): its name, which a renewal keeps.
	KeyName(signer string) string
	// CRLNumber is the number of the revocation list held (0: none).
	CRLNumber() uint64
	// CheckPeer checks a client's identity block: a host certificate of
	// the cluster for host, not revoked, that signed msg.
	CheckPeer(host netip.Addr, block, msg []byte) error
}

// tableTags are this host's tags announcing table version v.
func tableTags(v announce.Version) map[string]string {
	return map[string]string{tagVersion: v.String(), tagPull: pullEphemeral}
}

// Tag names published through serf.
const (
	tagVersion = "tv"
	// tagRestarting marks a member that stopped to start again (Close).
	tagRestarting = "rs"
	// tagPull says which table pulls the member serves beyond version 2
	// (pullEphemeral: with ephemeral keys). A member of the previous
	// release has none, and is pulled without them.
	tagPull       = "pv"
	pullEphemeral = "eph"
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
	// pushPull bounds how long a missed membership broadcast goes
	// unrepaired, a new table version included: memberlist's broadcasts
	// miss some members when many hosts change at once, and only the
	// state exchange tells them. In the simulation of 50 hosts adding 20
	// endpoints each (vxlab bench -only sim), every host held every entry
	// 20–22 s after the first with 10 s (memberlist doubles it past 32
	// members), 3.6 s with 3 s. An exchange is one connection and about
	// 120 bytes a member, every 3 s per host (6 s past 32 members, 12 s
	// past 128).
	pushPull = 3 * time.Second
	// deltaWait is how long a member that announced a new version is
	// given for its delta to arrive before it is pulled: the delta and the
	// version tag travel in gossip apart, and either may come first.
	deltaWait = 300 * time.Millisecond
	// behindWait is how long a member waits in all for a delta while
	// deltas are still queued for it to install: it is behind, the delta
	// awaited may be among them, and a pull would cost more than catching
	// up (a connection, a key exchange, three signatures), more so on a
	// host already short of CPU. With 100 lab hosts on 2 CPUs each host
	// served 194-210 pulls while it fell behind.
	behindWait  = 3 * time.Second
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
	// failPulls, if set, makes that many of this member's next pulls fail
	// on the way, as a member refusing connections would (retryPull).
	failPulls *atomic.Int32
	// deltaWait is how long a pull waits for the delta of the version
	// announced (deltaWait below).
	deltaWait time.Duration
	// behindWait bounds how long that wait grows while deltas are queued
	// (behindWait below); the tests' control sets it to deltaWait.
	behindWait time.Duration
	// noDeltas: this member sends no deltas (the tests' control).
	noDeltas bool
	// tagSpacing, if set, replaces tagSpacing(members); negative: none
	// (the tests' control, a tag at every version).
	tagSpacing time.Duration
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
	def(&t.deltaWait, deltaWait)
	def(&t.behindWait, behindWait)
	return t
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
	// signed is localRaw, signed when there is a Signer. served is what
	// pulls get: signed as of the last announcement, so that every member
	// holds an announced version, which the next delta is from.
	signed []byte
	served []byte
	known  map[string]announce.Version // member name → version of its table installed
	// held are the tables installed, by member name, with what signed
	// them: what a delta applies to and is checked with.
	held map[string]heldTable
	// announced is this host's table as last announced: what its next
	// delta is from.
	announced announce.Table
	// deferred holds the members whose pull waits a moment for the delta
	// of the version they announced (maybePull).
	deferred map[string]bool
	// early are deltas kept from versions not held yet, by member name.
	early map[string][]pendingDelta
	// installing is set while deltaLoop installs a batch (deferPull).
	installing atomic.Bool
	failed     map[string]time.Time // member name → when its entries go
	// pulling holds the members with a pull queued or running: a member
	// that announces many versions in a burst is pulled once more after
	// the running pull, not once per version.
	pulling map[string]bool
	// retrying holds the members whose failed pull waits to be tried
	// again (retryPull).
	retrying map[string]bool
	// refusedVersion is the version of a member's table last refused for
	// breaking the bounds: not pulled again until it changes.
	refusedVersion map[string]announce.Version
	// legacyUntil holds the addresses of members found serving only
	// version 1 pulls, and until when to pull them so.
	legacyUntil map[string]time.Time
	pulls       chan string
	// dirty asks publishLoop to announce the newest version.
	dirty chan struct{}
	// tagDirty asks tagLoop to tag the version announced; tagNow, to do
	// it without waiting for tagSpacing.
	tagDirty chan struct{}
	tagNow   atomic.Bool
	// resnap asks snapshotLoop for a new table although the local state
	// did not change (a newer revocation list to spread).
	resnap chan struct{}
	// resign makes the next snapshot a new version even if the table is
	// the same (Resign: the signature changes).
	resign atomic.Bool
	// resigned: Resign was called since the last announcement, whose
	// version then goes without a delta.
	resigned atomic.Bool
	// signers are the signers of the tables installed, by member name.
	signers map[string]string
	// untrusted are members whose table was refused for its identity
	// (none, another host's, revoked): they are no VXLAN source either.
	untrusted map[string]bool
	// querySlots holds a token per query being answered (answer).
	querySlots chan struct{}
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
	// pending is the secret SetSecret gave, accepted and not yet sent
	// with; pendingSeq tells a promotion which SetSecret it is for.
	pending    []byte
	pendingSeq uint64
	// accept are Config.Accept: keys and pulls accepted, never sent.
	accept [][]byte
	ctx    context.Context

	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once
	stopped  atomic.Bool
	stopErr  error
}

// Start creates the serf instance (binding the gossip port) and starts the
// cluster's goroutines; joining happens in the background.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Sink == nil || cfg.Local == nil {
		return nil, errors.New("gossip: Config needs a Sink and a Local (the driver's two sides)")
	}
	if cfg.FailGrace == 0 {
		cfg.FailGrace = DefaultFailGrace
	}
	if cfg.KeyPeriod == 0 {
		cfg.KeyPeriod = DefaultKeyPeriod
	}
	if cfg.SecretPromote == 0 {
		cfg.SecretPromote = DefaultSecretPromote
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
		held:           map[string]heldTable{},
		deferred:       map[string]bool{},
		early:          map[string][]pendingDelta{},
		failed:         map[string]time.Time{},
		pulling:        map[string]bool{},
		retrying:       map[string]bool{},
		refusedVersion: map[string]announce.Version{},
		legacyUntil:    map[string]time.Time{},
		pulls:          make(chan string, 256),
		dirty:          make(chan struct{}, 1),
		tagDirty:       make(chan struct{}, 1),
		resnap:         make(chan struct{}, 1),
		signers:        map[string]string{},
		querySlots:     make(chan struct{}, queriesAtOnce),
		untrusted:      map[string]bool{},
		cancel:         cancel,
		secret:         cfg.Secret,
		ctx:            ctx,
	}
	c.lim = limit.NewLogger(c.log, limit.DefaultLogBurst, limit.DefaultLogWindow)
	c.local = cfg.Local.Snapshot()
	epoch, err := nextEpoch(cfg.EpochFile, time.Now())
	if err != nil {
		cancel()
		return nil, err
	}
	c.local.Host, c.local.Version = cfg.Addr, announce.Version{Epoch: epoch}
	c.announced = c.local
	if c.localRaw, err = announce.Encode(c.local); err != nil {
		cancel()
		return nil, err
	}
	if c.served, err = c.sign(c.localRaw); err != nil {
		// The identity cannot sign yet (in swarm mode: no manager's pass
		// yet). Members that require signatures refuse this table until
		// Resign makes a signed one.
		c.log.Warn("serving this host's table unsigned until its identity can sign it", "err", err)
		c.served = c.localRaw
		c.resign.Store(true)
	}
	c.signed = c.served

	if cfg.Secret != nil {
		c.period.Store(keyPeriod(time.Now(), cfg.KeyPeriod))
		prev, cur, next, err := gossipKeys(cfg.Secret, c.period.Load())
		if err == nil {
			c.keyring, err = memberlist.NewKeyring([][]byte{prev, next}, cur)
		}
		if err == nil {
			c.auth, err = newAuthenticator([][]byte{prev, cur, next})
		}
		if err == nil && len(cfg.Accept) > 0 {
			c.accept = cfg.Accept
			err = c.rotateKeys(c.period.Load())
		}
		if err != nil {
			cancel()
			return nil, fmt.Errorf("making the gossip keyring: %w", err)
		}
	}
	mlog := &memberlistLogger{lim: c.lim}
	bind := cfg.Bind
	if !bind.IsValid() {
		bind = cfg.Addr
	}
	tr, err := newTransport(bind, cfg.Port, c.serveTable, c.serveTableV1, c.auth, c.stats, c.lim, c.log, cfg.timing.preauthTimeout)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("binding the gossip port %s:%d: %w", bind, cfg.Port, err)
	}
	c.tr = tr

	events := make(chan serf.Event, 256)
	sc := serf.DefaultConfig()
	sc.NodeName = cfg.Addr.String()
	sc.Tags = tableTags(c.local.Version)
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
	mc.BindAddr, mc.BindPort = bind.String(), cfg.Port
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
	closeKeyQueries(sc)
	// Only now may memberlist be handed what peers send: closeKeyQueries
	// changed what serf's query handlers read, unguarded.
	tr.release()
	c.log.Info("cluster started", "node", sc.NodeName, "port", cfg.Port, "encrypted", cfg.Secret != nil, "seeds", cfg.Seeds)

	c.spawn(func() { c.lim.Run(ctx) })
	c.spawn(func() { c.eventLoop(ctx, events) })
	c.spawn(func() { c.snapshotLoop(ctx) })
	c.spawn(func() { c.publishLoop(ctx) })
	c.spawn(func() { c.tagLoop(ctx) })
	c.spawn(func() { c.deltaLoop(ctx) })
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

// closeKeyQueries keeps serf's key-management queries (_serf_install-key,
// _serf_use-key, _serf_remove-key, _serf_list-keys) from the gossip
// keyring. serf answers them for any member that sends one: a member, or
// anyone holding one period's key, could read the next period's key, make
// a key of its own primary, or remove ours and split the cluster. vxsec
// moves the keyring itself (rotateKeysLocked) and never uses serf's
// KeyManager, and serf offers no setting to turn the queries off.
//
// sc is the Config serf was created with (serf.Create, after it). serf's
// handlers reach the keyring through sc.MemberlistConfig.Keyring, while
// memberlist keeps the *memberlist.Config it was created with and
// encrypts with that one's keyring. Given a copy without the keyring,
// serf answers the queries "encryption not enabled" and changes nothing;
// memberlist goes on as before. serf (v0.11) reads MemberlistConfig
// nowhere else after Create but for EncryptionEnabled (the key handlers,
// and Stats, unused here), writeKeyringFile (no KeyringFile, and behind
// EncryptionEnabled) and DefaultQueryTimeout's GossipInterval, which the
// copy keeps. memberlist writes its Config only within Create, so copying
// it races with nothing.
//
// The swap is unguarded: it must happen before serf handles any query,
// which is why the transport hands memberlist nothing until released.
func closeKeyQueries(sc *serf.Config) {
	mc := *sc.MemberlistConfig
	mc.Keyring = nil
	sc.MemberlistConfig = &mc
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
	if c.stopped.Load() {
		return c.stop() // stopped already (Leave): there is nobody left to tell
	}
	tags := map[string]string{tagRestarting: "1"}
	for k, v := range c.serf.LocalMember().Tags {
		if k != tagRestarting {
			tags[k] = v
		}
	}
	if err := c.serf.SetTags(tags); err != nil {
		c.log.Debug("announcing the restart", "err", err)
	}
	return c.stop()
}

// Leave tells the cluster this host is going for good, then stops. (Not
// Close: a member that left must not also say it is restarting, and the
// tag could no longer be sent.)
func (c *Cluster) Leave() error {
	if err := c.serf.Leave(); err != nil {
		return fmt.Errorf("leaving the cluster: %w", err)
	}
	return c.stop()
}

// stop ends serf, the cluster's goroutines and the transport, once.
func (c *Cluster) stop() error {
	c.stopOnce.Do(func() {
		c.stopped.Store(true)
		c.cancel()
		err := c.serf.Shutdown()
		c.wg.Wait()
		if terr := c.tr.Shutdown(); err == nil {
			err = terr
		}
		c.stopErr = err
	})
	return c.stopErr
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

// Stats reports what the gossip port let through and refused.
func (c *Cluster) Stats() Stats { return c.stats.snapshot() }
