package gossip

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vxsec/vxsec/internal/testutil"
)

func TestVersion(t *testing.T) {
	cases := []struct {
		a, b Version
		less bool
	}{
		{Version{1, 5}, Version{1, 6}, true},
		{Version{1, 6}, Version{1, 5}, false},
		{Version{1, 99}, Version{2, 0}, true}, // a restart always moves forward
		{Version{2, 0}, Version{1, 99}, false},
		{Version{1, 1}, Version{1, 1}, false},
		{Version{}, Version{0, 1}, true},
	}
	for _, tc := range cases {
		if got := tc.a.Less(tc.b); got != tc.less {
			t.Errorf("%v.Less(%v) = %v, want %v", tc.a, tc.b, got, tc.less)
		}
		back, err := ParseVersion(tc.a.String())
		if err != nil || back != tc.a {
			t.Errorf("ParseVersion(%q) = %v, %v", tc.a.String(), back, err)
		}
	}
	for _, bad := range []string{"", "1", "1.x", "a.1", "1.-1"} {
		if _, err := ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%q): want an error", bad)
		}
	}
}

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
	mu      sync.Mutex
	tables  map[netip.Addr]Table
	history []Table
	dropped []netip.Addr
	members []netip.Addr
}

func (r *recorder) SetRemote(t Table) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tables[t.Host] = t
	r.history = append(r.history, t)
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

func (r *recorder) table(h netip.Addr) (Table, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.tables[h]
	return t, ok
}

// startNode runs a real serf cluster member on a loopback address of its own.
func startNode(t *testing.T, addr string, secret []byte, seeds []string) (*Cluster, *recorder, int) {
	t.Helper()
	return startNodeConfig(t, Config{Addr: netip.MustParseAddr(addr), Secret: secret, Seeds: seeds})
}

func startNodeConfig(t *testing.T, cfg Config) (*Cluster, *recorder, int) {
	t.Helper()
	port := testutil.FreePort(t)
	rec := &recorder{tables: map[netip.Addr]Table{}}
	cfg.Port, cfg.Sink, cfg.FailGrace = port, rec, 500*time.Millisecond
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	c, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, rec, port
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 15*time.Second, what, cond)
}

func TestClusterExchangesTables(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	a, recA, portA := startNode(t, "127.0.0.11", secret, nil)
	seed := []string{net.JoinHostPort("127.0.0.11", strconv.Itoa(portA))}
	b, recB, _ := startNode(t, "127.0.0.12", secret, seed)
	hostA, hostB := netip.MustParseAddr("127.0.0.11"), netip.MustParseAddr("127.0.0.12")

	ep := EndpointRecord{VNI: 7, IP: netip.MustParseAddr("10.0.0.2"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, Created: time.Now()}
	a.Publish(Table{Endpoints: []EndpointRecord{ep}})
	eventually(t, "B installs A's table", func() bool {
		tb, ok := recB.table(hostA)
		return ok && len(tb.Endpoints) == 1 && tb.Endpoints[0].IP == ep.IP
	})
	// A newer version replaces the old; an endpoint removed is gone.
	a.Publish(Table{})
	eventually(t, "B installs A's emptied table", func() bool {
		tb, ok := recB.table(hostA)
		return ok && len(tb.Endpoints) == 0
	})
	b.Publish(Table{Endpoints: []EndpointRecord{ep}})
	eventually(t, "A installs B's table", func() bool { _, ok := recA.table(hostB); return ok })
	eventually(t, "both see two members", func() bool {
		recA.mu.Lock()
		defer recA.mu.Unlock()
		return len(recA.members) == 2
	})

	// A late joiner gets every table, not only the changes it witnessed.
	_, recC, _ := startNode(t, "127.0.0.13", secret, seed)
	eventually(t, "late joiner C installs B's table", func() bool { _, ok := recC.table(hostB); return ok })

	// A node without the secret joins nobody and learns nothing.
	_, recX, _ := startNode(t, "127.0.0.14", []byte("another secret, 32 bytes long!!!"), seed)
	time.Sleep(2 * time.Second)
	if _, ok := recX.table(hostB); ok {
		t.Fatal("a node with the wrong secret learned a table")
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
	eventually(t, "A drops B after its leave", func() bool { _, ok := recA.table(hostB); return !ok })
}

// TestRestartAnnouncesItsTable: a daemon that restarts with endpoints must
// never announce an empty table, not even for a moment, or its peers would
// drop endpoints whose data path never stopped.
func TestRestartAnnouncesItsTable(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	_, recA, portA := startNode(t, "127.0.0.21", secret, nil)
	seed := []string{net.JoinHostPort("127.0.0.21", strconv.Itoa(portA))}
	hostB := netip.MustParseAddr("127.0.0.22")
	ep := EndpointRecord{VNI: 9, IP: netip.MustParseAddr("10.0.0.9"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 9}, Created: time.Now()}
	startNodeConfig(t, Config{Addr: hostB, Secret: secret, Seeds: seed, Table: Table{Endpoints: []EndpointRecord{ep}}})
	eventually(t, "A installs B's table", func() bool { _, ok := recA.table(hostB); return ok })
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
	const period = 700 * time.Millisecond
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
	eventually(t, "A and B see each other", alive(a, 2))
	first := a.KeyPeriod()
	primary := a.keyring.GetPrimaryKey()
	time.Sleep(4 * period)
	if a.KeyPeriod() < first+3 {
		t.Fatalf("key period moved from %d to %d in %v, want at least 3 rotations", first, a.KeyPeriod(), 4*period)
	}
	if bytes.Equal(a.keyring.GetPrimaryKey(), primary) {
		t.Fatal("the primary gossip key did not change")
	}
	if n := len(a.keyring.GetKeys()); n != 3 {
		t.Fatalf("keyring holds %d keys, want 3 (previous, current, next)", n)
	}
	eventually(t, "A and B still members after the rotations", alive(a, 2))
	eventually(t, "B too", alive(b, 2))
	c, _, _ := startNodeConfig(t, Config{Addr: netip.MustParseAddr("127.0.0.33"), Secret: secret, Seeds: seed, KeyPeriod: period})
	eventually(t, "late joiner C gets in with the secret", alive(c, 3))
}

// TestSetSecret: swarm nodes that agreed another secret move the running
// cluster onto it. Members already switched and members not yet switched
// still exchange tables (the old secret is accepted for a grace period),
// and a node that holds only the new secret gets in.
func TestSetSecret(t *testing.T) {
	oldS := []byte("0123456789abcdef0123456789abcdef")
	newS := []byte("fedcba9876543210fedcba9876543210")
	a, recA, portA := startNode(t, "127.0.0.41", oldS, nil)
	seed := []string{net.JoinHostPort("127.0.0.41", strconv.Itoa(portA))}
	b, recB, _ := startNode(t, "127.0.0.42", oldS, seed)
	hostA, hostB := netip.MustParseAddr("127.0.0.41"), netip.MustParseAddr("127.0.0.42")
	ep := EndpointRecord{VNI: 7, IP: netip.MustParseAddr("10.0.0.2"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, Created: time.Now()}
	a.Publish(Table{Endpoints: []EndpointRecord{ep}})
	eventually(t, "B installs A's table under the old secret", func() bool { _, ok := recB.table(hostA); return ok })

	// A switches first: it still reads B (old secret accepted) and pulls
	// B's new table.
	if err := a.SetSecret(newS); err != nil {
		t.Fatal(err)
	}
	b.Publish(Table{Endpoints: []EndpointRecord{ep}})
	eventually(t, "A (new secret) installs B's table sealed with the old one", func() bool {
		tb, ok := recA.table(hostB)
		return ok && len(tb.Endpoints) == 1
	})
	if err := b.SetSecret(newS); err != nil {
		t.Fatal(err)
	}
	_, recC, _ := startNode(t, "127.0.0.43", newS, seed)
	eventually(t, "C, holding only the new secret, gets A's and B's tables", func() bool {
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

// TestRestartGrace: a member that stops to restart (Close) says so, and the
// others keep its entries for RestartGrace; one that dies without a word
// (serf shut down under it, as a SIGKILL leaves it) is dropped after
// FailGrace.
func TestRestartGrace(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	const restartGrace = 6 * time.Second
	start := func(addr string, seeds []string) (*Cluster, *recorder, int) {
		return startNodeConfig(t, Config{Addr: netip.MustParseAddr(addr), Secret: secret, Seeds: seeds, RestartGrace: restartGrace})
	}
	_, recA, portA := start("127.0.0.51", nil)
	seed := []string{net.JoinHostPort("127.0.0.51", strconv.Itoa(portA))}
	b, _, _ := start("127.0.0.52", seed)
	c, _, _ := start("127.0.0.53", seed)
	hostB, hostC := netip.MustParseAddr("127.0.0.52"), netip.MustParseAddr("127.0.0.53")
	ep := EndpointRecord{VNI: 7, IP: netip.MustParseAddr("10.0.0.2"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, Created: time.Now()}
	b.Publish(Table{Endpoints: []EndpointRecord{ep}})
	c.Publish(Table{Endpoints: []EndpointRecord{ep}})
	eventually(t, "A installs B's and C's tables", func() bool {
		_, okB := recA.table(hostB)
		_, okC := recA.table(hostC)
		return okB && okC
	})

	// C dies without a word.
	crashed := time.Now()
	c.cancel()
	c.serf.Shutdown()
	c.tr.Shutdown()
	eventually(t, "A drops the crashed C after FailGrace", func() bool { _, ok := recA.table(hostC); return !ok })
	detect := time.Since(crashed)
	t.Logf("crashed C dropped after %v", detect.Round(time.Millisecond))

	stopped := time.Now()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(detect + time.Second)
	if _, ok := recA.table(hostB); !ok {
		t.Fatalf("A dropped the restarting B within %v, as fast as a crashed member", time.Since(stopped))
	}
	deadline := time.Now().Add(restartGrace + 20*time.Second)
	for {
		if _, ok := recA.table(hostB); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("A never dropped the restarting B")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if took := time.Since(stopped); took < restartGrace {
		t.Fatalf("A dropped B after %v, before RestartGrace (%v)", took, restartGrace)
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
