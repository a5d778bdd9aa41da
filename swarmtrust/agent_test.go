package swarmtrust

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vxsec/vxsec/internal/testutil"
	"github.com/vxsec/vxsec/swarmtrust/testpki"
)

const cluster = "4ysau5tb8zvin96awunf1fc7g"

// swarm is a test swarm: node i listens on 127.0.1.i.
type swarm struct {
	t        *testing.T
	ca       *testpki.CA
	port     int
	managers []testpki.Manager
}

func newSwarm(t *testing.T, managers ...string) *swarm {
	ca, err := testpki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	s := &swarm{t: t, ca: ca, port: testutil.FreePort(t)}
	for i, id := range managers {
		s.managers = append(s.managers, testpki.Manager{NodeID: id, Addr: "127.0.1." + strconv.Itoa(i+1) + ":2377"})
	}
	return s
}

func (s *swarm) addr(i int) netip.Addr { return netip.MustParseAddr("127.0.1." + strconv.Itoa(i)) }

// node writes node i's directory (issued by ca) and returns it.
func (s *swarm) node(ca *testpki.CA, i int, id, role, clusterID string) string {
	dir := s.t.TempDir()
	if err := ca.Write(testpki.Node{Dir: dir, Cluster: clusterID, ID: id, Role: role, Managers: s.managers}); err != nil {
		s.t.Fatal(err)
	}
	return dir
}

// agent starts an agent on dir, listening on 127.0.1.i.
func (s *swarm) agent(dir string, i int, keep string) *Agent {
	s.t.Helper()
	a, err := New(Config{
		Dir: dir, Addr: s.addr(i), Port: s.port, SecretFile: keep,
		Interval: 300 * time.Millisecond, GenerateAfter: 2 * time.Second,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		s.t.Fatal(err)
	}
	return s.run(a)
}

func secretOf(t *testing.T, a *Agent, within time.Duration) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	s, err := a.Secret(ctx)
	if err != nil {
		t.Fatalf("no secret within %v: %v (status %+v)", within, err, a.Status())
	}
	return s
}

// waitLong bounds what the tests wait for (testutil.Until).
const waitLong = 10 * time.Second

// refusedOver returns a condition: a's refusals counted past before.
func refusedOver(a *Agent, before int) func() error {
	return func() error {
		if st := a.Status(); st.Refused <= before {
			return fmt.Errorf("refused %d, last %q", st.Refused, st.LastRefusal)
		}
		return nil
	}
}

func TestReadNode(t *testing.T) {
	s := newSwarm(t, "m1", "m2")
	dir := s.node(s.ca, 1, "m1", RoleManager, cluster)
	n, err := ReadNode(dir)
	if err != nil {
		t.Fatal(err)
	}
	if n.ID != "m1" || n.Role != RoleManager || n.ClusterID != cluster || len(n.Managers) != 2 || n.Managers[1].Host() != "127.0.1.2" {
		t.Fatalf("node = %+v", n)
	}
	if _, err := ReadNode(t.TempDir()); !errors.Is(err, ErrNotInSwarm) {
		t.Fatalf("empty dir: err = %v, want ErrNotInSwarm", err)
	}
	if err := testpki.Lock(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := loadCredentials(dir); !errors.Is(err, ErrLocked) {
		t.Fatalf("locked key: err = %v, want ErrLocked", err)
	}
	if !lowestManager("m1", n.Managers) || lowestManager("m2", n.Managers) {
		t.Fatal("lowestManager: m1 makes the secret, m2 does not")
	}
}

// TestAgreement: the first manager makes the secret; the other manager and
// a worker (which never makes one) get it over mutual TLS.
func TestAgreement(t *testing.T) {
	s := newSwarm(t, "m1", "m2")
	w := s.agent(s.node(s.ca, 3, "w3", RoleWorker, cluster), 3, "")
	m2 := s.agent(s.node(s.ca, 2, "m2", RoleManager, cluster), 2, "")
	m1 := s.agent(s.node(s.ca, 1, "m1", RoleManager, cluster), 1, "")
	sec := secretOf(t, m1, 5*time.Second)
	for name, a := range map[string]*Agent{"m2": m2, "w3": w} {
		if got := secretOf(t, a, 5*time.Second); !bytes.Equal(got, sec) {
			t.Fatalf("%s holds another secret than m1", name)
		}
	}
	if st := m1.Status(); st.SecretBy != "m1" || st.NodeID != "m1" || st.Role != RoleManager {
		t.Fatalf("m1 status = %+v", st)
	}
}

// TestAttackOutsiders: a certificate of another CA, or of another
// swarm under the same CA, gets no secret and is counted as refused; and a
// node does not trust a server that is not the manager it expected.
func TestAttackOutsiders(t *testing.T) {
	s := newSwarm(t, "m1")
	m1 := s.agent(s.node(s.ca, 1, "m1", RoleManager, cluster), 1, "")
	secretOf(t, m1, 5*time.Second)
	other, err := testpki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		name string
		ca   *testpki.CA
		clu  string
	}{{"another CA", other, cluster}, {"another swarm, same CA", s.ca, "otherswarm0000000000000000"}} {
		x := s.agent(s.node(tc.ca, 5+i, "x"+strconv.Itoa(i), RoleManager, tc.clu), 5+i, "")
		// The outsider's first round is over: it has tried m1 (an
		// exchange's adoption comes before the round's status).
		testutil.Until(t, waitLong, tc.name+": the outsider's round with m1", func() error {
			if st := x.Status(); len(st.Exchanges) == 0 {
				return fmt.Errorf("no exchange yet (status %+v)", st)
			}
			return nil
		})
		st := x.Status()
		if x.hasSecret() && st.SecretBy == "m1" {
			t.Fatalf("%s: the outsider learned the swarm's secret", tc.name)
		}
		if st.Exchanges[0].Err == "" {
			t.Fatalf("%s: the outsider's exchange with m1 succeeded (status %+v)", tc.name, st)
		}
	}
	// m1 counts a refusal once its side of the handshake is over, which
	// may be just after the outsider's.
	testutil.Until(t, waitLong, "m1 refused both outsiders", refusedOver(m1, 1))

	// The server's own check, with clients that do not check it back: no
	// certificate, another CA's, another swarm's. None reads a secret.
	otherDir := s.node(other, 8, "m1", RoleManager, cluster)
	swarmDir := s.node(s.ca, 9, "m1", RoleManager, "otherswarm0000000000000000")
	for _, tc := range []struct {
		name string
		dir  string
	}{{"no certificate", ""}, {"another CA", otherDir}, {"another swarm", swarmDir}} {
		cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
		if tc.dir != "" {
			creds, err := loadCredentials(tc.dir)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{creds.cert}
		}
		before := m1.Status().Refused
		conn, err := tls.Dial("tcp", net.JoinHostPort(s.addr(1).String(), strconv.Itoa(s.port)), cfg)
		if err == nil {
			conn.Write([]byte(`{"v":1,"cluster":"` + cluster + `","record":null}` + "\n"))
			conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			_, err = receive(conn)
			conn.Close()
		}
		if err == nil {
			t.Fatalf("%s: the server answered", tc.name)
		}
		testutil.Until(t, waitLong, tc.name+": counted as refused", refusedOver(m1, before))
	}
}

// TestNewestWins: nodes holding different records (kept from before)
// converge on the highest generation, and the node that switches is told
// so; at one generation, on the lower hash of the secret.
func TestNewestWins(t *testing.T) {
	s := newSwarm(t, "m1", "m2")
	d1, d2 := s.node(s.ca, 1, "m1", RoleManager, cluster), s.node(s.ca, 2, "m2", RoleManager, cluster)
	newer := s.issue(d2, bytes.Repeat([]byte{1}, 32), 5)
	older := s.issue(d1, bytes.Repeat([]byte{2}, 32), 3)
	m1 := s.agent(d1, 1, s.keep(older))
	m2 := s.agent(d2, 2, s.keep(newer))
	select {
	case got := <-m1.Changed():
		if !bytes.Equal(got, newer.Secret) {
			t.Fatal("m1 changed to a secret that is not the newest")
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("m1 kept the older secret (status %+v)", m1.Status())
	}
	if got := secretOf(t, m2, time.Second); !bytes.Equal(got, newer.Secret) {
		t.Fatal("m2 left the newest secret")
	}
	if st := m1.Status(); st.SecretGeneration != 5 || st.SecretBy != "m2" {
		t.Fatalf("m1's status %+v: want generation 5 issued by m2", st)
	}
	// A restarted m1 reads the secret it adopted.
	raw, err := os.ReadFile(m1.cfg.SecretFile)
	if err != nil || !bytes.Contains(raw, []byte(b64(newer.Secret))) {
		t.Fatalf("m1 did not keep the adopted secret: %s %v", raw, err)
	}

	a, b := s.issue(d1, bytes.Repeat([]byte{3}, 32), 7), s.issue(d2, bytes.Repeat([]byte{4}, 32), 7)
	if a.newer(b) == b.newer(a) {
		t.Fatal("two records of one generation: exactly one must be the newer")
	}
	if a.newer(a) || older.newer(newer) || !newer.newer(older) {
		t.Fatal("newer: a record is not newer than itself, and generation 5 is newer than 3")
	}
}

// TestKeptSecretIsTheLatest: adoptions racing (exchanges with several
// peers at once) leave the kept file and Changed with the record adopted
// last, never an earlier one, although both are written outside the lock.
func TestKeptSecretIsTheLatest(t *testing.T) {
	s := newSwarm(t, "m1")
	keep := filepath.Join(t.TempDir(), "secret.json")
	dir := s.node(s.ca, 1, "m1", RoleManager, cluster)
	creds, err := loadCredentials(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Dir: dir, Addr: s.addr(1), Port: s.port, SecretFile: keep, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	a.consider(message{Version: protocolVersion, Cluster: cluster, Record: s.issue(dir, bytes.Repeat([]byte{0xff}, SecretBytes), 1)}, "first", creds)
	secretOf(t, a, time.Second)
	const n = 64
	recs := make([]*record, n)
	for i := range n {
		recs[i] = s.issue(dir, bytes.Repeat([]byte{byte(i)}, SecretBytes), uint64(2+i))
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.consider(message{Version: protocolVersion, Cluster: cluster, Record: recs[i]}, "peer"+strconv.Itoa(i), creds)
		}()
	}
	wg.Wait()
	newest := recs[n-1].Secret // the highest generation wins
	if got := secretOf(t, a, time.Second); !bytes.Equal(got, newest) {
		t.Fatalf("the agent holds %x, want the newest", got[:4])
	}
	raw, err := os.ReadFile(keep)
	if err != nil || !bytes.Contains(raw, []byte(b64(newest))) {
		t.Fatalf("the kept file does not hold the latest record: %s %v", raw, err)
	}
	select {
	case got := <-a.Changed():
		if !bytes.Equal(got, newest) {
			t.Fatalf("Changed holds %x, want the latest record", got[:4])
		}
	default:
		t.Fatal("Changed holds nothing after the node changed its secret")
	}
}

// TestRenewalAndRootRotation: swarm renews node certificates and rotates
// its root CA under running agents; exchanges go on, including while one
// node has moved to the new CA (cross-signed chain) and one has not.
func TestRenewalAndRootRotation(t *testing.T) {
	s := newSwarm(t, "m1", "m2")
	d1, d2 := s.node(s.ca, 1, "m1", RoleManager, cluster), s.node(s.ca, 2, "m2", RoleManager, cluster)
	m1, m2 := s.agent(d1, 1, ""), s.agent(d2, 2, "")
	secretOf(t, m2, 5*time.Second)
	fresh := func(a *Agent, since time.Time) func() error {
		return func() error {
			st := a.Status()
			if len(st.Exchanges) != 1 || !st.Exchanges[0].At.After(since) || st.Exchanges[0].Err != "" {
				return fmt.Errorf("%s's exchanges since %s: %+v", st.NodeID, since.Format("15:04:05.000"), st.Exchanges)
			}
			return nil
		}
	}
	// Renewal: new key and certificate, same CA.
	now := time.Now()
	if err := s.ca.Write(testpki.Node{Dir: d1, Cluster: cluster, ID: "m1", Role: RoleManager, Managers: s.managers}); err != nil {
		t.Fatal(err)
	}
	testutil.Until(t, waitLong, "m2 exchanges with the renewed m1", fresh(m2, now))
	testutil.Until(t, waitLong, "the renewed m1 exchanges with m2", fresh(m1, now))

	// Mid-rotation: m1 has a certificate of the new CA plus the
	// cross-signed intermediate and trusts both roots; m2 is unchanged.
	next, err := testpki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	cross, err := s.ca.CrossSign(next)
	if err != nil {
		t.Fatal(err)
	}
	now = time.Now()
	if err := next.Write(testpki.Node{Dir: d1, Cluster: cluster, ID: "m1", Role: RoleManager, Managers: s.managers,
		Chain: []*x509.Certificate{cross}, Roots: []*x509.Certificate{s.ca.Cert, next.Cert}}); err != nil {
		t.Fatal(err)
	}
	testutil.Until(t, waitLong, "m2 (old root) accepts m1's cross-signed chain", fresh(m2, now))
	testutil.Until(t, waitLong, "m1 (both roots) accepts m2", fresh(m1, now))

	// Rotation done: both on the new CA only.
	now = time.Now()
	for i, d := range []string{d1, d2} {
		if err := next.Write(testpki.Node{Dir: d, Cluster: cluster, ID: "m" + strconv.Itoa(i+1), Role: RoleManager, Managers: s.managers}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Until(t, waitLong, "m1 and m2 exchange under the new root", func() error { return errors.Join(fresh(m1, now)(), fresh(m2, now)()) })
	if !bytes.Equal(secretOf(t, m1, time.Second), secretOf(t, m2, time.Second)) {
		t.Fatal("m1 and m2 hold different secrets after the rotation")
	}
}

// TestLockedNodeDoesNotStart: autolock leaves no usable key; the agent
// reports it instead of pretending.
func TestLockedNodeNoIdentity(t *testing.T) {
	s := newSwarm(t, "m1")
	dir := s.node(s.ca, 1, "m1", RoleManager, cluster)
	if err := testpki.Lock(dir); err != nil {
		t.Fatal(err)
	}
	a := s.agent(dir, 1, "")
	testutil.Until(t, waitLong, "the agent reports the locked key", func() error {
		if st := a.Status(); st.Err != ErrLocked.Error() {
			return fmt.Errorf("status error %q", st.Err)
		}
		return nil
	})
	if a.hasSecret() {
		t.Fatal("a node without a usable identity made a secret")
	}
}

func b64(b []byte) string {
	return base64.StdEncoding.EncodeToString(b)
}

// agentWith starts an agent with the given trust port limits.
func (s *swarm) agentWith(dir string, i int, lim portLimits) *Agent {
	s.t.Helper()
	a, err := New(Config{
		Dir: dir, Addr: s.addr(i), Port: s.port,
		Interval: 300 * time.Millisecond, GenerateAfter: 2 * time.Second,
		Log:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
		limits: &lim,
	})
	if err != nil {
		s.t.Fatal(err)
	}
	return s.run(a)
}

// silent opens a connection to the trust port that sends nothing, as a
// stranger holding a handshake open does.
func silent(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// closedWithin reports whether the server closed conn within d, having
// sent nothing.
func closedWithin(conn net.Conn, d time.Duration) bool {
	conn.SetReadDeadline(time.Now().Add(d))
	n, err := io.Copy(io.Discard, conn)
	var ne net.Error
	return n == 0 && !(errors.As(err, &ne) && ne.Timeout())
}

// TestTrustPortCaps: handshakes and connections beyond their bounds are
// refused at once (and counted), a handshake has a deadline, and a node
// of the swarm is served once the strangers are gone.
func TestTrustPortCaps(t *testing.T) {
	s := newSwarm(t, "m1")
	lim := defaultPortLimits
	lim.handshakes, lim.handshakeTimeout = 2, time.Second
	m1 := s.agentWith(s.node(s.ca, 1, "m1", RoleManager, cluster), 1, lim)
	secretOf(t, m1, 5*time.Second)
	addr := net.JoinHostPort(s.addr(1).String(), strconv.Itoa(s.port))

	refused, held := refuseOneOf(t, m1, addr, 3, errHandshakes.Error())
	if !closedWithin(refused, 500*time.Millisecond) {
		t.Fatal("the refused handshake was not closed at once")
	}
	start := time.Now()
	for _, c := range held {
		if !closedWithin(c, 2*time.Second) {
			t.Fatal("a silent handshake outlived its deadline")
		}
	}
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Fatalf("silent handshakes closed after %v, deadline 1s", took)
	}
	// A node of the swarm gets the secret once the strangers are gone.
	w := s.agent(s.node(s.ca, 2, "w2", RoleWorker, cluster), 2, "")
	if !bytes.Equal(secretOf(t, w, 5*time.Second), secretOf(t, m1, time.Second)) {
		t.Fatal("the worker holds another secret")
	}
}

func TestTrustPortConnectionCap(t *testing.T) {
	s := newSwarm(t, "m1")
	lim := defaultPortLimits
	lim.conns.Pending, lim.handshakeTimeout = 2, time.Second
	m1 := s.agentWith(s.node(s.ca, 1, "m1", RoleManager, cluster), 1, lim)
	secretOf(t, m1, 5*time.Second)
	addr := net.JoinHostPort(s.addr(1).String(), strconv.Itoa(s.port))
	refused, _ := refuseOneOf(t, m1, addr, 3, "too many connections")
	if !closedWithin(refused, 500*time.Millisecond) {
		t.Fatal("the refused connection was not closed at once")
	}
}

// refuseOneOf opens n silent connections to a's trust port, of which the
// server should refuse one, for reason, and hold the others. Which one is
// the server's to say (the last it accepts), not the order they were
// dialled in: its refusal, counted and naming the connection, is the
// signal to wait for. It returns the refused connection and the others.
func refuseOneOf(t *testing.T, a *Agent, addr string, n int, reason string) (refused net.Conn, held []net.Conn) {
	t.Helper()
	before := a.Status().Refused
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = silent(t, addr)
	}
	var st Status
	testutil.Until(t, waitLong, "one of the connections refused: "+reason, func() error {
		if st = a.Status(); st.Refused != before+1 || !strings.Contains(st.LastRefusal, reason) {
			return fmt.Errorf("refused %d (%d before), last %q", st.Refused, before, st.LastRefusal)
		}
		return nil
	})
	for _, c := range conns {
		if strings.HasPrefix(st.LastRefusal, c.LocalAddr().String()+": ") {
			refused = c
		} else {
			held = append(held, c)
		}
	}
	if refused == nil {
		t.Fatalf("the refusal %q names none of the connections", st.LastRefusal)
	}
	return refused, held
}

// TestHandshakeReadsBounded: before its certificate is verified, a peer
// makes the server read no more than handshakeBytes, however long the
// handshake message it claims to send.
func TestHandshakeReadsBounded(t *testing.T) {
	s := newSwarm(t, "m1")
	a, err := New(Config{Dir: s.node(s.ca, 1, "m1", RoleManager, cluster), Addr: s.addr(1), Port: s.port,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.serveConn(context.Background(), server, make(chan struct{}, 1))
	}()
	// A ClientHello claiming 60000 bytes, sent in full-size records.
	msg := append([]byte{1, 0, 0xea, 0x60}, make([]byte, 60000)...)
	var stream []byte
	for len(msg) > 0 {
		n := min(len(msg), 16384)
		stream = append(stream, 0x16, 3, 1, byte(n>>8), byte(n))
		stream = append(stream, msg[:n]...)
		msg = msg[n:]
	}
	client.SetWriteDeadline(time.Now().Add(5 * time.Second))
	written, _ := client.Write(stream) // net.Pipe: written is what the server read
	client.Close()
	<-done
	if written > int(defaultPortLimits.handshakeBytes) {
		t.Fatalf("the server read %d bytes of an unverified handshake, bound %d", written, defaultPortLimits.handshakeBytes)
	}
	if st := a.Status(); st.Refused != 1 || !strings.Contains(st.LastRefusal, "handshake") {
		t.Fatalf("status %+v: want the handshake refused", st)
	}
	t.Logf("read %d of %d bytes sent", written, len(stream))
}

// run runs the agent until the test ends, and fails the test if Run did.
func (s *swarm) run(a *Agent) *Agent {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	s.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			s.t.Error(err)
		}
	})
	return a
}
