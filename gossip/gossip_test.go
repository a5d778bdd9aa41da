package gossip

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vxsec/vxsec/announce"
	"github.com/vxsec/vxsec/internal/testutil"
)

func TestSeal(t *testing.T) {
	secret := make([]byte, 32)
	cn, sn := make([]byte, 32), make([]byte, 32)
	sn[0] = 1
	a, _ := sessionAEAD(secret, cn, sn)
	sealed := seal(a, []byte("table"))
	if got, err := open(a, sealed); err != nil || string(got) != "table" {
		t.Fatalf("open = %q, %v", got, err)
	}
	other := make([]byte, 32)
	other[0] = 9
	cases := map[string][3][]byte{
		"other secret":       {other, cn, sn},
		"other client nonce": {secret, sn, sn},
		"other server nonce": {secret, cn, cn},
	}
	for name, k := range cases {
		b, _ := sessionAEAD(k[0], k[1], k[2])
		if _, err := open(b, sealed); err == nil {
			t.Errorf("%s opened the table", name)
		}
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := open(a, sealed); err == nil {
		t.Error("a damaged table opened")
	}
}

// recorder is the driver's side of the interface, recording what the
// cluster tells it.
type recorder struct {
	// hold, write-locked by a test, stops every SetRemote until
	// released: the member's installs wait, as on a host short of CPU.
	hold    sync.RWMutex
	mu      sync.Mutex
	tables  map[netip.Addr]announce.Table
	history []announce.Table
	dropped []netip.Addr
	members []netip.Addr
}

func (r *recorder) SetRemote(t announce.Table) {
	r.hold.RLock()
	r.hold.RUnlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.history = append(r.history, t)
	if old, ok := r.tables[t.Host]; ok && !old.Version.Less(t.Version) {
		return // as the driver does (Sink)
	}
	r.tables[t.Host] = t
}

func (r *recorder) DropRemote(h netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.tables, h)
	r.dropped = append(r.dropped, h)
}

func (r *recorder) SetMembers(a []netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.members = a
}

func (r *recorder) table(h netip.Addr) (announce.Table, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.tables[h]
	return t, ok
}

// localState is the driver's other side: this host's table, as a test
// sets it.
type localState struct {
	mu      sync.Mutex
	t       announce.Table
	changed chan struct{}
}

func newLocal(t announce.Table) *localState {
	return &localState{t: t, changed: make(chan struct{}, 1)}
}

func (l *localState) Snapshot() announce.Table {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.t
}

func (l *localState) Changed() <-chan struct{} { return l.changed }

// publish makes t the table of c's host, as the driver does on a change.
func publish(c *Cluster, t announce.Table) {
	l := c.cfg.Local.(*localState)
	l.mu.Lock()
	l.t = t
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// startNode runs a real serf cluster member on a loopback address of its own.
func startNode(t *testing.T, addr string, secret []byte, seeds []string) (*Cluster, *recorder, int) {
	t.Helper()
	return startNodeConfig(t, Config{Addr: netip.MustParseAddr(addr), Secret: secret, Seeds: seeds})
}

// testTiming is what the tests' clusters run with, save the fields a test
// sets. Gossip every 20 ms puts a broadcast (a table version, the tag Close
// sends, a leave) out within tens of milliseconds, which is what Close and
// Leave wait for; a leave need not linger a second answering probes. A
// broadcast that cannot go out (the restart tag Close sets after Leave)
// is waited for 100 ms, not broadcastWait.
var testTiming = timing{gossipInterval: 20 * time.Millisecond, leavePropagate: 50 * time.Millisecond, broadcastWait: 100 * time.Millisecond}

func startNodeConfig(t *testing.T, cfg Config) (*Cluster, *recorder, int) {
	t.Helper()
	port := testutil.FreePort(t)
	rec := &recorder{tables: map[netip.Addr]announce.Table{}}
	cfg.Port, cfg.Sink = port, rec
	if cfg.FailGrace == 0 {
		cfg.FailGrace = 500 * time.Millisecond
	}
	if cfg.timing.gossipInterval == 0 {
		cfg.timing.gossipInterval = testTiming.gossipInterval
	}
	if cfg.timing.leavePropagate == 0 {
		cfg.timing.leavePropagate = testTiming.leavePropagate
	}
	if cfg.timing.broadcastWait == 0 {
		cfg.timing.broadcastWait = testTiming.broadcastWait
	}
	if cfg.Local == nil {
		cfg.Local = newLocal(announce.Table{})
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	c, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// A test may have stopped it already (Leave, Close, a crash):
		// Close again would wait for a broadcast that never goes out.
		if c.ctx.Err() == nil {
			c.Close()
		} else {
			c.tr.Shutdown()
			c.wg.Wait()
		}
	})
	return c, rec, port
}

func TestClusterExchangesTables(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	a, recA, portA := startNode(t, "127.0.0.11", secret, nil)
	seed := []string{net.JoinHostPort("127.0.0.11", strconv.Itoa(portA))}
	b, recB, _ := startNode(t, "127.0.0.12", secret, seed)
	hostA, hostB := netip.MustParseAddr("127.0.0.11"), netip.MustParseAddr("127.0.0.12")

	ep := announce.Endpoint{VNI: 7, IP: netip.MustParseAddr("10.0.0.2"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, Created: time.Now()}
	publish(a, announce.Table{Endpoints: []announce.Endpoint{ep}})
	testutil.Eventually(t, 10*time.Second, "B installs A's table", func() bool {
		tb, ok := recB.table(hostA)
		return ok && len(tb.Endpoints) == 1 && tb.Endpoints[0].IP == ep.IP
	})
	// A newer version replaces the old; an endpoint removed is gone.
	publish(a, announce.Table{})
	testutil.Eventually(t, 10*time.Second, "B installs A's emptied table", func() bool {
		tb, ok := recB.table(hostA)
		return ok && len(tb.Endpoints) == 0
	})
	publish(b, announce.Table{Endpoints: []announce.Endpoint{ep}})
	testutil.Eventually(t, 10*time.Second, "A installs B's table", func() bool { _, ok := recA.table(hostB); return ok })
	testutil.Eventually(t, 10*time.Second, "both see two members", func() bool {
		recA.mu.Lock()
		defer recA.mu.Unlock()
		return len(recA.members) == 2
	})

	// A late joiner gets every table, not only the changes it witnessed.
	_, recC, _ := startNode(t, "127.0.0.13", secret, seed)
	testutil.Eventually(t, 10*time.Second, "late joiner C installs B's table", func() bool { _, ok := recC.table(hostB); return ok })

	// A node without the secret joins nobody and learns nothing. Its join
	// (a state exchange sealed under its own keys) is refused by A's
	// transport: once A counted that, the attempt is over.
	if n := a.Stats().Refused["unauthentic"]; n != 0 {
		t.Fatalf("A refused %d streams as unauthentic before any stranger came", n)
	}
	x, recX, _ := startNode(t, "127.0.0.14", []byte("another secret, 32 bytes long!!!"), seed)
	testutil.Eventually(t, 10*time.Second, "A refuses X's join", func() bool { return a.Stats().Refused["unauthentic"] >= 1 })
	if _, ok := recX.table(hostB); ok {
		t.Fatal("a node with the wrong secret learned a table")
	}
	if n := len(x.Members()); n != 1 {
		t.Fatalf("a node with the wrong secret sees %d members, want only itself", n)
	}
	for _, m := range a.Members() {
		if m.Name == "127.0.0.14" {
			t.Fatal("a node with the wrong secret became a member")
		}
	}

	// A graceful leave removes the host's table at once.
	if err := b.Leave(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "A drops B after its leave", func() bool { _, ok := recA.table(hostB); return !ok })
}

// TestRestartAnnouncesItsTable: a daemon that restarts with endpoints must
// never announce an empty table, not even for a moment, or its peers would
// drop endpoints whose data path never stopped.
func TestRestartAnnouncesItsTable(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	_, recA, portA := startNode(t, "127.0.0.21", secret, nil)
	seed := []string{net.JoinHostPort("127.0.0.21", strconv.Itoa(portA))}
	hostB := netip.MustParseAddr("127.0.0.22")
	ep := announce.Endpoint{VNI: 9, IP: netip.MustParseAddr("10.0.0.9"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 9}, Created: time.Now()}
	startNodeConfig(t, Config{Addr: hostB, Secret: secret, Seeds: seed, Local: newLocal(announce.Table{Endpoints: []announce.Endpoint{ep}})})
	testutil.Eventually(t, 10*time.Second, "A installs B's table", func() bool { _, ok := recA.table(hostB); return ok })
	recA.mu.Lock()
	defer recA.mu.Unlock()
	for _, tb := range recA.history {
		if tb.Host == hostB && len(tb.Endpoints) != 1 {
			t.Fatalf("A installed a version of B's table without B's endpoint: %+v", tb)
		}
	}
}

// TestGossipKeyRotates: with a short key period, members move through
// several gossip keys and stay members, and a host that joins later, with
// only the secret, gets in.
func TestGossipKeyRotates(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	// Members' key loops wake at every boundary; a member whose loop runs
	// late by less than a period still shares two keys with the others.
	const period = 300 * time.Millisecond
	a, _, portA := startNodeConfig(t, Config{Addr: netip.MustParseAddr("127.0.0.31"), Secret: secret, KeyPeriod: period})
	seed := []string{net.JoinHostPort("127.0.0.31", strconv.Itoa(portA))}
	b, _, _ := startNodeConfig(t, Config{Addr: netip.MustParseAddr("127.0.0.32"), Secret: secret, Seeds: seed, KeyPeriod: period})
	alive := func(c *Cluster, n int) func() bool {
		return func() bool {
			k := 0
			for _, m := range c.Members() {
				if m.Status == "alive" {
					k++
				}
			}
			return k == n
		}
	}
	testutil.Eventually(t, 10*time.Second, "A and B see each other", alive(a, 2))
	first := a.KeyPeriod()
	primary := a.keyring.GetPrimaryKey()
	testutil.Eventually(t, 10*time.Second, "three key rotations", func() bool { return a.KeyPeriod() >= first+3 })
	// keyMu keeps the next rotation out while the keyring is read.
	a.keyMu.Lock()
	now, keys := a.keyring.GetPrimaryKey(), len(a.keyring.GetKeys())
	a.keyMu.Unlock()
	if bytes.Equal(now, primary) {
		t.Fatal("the primary gossip key did not change")
	}
	if keys != 3 {
		t.Fatalf("keyring holds %d keys, want 3 (previous, current, next)", keys)
	}
	testutil.Eventually(t, 10*time.Second, "A and B still members after the rotations", alive(a, 2))
	testutil.Eventually(t, 10*time.Second, "B too", alive(b, 2))
	c, _, _ := startNodeConfig(t, Config{Addr: netip.MustParseAddr("127.0.0.33"), Secret: secret, Seeds: seed, KeyPeriod: period})
	testutil.Eventually(t, 10*time.Second, "late joiner C gets in with the secret", alive(c, 3))
}

// TestSetSecret: swarm nodes that agreed another secret move the running
// cluster onto it. A node given the new secret accepts it at once and
// sends with it only after SecretPromote, so a member that has not been
// given it yet reads everything meanwhile (no refused packet, never taken
// for failed); members already switched and members not yet switched still
// exchange tables (the old secret is accepted for a grace period), and a
// node that holds only the new secret gets in. The control, sending with
// the new secret at once, is what the delay prevents: the member not yet
// given it refuses the switched member's packets.
func TestSetSecret(t *testing.T) {
	oldS := []byte("0123456789abcdef0123456789abcdef")
	newS := []byte("fedcba9876543210fedcba9876543210")
	const promote = 2 * time.Second
	a, recA, portA := startNodeConfig(t, Config{Addr: netip.MustParseAddr("127.0.0.41"), Secret: oldS, SecretPromote: promote})
	seed := []string{net.JoinHostPort("127.0.0.41", strconv.Itoa(portA))}
	b, recB, _ := startNodeConfig(t, Config{Addr: netip.MustParseAddr("127.0.0.42"), Secret: oldS, Seeds: seed, SecretPromote: promote})
	hostA, hostB := netip.MustParseAddr("127.0.0.41"), netip.MustParseAddr("127.0.0.42")
	ep := announce.Endpoint{VNI: 7, IP: netip.MustParseAddr("10.0.0.2"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, Created: time.Now()}
	publish(a, announce.Table{Endpoints: []announce.Endpoint{ep}})
	testutil.Eventually(t, 10*time.Second, "B installs A's table under the old secret", func() bool { _, ok := recB.table(hostA); return ok })
	unreadable := func(c *Cluster) uint64 {
		r := c.Stats().Refused
		return r["unauthentic"] + r["packet-unauthentic"]
	}
	primaryOf := func(secret []byte) []byte {
		_, cur, _, err := gossipKeys(secret, a.KeyPeriod())
		if err != nil {
			t.Fatal(err)
		}
		return cur
	}

	// A is given the new secret first: it accepts it and still sends
	// with the old one until the promotion; B, not given it, reads A all
	// along and never takes it for failed.
	before := unreadable(b)
	if err := a.SetSecret(newS); err != nil {
		t.Fatal(err)
	}
	if n := len(a.keyring.GetKeys()); n != 6 {
		t.Fatalf("A holds %d keys with the new secret pending, want 6 (both secrets' three periods)", n)
	}
	for end := time.Now().Add(promote); time.Now().Before(end) && bytes.Equal(a.keyring.GetPrimaryKey(), primaryOf(oldS)); {
		for _, m := range b.Members() {
			if m.Addr == hostA.String() && m.Status != "alive" {
				t.Fatalf("B takes A for %s while A's new secret is pending", m.Status)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	testutil.Eventually(t, 5*time.Second, "A sends with the new secret after the promotion delay", func() bool {
		return bytes.Equal(a.keyring.GetPrimaryKey(), primaryOf(newS))
	})
	if got := unreadable(b) - before; got != 0 {
		t.Fatalf("B refused %d of A's packets or streams while A's new secret was pending", got)
	}
	// Now A sends what B cannot read: the control of the check above.
	testutil.Eventually(t, 10*time.Second, "B refuses A's packets under the new secret (control)", func() bool { return unreadable(b) > before })
	t.Logf("control: once A sends with the new secret, B (not given it) refused %d of A's packets or streams", unreadable(b)-before)

	// A still reads B (the old secret is accepted) and pulls B's new table.
	publish(b, announce.Table{Endpoints: []announce.Endpoint{ep}})
	testutil.Eventually(t, 10*time.Second, "A (new secret) installs B's table sealed with the old one", func() bool {
		tb, ok := recA.table(hostB)
		return ok && len(tb.Endpoints) == 1
	})
	if err := b.SetSecret(newS); err != nil {
		t.Fatal(err)
	}
	_, recC, _ := startNode(t, "127.0.0.43", newS, seed)
	testutil.Eventually(t, 10*time.Second, "C, holding only the new secret, gets A's and B's tables", func() bool {
		_, okA := recC.table(hostA)
		_, okB := recC.table(hostB)
		return okA && okB
	})
	// A node that holds only the old secret is out once the grace ends;
	// within it, it could still join (which is the point of the grace).
	if n := len(a.keyring.GetKeys()); n != 6 {
		t.Fatalf("during the grace A holds %d keys, want 6 (both secrets' three periods)", n)
	}
	a.keyMu.Lock()
	a.oldUntil = time.Now()
	a.keyMu.Unlock()
	if err := a.rotateKeys(a.KeyPeriod()); err != nil {
		t.Fatal(err)
	}
	if n := len(a.keyring.GetKeys()); n != 3 {
		t.Fatalf("after the grace A holds %d keys, want 3", n)
	}
	if got := a.secrets(); len(got) != 1 || !bytes.Equal(got[0], newS) {
		t.Fatalf("after the grace A accepts %d secrets, want only the new one", len(got))
	}
}

// TestAcceptedSecrets: the middle of a rolling change of the secret. A
// sends with the old secret and accepts the new; B sends with the new and
// accepts the old: each reads the other and installs its table. C holds
// only a third secret: no key of it is accepted, and it installs nothing.
func TestAcceptedSecrets(t *testing.T) {
	oldS := []byte("0123456789abcdef0123456789abcdef")
	newS := []byte("fedcba9876543210fedcba9876543210")
	other := []byte("ffffffffffffffffffffffffffffffff")
	a, recA, portA := startNodeConfig(t, Config{Addr: netip.MustParseAddr("127.0.0.44"), Secret: oldS, Accept: [][]byte{newS}})
	seed := []string{net.JoinHostPort("127.0.0.44", strconv.Itoa(portA))}
	b, recB, _ := startNodeConfig(t, Config{Addr: netip.MustParseAddr("127.0.0.45"), Secret: newS, Accept: [][]byte{oldS}, Seeds: seed})
	hostA, hostB := netip.MustParseAddr("127.0.0.44"), netip.MustParseAddr("127.0.0.45")
	ep := announce.Endpoint{VNI: 7, IP: netip.MustParseAddr("10.0.0.2"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, Created: time.Now()}
	publish(a, announce.Table{Endpoints: []announce.Endpoint{ep}})
	publish(b, announce.Table{Endpoints: []announce.Endpoint{ep}})
	testutil.Eventually(t, 10*time.Second, "A and B install each other's tables", func() bool {
		_, okA := recA.table(hostB)
		_, okB := recB.table(hostA)
		return okA && okB
	})
	if got := a.secrets(); len(got) != 2 || !bytes.Equal(got[0], oldS) || !bytes.Equal(got[1], newS) {
		t.Fatalf("A proves and opens with %d secrets, want its own then the accepted one", len(got))
	}
	if n := len(b.keyring.GetKeys()); n != 6 {
		t.Fatalf("B holds %d gossip keys, want 6 (three periods of each secret)", n)
	}
	_, recC, _ := startNodeConfig(t, Config{Addr: netip.MustParseAddr("127.0.0.46"), Secret: other, Seeds: seed})
	time.Sleep(2 * time.Second)
	if _, ok := recC.table(hostA); ok {
		t.Fatal("C, with neither secret, installed A's table")
	}
	if n := len(a.Members()); n != 2 {
		t.Fatalf("A lists %d members, want 2 (not C)", n)
	}
}

// TestRestartGrace: a member that stops to restart (Close) says so, and the
// others keep its entries for RestartGrace; one that dies without a word
// (serf shut down under it, as a SIGKILL leaves it) is dropped after
// FailGrace.
func TestRestartGrace(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	// The graces are measured from when A finds a member failed, which
	// (memberlist's failure detection) probes every 100 ms make take a
	// second at most, suspicion included. The graces are far enough apart
	// that a member kept for the wrong one shows.
	const (
		failGrace    = 100 * time.Millisecond
		restartGrace = 1200 * time.Millisecond
		// slack is how late the test may see a failure that A acted on, or
		// a drop: polling, and the scheduler under -race.
		slack = 400 * time.Millisecond
	)
	fast := timing{
		probeInterval: 100 * time.Millisecond, probeTimeout: 50 * time.Millisecond, suspicionMaxMult: 2,
		// Close returns once its restart tag is out (tens of
		// milliseconds); were it to give up first, A would take B for
		// crashed.
		broadcastWait: 5 * time.Second,
	}
	start := func(addr string, seeds []string) (*Cluster, *recorder, int) {
		return startNodeConfig(t, Config{Addr: netip.MustParseAddr(addr), Secret: secret, Seeds: seeds, FailGrace: failGrace, RestartGrace: restartGrace, timing: fast})
	}
	a, recA, portA := start("127.0.0.51", nil)
	seed := []string{net.JoinHostPort("127.0.0.51", strconv.Itoa(portA))}
	b, _, _ := start("127.0.0.52", seed)
	c, _, _ := start("127.0.0.53", seed)
	hostB, hostC := netip.MustParseAddr("127.0.0.52"), netip.MustParseAddr("127.0.0.53")
	ep := announce.Endpoint{VNI: 7, IP: netip.MustParseAddr("10.0.0.2"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, Created: time.Now()}
	publish(b, announce.Table{Endpoints: []announce.Endpoint{ep}})
	publish(c, announce.Table{Endpoints: []announce.Endpoint{ep}})
	testutil.Eventually(t, 10*time.Second, "A installs B's and C's tables", func() bool {
		_, okB := recA.table(hostB)
		_, okC := recA.table(hostC)
		return okB && okC
	})
	// kept waits until A finds host failed, then until A drops its entries,
	// and returns how long A kept them after the failure.
	kept := func(host netip.Addr, what string) time.Duration {
		t.Helper()
		testutil.Eventually(t, 10*time.Second, "A finds "+what+" failed", func() bool {
			for _, m := range a.Members() {
				if m.Name == host.String() {
					return m.Status == "failed"
				}
			}
			return false
		})
		failed := time.Now()
		testutil.Eventually(t, restartGrace+10*time.Second, "A drops "+what, func() bool { _, ok := recA.table(host); return !ok })
		return time.Since(failed)
	}

	// C dies without a word.
	c.cancel()
	c.serf.Shutdown()
	c.tr.Shutdown()
	keptC := kept(hostC, "the crashed C")
	t.Logf("crashed C kept %v after its failure", keptC.Round(time.Millisecond))
	if keptC >= restartGrace-slack {
		t.Fatalf("A kept the crashed C %v after its failure: a crash gets FailGrace (%v), not RestartGrace (%v)", keptC, failGrace, restartGrace)
	}

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	keptB := kept(hostB, "the restarting B")
	t.Logf("restarting B kept %v after its failure", keptB.Round(time.Millisecond))
	if keptB < restartGrace-slack {
		t.Fatalf("A dropped the restarting B %v after its failure, before RestartGrace (%v)", keptB, restartGrace)
	}
}

// A small cluster announces within tens of milliseconds; a large one spaces
// its versions so that what each member pulls per second stays flat.
func TestPublishSpacing(t *testing.T) {
	cases := []struct {
		members int
		want    time.Duration
	}{
		{1, 50 * time.Millisecond},
		{3, 60 * time.Millisecond},
		{50, time.Second},
		{500, time.Second},
	}
	for _, tc := range cases {
		if got := publishSpacing(tc.members); got != tc.want {
			t.Errorf("publishSpacing(%d) = %v, want %v", tc.members, got, tc.want)
		}
		// Versions a member hears of per second, from every other host
		// publishing as fast as it may.
		if perSec := float64(tc.members) / publishSpacing(tc.members).Seconds(); tc.members >= 3 && perSec > 500 {
			t.Errorf("%d members: %.0f versions/s reach each member", tc.members, perSec)
		}
	}
}

// TestEpochSurvivesAClockSteppedBack: a restart on a clock an hour behind
// the last run's still versions its tables after the last run's, so that
// peers install them; each run moves the kept epoch on.
func TestEpochSurvivesAClockSteppedBack(t *testing.T) {
	file := filepath.Join(t.TempDir(), "table-epoch")
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	first, err := nextEpoch(file, now)
	if err != nil || first != now.UnixNano() {
		t.Fatalf("first run: epoch %d, %v; want the clock's %d", first, err, now.UnixNano())
	}
	second, err := nextEpoch(file, now.Add(-time.Hour))
	if err != nil || second <= first {
		t.Fatalf("a run with the clock an hour back: epoch %d, %v; want after %d", second, err, first)
	}
	later := now.Add(time.Hour)
	if third, err := nextEpoch(file, later); err != nil || third != later.UnixNano() {
		t.Fatalf("a run with the clock ahead again: epoch %d, %v; want the clock's %d", third, err, later.UnixNano())
	}
	if err := os.WriteFile(file, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := nextEpoch(file, now); err == nil || !strings.Contains(err.Error(), file) {
		t.Fatalf("a damaged epoch file: err %v, want one naming %s", err, file)
	}
	// Through Start: the cluster's first version is the kept epoch's.
	if err := os.WriteFile(file, []byte(strconv.FormatInt(time.Now().Add(time.Hour).UnixNano(), 10)), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _, _ := startNodeConfig(t, Config{Addr: netip.MustParseAddr("127.0.0.81"), EpochFile: file})
	c.mu.Lock()
	v := c.local.Version
	c.mu.Unlock()
	if v.Epoch <= time.Now().Add(59*time.Minute).UnixNano() {
		t.Fatalf("Start's version %v ignores the kept epoch an hour ahead of the clock", v)
	}
}

// TestFailedPullRetried: a pull that fails on the way (the member refused
// the connection: too many waiting to authenticate when every member pulls
// one new version at once) is tried again within a second, not at the
// next anti-entropy pass, here an hour away; the control: with the retry's
// one failure spent too, the table comes only then.
func TestFailedPullRetried(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	for _, tc := range []struct {
		name    string
		ip, ipB string
		failing int32
		within  time.Duration // 0: the control
	}{
		{"one-failure-retried", "127.0.0.61", "127.0.0.62", 1, 5 * time.Second},
		{"control-every-try-fails", "127.0.0.63", "127.0.0.64", 1 << 20, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ip, ipB := tc.ip, tc.ipB
			// A sends no deltas: the table must come by a pull.
			a, _, portA := startNodeConfig(t, Config{Addr: netip.MustParseAddr(ip), Secret: secret, timing: timing{antiEntropy: time.Hour, noDeltas: true}})
			fail := &atomic.Int32{}
			_, recB, _ := startNodeConfig(t, Config{Addr: netip.MustParseAddr(ipB), Secret: secret,
				Seeds: []string{net.JoinHostPort(ip, strconv.Itoa(portA))}, timing: timing{antiEntropy: time.Hour, failPulls: fail}})
			hostA := netip.MustParseAddr(ip)
			testutil.Eventually(t, 10*time.Second, "B installs A's first table", func() bool { _, ok := recB.table(hostA); return ok })
			fail.Store(tc.failing)
			ep := announce.Endpoint{VNI: 7, IP: netip.MustParseAddr("10.0.0.2"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, Created: time.Now()}
			publish(a, announce.Table{Endpoints: []announce.Endpoint{ep}})
			has := func() bool { tb, _ := recB.table(hostA); return len(tb.Endpoints) == 1 }
			if tc.within > 0 {
				testutil.Eventually(t, tc.within, "B installs A's new table after one failed pull", has)
				if n := fail.Load(); n >= 0 {
					t.Fatalf("the failure left to spend: %d; the table came without the failed pull", n)
				}
				return
			}
			time.Sleep(3 * time.Second)
			if has() {
				t.Fatal("control: B installed A's table although every pull failed")
			}
			if n := tc.failing - fail.Load(); n < 2 || n > 12 {
				t.Fatalf("control: %d pulls tried in 3 s, want a few retries (one at a time, 250 ms to 1 s apart)", n)
			}
		})
	}
}
