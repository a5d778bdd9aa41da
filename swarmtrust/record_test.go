package swarmtrust

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vxsec/vxsec/internal/testutil"
	"github.com/vxsec/vxsec/swarmtrust/testpki"
)

// issue signs secret as generation gen with the node key in dir.
func (s *swarm) issue(dir string, secret []byte, gen uint64) *record {
	s.t.Helper()
	creds, err := loadCredentials(dir)
	if err != nil {
		s.t.Fatal(err)
	}
	r, err := issue(creds, secret, gen)
	if err != nil {
		s.t.Fatal(err)
	}
	return r
}

// keep writes r as a kept secret file and returns its path.
func (s *swarm) keep(r *record) string {
	s.t.Helper()
	f := filepath.Join(s.t.TempDir(), "secret.json")
	b, _ := json.Marshal(savedFile{Cluster: cluster, Record: r})
	if err := os.WriteFile(f, b, 0o600); err != nil {
		s.t.Fatal(err)
	}
	return f
}

// offer is one exchange as a client: the node in dir (an attacker with a
// node certificate of the swarm, or a relay) sends r to node i.
func (s *swarm) offer(dir string, i int, r *record) error {
	creds, err := loadCredentials(dir)
	if err != nil {
		return err
	}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: dialTimeout}, Config: creds.clientConfig("")}
	conn, err := d.Dial("tcp", net.JoinHostPort(s.addr(i).String(), strconv.Itoa(s.port)))
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	b, _ := json.Marshal(message{Version: protocolVersion, Cluster: cluster, Record: r})
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return err
	}
	_, err = receive(conn)
	return err
}

// TestAttackSecretRecords: only a current manager of this swarm can hand the
// cluster a secret, and nothing rolls it back. A worker (a node of the
// swarm: it passes the mutual TLS) offers the manager m1 and the worker w3
// records it made or altered; each is refused and counted, and the secret
// stays. A replayed older record is ignored. The positive control: the
// same worker relaying a genuine newer record over the same path gets it
// adopted by both.
func TestAttackSecretRecords(t *testing.T) {
	s := newSwarm(t, "m1", "m2")
	d1, d2 := s.node(s.ca, 1, "m1", RoleManager, cluster), s.node(s.ca, 2, "m2", RoleManager, cluster)
	// One attacker makes many exchanges in a row: past the per-source
	// rate, which TestTrustPortConnectionCap tests.
	lim := defaultPortLimits
	lim.conns.SourceRate, lim.conns.SourceBurst = 1000, 1000
	m1 := s.agentWith(d1, 1, lim)
	w3 := s.agentWith(s.node(s.ca, 3, "w3", RoleWorker, cluster), 3, lim)
	secret := secretOf(t, m1, 5*time.Second)
	testutil.Until(t, waitLong, "w3 holds m1's secret", func() error {
		if !w3.hasSecret() || !bytes.Equal(secretOf(t, w3, time.Second), secret) {
			return fmt.Errorf("w3's status %+v", w3.Status())
		}
		return nil
	})
	gen := m1.Status().SecretGeneration

	attacker := s.node(s.ca, 4, "w4", RoleWorker, cluster)
	removed := s.node(s.ca, 5, "m9", RoleManager, cluster) // a manager's certificate; state.json no longer names m9
	otherSwarm := s.node(s.ca, 6, "m1", RoleManager, "otherswarm0000000000000000")
	expired := s.t.TempDir()
	if err := s.ca.Write(testpki.Node{Dir: expired, Cluster: cluster, ID: "m2", Role: RoleManager, Managers: s.managers, NotAfter: time.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	evil := bytes.Repeat([]byte{0xee}, SecretBytes)
	genuine := s.issue(d2, secret, gen) // m2's record of the secret in use, to alter

	// The worker's own signature: issue refuses a worker, so sign as if.
	workerSigned := func(by string) *record {
		creds, err := loadCredentials(attacker)
		if err != nil {
			t.Fatal(err)
		}
		creds.node.Role = RoleManager // the attacker's build skips the check
		r, err := issue(creds, evil, math.MaxUint64)
		if err != nil {
			t.Fatal(err)
		}
		r.By = by
		return r
	}
	tampered := *genuine
	tampered.Secret, tampered.Generation = evil, math.MaxUint64
	unsigned := &record{Secret: evil, Generation: math.MaxUint64, By: "m1"}
	stolenChain := *workerSigned("m2")
	stolenChain.Chain = genuine.Chain // m2's certificate, the worker's signature

	for _, tc := range []struct {
		name, why string
		r         *record
	}{
		{"a worker pins its own secret", "only managers", workerSigned("w4")},
		{"a worker signs in a manager's name", "w4, a swarm-worker", workerSigned("m1")},
		{"a worker presents a manager's certificate", "signature", &stolenChain},
		{"a manager's record altered", "signature", &tampered},
		{"an unsigned record", "not signed", unsigned},
		{"a manager no longer in state.json", "not among", s.issue(removed, evil, math.MaxUint64)},
		{"a manager of another swarm, same CA", "swarm otherswarm", s.issue(otherSwarm, evil, math.MaxUint64)},
		{"a manager certificate expired", "expired", func() *record {
			creds, err := loadCredentials(expired)
			if err != nil {
				t.Fatal(err)
			}
			r, err := issue(creds, evil, math.MaxUint64)
			if err != nil {
				t.Fatal(err)
			}
			return r
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, v := range []struct {
				name string
				i    int
				a    *Agent
			}{{"m1", 1, m1}, {"w3", 3, w3}} {
				before := v.a.Status().RecordsRefused
				if err := s.offer(attacker, v.i, tc.r); err != nil {
					t.Fatalf("%s: the exchange itself failed (the attacker is a node of the swarm): %v", v.name, err)
				}
				st := v.a.Status()
				if st.RecordsRefused != before+1 || !strings.Contains(st.LastRecordRefusal, tc.why) {
					t.Fatalf("%s: records refused %d -> %d, last %q: want one more, saying %q", v.name, before, st.RecordsRefused, st.LastRecordRefusal, tc.why)
				}
				if got := secretOf(t, v.a, time.Second); !bytes.Equal(got, secret) || st.SecretGeneration != gen {
					t.Fatalf("%s: the secret moved (generation %d)", v.name, st.SecretGeneration)
				}
				t.Logf("%s refused it: %s", v.name, st.LastRecordRefusal)
			}
		})
	}

	// Replay: a genuine record of an older generation rolls nothing back.
	old := s.issue(d1, evil, gen) // the same generation, another secret: a replay of a record m1 issued and then superseded
	next := s.issue(d1, secret, gen+1)
	if err := s.offer(attacker, 3, next); err != nil {
		t.Fatal(err)
	}
	if err := s.offer(attacker, 3, old); err != nil {
		t.Fatal(err)
	}
	if st := w3.Status(); st.SecretGeneration != gen+1 || !bytes.Equal(secretOf(t, w3, time.Second), secret) {
		t.Fatalf("w3 after a replay of generation %d: status %+v", gen, st)
	}

	// Positive control: the same worker relays m2's genuine newer record;
	// both adopt it, w3's Changed says so.
	fresh := s.issue(d2, bytes.Repeat([]byte{0x5a}, SecretBytes), gen+2)
	for _, v := range []struct {
		i int
		a *Agent
	}{{1, m1}, {3, w3}} {
		if err := s.offer(attacker, v.i, fresh); err != nil {
			t.Fatal(err)
		}
		if st := v.a.Status(); st.SecretGeneration != gen+2 || st.SecretBy != "m2" {
			t.Fatalf("control: node %d did not adopt m2's genuine generation %d: %+v", v.i, gen+2, st)
		}
	}
	select {
	case got := <-w3.Changed():
		if !bytes.Equal(got, fresh.Secret) {
			t.Fatal("control: w3's Changed holds another secret")
		}
	case <-time.After(time.Second):
		t.Fatal("control: w3 adopted a new secret without telling")
	}
}

// TestReissue: a manager re-issues the secret it holds, same bytes, next
// generation, when the record is one the swarm would not accept (kept by
// a release before signed records; issued by a node no longer a manager)
// or its issuer's certificate ends soon; nobody's secret changes.
func TestReissue(t *testing.T) {
	for _, tc := range []struct {
		name    string
		kept    func(s *swarm) *record
		wantGen uint64
	}{
		{"kept by the previous release (unsigned)", func(s *swarm) *record {
			return &record{Secret: bytes.Repeat([]byte{7}, SecretBytes), Created: 100, By: "m1"}
		}, 1},
		{"issued by a manager since removed", func(s *swarm) *record {
			return s.issue(s.node(s.ca, 9, "m9", RoleManager, cluster), bytes.Repeat([]byte{7}, SecretBytes), 4)
		}, 5},
		{"its issuer's certificate ends soon", func(s *swarm) *record {
			dir := s.t.TempDir()
			if err := s.ca.Write(testpki.Node{Dir: dir, Cluster: cluster, ID: "m2", Role: RoleManager, Managers: s.managers, NotAfter: time.Now().Add(time.Hour)}); err != nil {
				s.t.Fatal(err)
			}
			return s.issue(dir, bytes.Repeat([]byte{7}, SecretBytes), 4)
		}, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSwarm(t, "m1", "m2")
			r := tc.kept(s)
			m1 := s.agent(s.node(s.ca, 1, "m1", RoleManager, cluster), 1, s.keep(r))
			w3 := s.agent(s.node(s.ca, 3, "w3", RoleWorker, cluster), 3, s.keep(r))
			testutil.Until(t, waitLong, "w3 adopts m1's re-issued record", func() error {
				if st := w3.Status(); st.SecretGeneration != tc.wantGen || st.SecretBy != "m1" {
					return fmt.Errorf("w3: generation %d by %s", st.SecretGeneration, st.SecretBy)
				}
				return nil
			})
			for name, a := range map[string]*Agent{"m1": m1, "w3": w3} {
				if !bytes.Equal(secretOf(t, a, time.Second), r.Secret) {
					t.Fatalf("%s's secret changed", name)
				}
				select {
				case <-a.Changed():
					t.Fatalf("%s was told of a new secret; the secret is the same", name)
				default:
				}
			}
			// Once re-issued, it is not due again: the generation stays.
			time.Sleep(3 * m1.cfg.Interval)
			if st := m1.Status(); st.SecretGeneration != tc.wantGen {
				t.Fatalf("m1 went on re-issuing: generation %d", st.SecretGeneration)
			}
		})
	}
}

// TestRecordSignedBytes: every field the signature covers changes the
// signed bytes, and the swarm's ID is among them.
func TestRecordSignedBytes(t *testing.T) {
	base := record{Secret: bytes.Repeat([]byte{1}, SecretBytes), Generation: 3, Created: 42, By: "m1"}
	ref := base.signedBytes(cluster)
	for name, r := range map[string]record{
		"secret":     {Secret: bytes.Repeat([]byte{2}, SecretBytes), Generation: 3, Created: 42, By: "m1"},
		"generation": {Secret: base.Secret, Generation: 4, Created: 42, By: "m1"},
		"created":    {Secret: base.Secret, Generation: 3, Created: 43, By: "m1"},
		"by":         {Secret: base.Secret, Generation: 3, Created: 42, By: "m2"},
	} {
		if bytes.Equal(r.signedBytes(cluster), ref) {
			t.Errorf("changing %s leaves the signed bytes alike", name)
		}
	}
	if bytes.Equal(base.signedBytes("otherswarm"), ref) {
		t.Error("the swarm's ID is not signed")
	}
	// Length prefixes: moving a byte from one field to the next changes them.
	a := record{Secret: []byte("ab"), By: "m1x"}
	b := record{Secret: []byte("xab"), By: "m1"}
	if slices.Equal(a.signedBytes(cluster), b.signedBytes(cluster)) {
		t.Error("field boundaries are not signed")
	}
}

// TestRotate: a manager rotates the secret on request; every node moves to
// the new one (and is told); a worker cannot.
func TestRotate(t *testing.T) {
	s := newSwarm(t, "m1", "m2")
	m1 := s.agent(s.node(s.ca, 1, "m1", RoleManager, cluster), 1, "")
	m2 := s.agent(s.node(s.ca, 2, "m2", RoleManager, cluster), 2, "")
	w3 := s.agent(s.node(s.ca, 3, "w3", RoleWorker, cluster), 3, "")
	first := secretOf(t, m1, 5*time.Second)
	agents := map[string]*Agent{"m1": m1, "m2": m2, "w3": w3}
	holdAll := func(secret []byte) func() error {
		return func() error {
			for name, a := range agents {
				if got := secretOf(t, a, 5*time.Second); !bytes.Equal(got, secret) {
					return fmt.Errorf("%s holds generation %d by %s", name, a.Status().SecretGeneration, a.Status().SecretBy)
				}
			}
			return nil
		}
	}
	testutil.Until(t, waitLong, "all hold m1's secret", holdAll(first))

	if _, _, err := w3.Rotate(); err == nil || !strings.Contains(err.Error(), "only a swarm manager") {
		t.Fatalf("a worker rotated the secret: %v", err)
	}
	id, gen, err := m2.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	rotated := secretOf(t, m2, time.Second)
	if bytes.Equal(rotated, first) || m2.Status().SecretID != id {
		t.Fatalf("m2's rotation left the secret (%s, generation %d)", id, gen)
	}
	testutil.Until(t, waitLong, "all move to m2's new secret", holdAll(rotated))
	for name, a := range agents {
		select {
		case got := <-a.Changed():
			if !bytes.Equal(got, rotated) {
				t.Fatalf("%s was told of another secret", name)
			}
		default:
			t.Fatalf("%s was not told of the new secret", name)
		}
	}
	t.Logf("rotated to %s, generation %d", id, gen)
}

// legacyManager serves as node i the previous release's side of an
// exchange (protocol 1): it answers a protocol 1 message with rec, and
// closes on any other version, as that release does.
func (s *swarm) legacyManager(dir string, i int, rec *legacyRecord) {
	s.t.Helper()
	creds, err := loadCredentials(dir)
	if err != nil {
		s.t.Fatal(err)
	}
	l, err := tls.Listen("tcp", net.JoinHostPort(s.addr(i).String(), strconv.Itoa(s.port)), creds.serverConfig())
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				line, err := bufio.NewReader(conn).ReadBytes('\n')
				var m legacyMessage
				if err != nil || json.Unmarshal(line, &m) != nil || m.Version != legacyVersion {
					return
				}
				b, _ := json.Marshal(legacyMessage{Version: legacyVersion, Cluster: cluster, Record: rec})
				conn.Write(append(b, '\n'))
			}()
		}
	}()
}

// TestUpgradeFromProtocol1: a swarm upgrading host by host from the
// previous release keeps its one secret. m1 still runs that release; the
// upgraded m2 and w3 lost their kept secret with the upgrade. They take
// m1's secret in protocol 1, m2 re-issues it signed, w3 adopts that
// without changing secret, and a node of the previous release asking m2
// gets the same secret. m2 is the lowest manager, so without the fallback
// it would have issued a second secret at once.
func TestUpgradeFromProtocol1(t *testing.T) {
	s := newSwarm(t, "m1", "m0")
	old := &legacyRecord{Secret: bytes.Repeat([]byte{0x42}, SecretBytes), Created: 100, By: "m1"}
	s.legacyManager(s.node(s.ca, 1, "m1", RoleManager, cluster), 1, old)
	m0 := s.agent(s.node(s.ca, 2, "m0", RoleManager, cluster), 2, "")
	w3 := s.agent(s.node(s.ca, 3, "w3", RoleWorker, cluster), 3, "")
	testutil.Until(t, waitLong, "m0 re-issues the previous release's secret and w3 adopts it", func() error {
		for name, a := range map[string]*Agent{"m0": m0, "w3": w3} {
			if st := a.Status(); st.SecretGeneration != 1 || st.SecretBy != "m0" {
				return fmt.Errorf("%s: generation %d by %s", name, st.SecretGeneration, st.SecretBy)
			}
		}
		return nil
	})
	for name, a := range map[string]*Agent{"m0": m0, "w3": w3} {
		if !bytes.Equal(secretOf(t, a, time.Second), old.Secret) {
			t.Fatalf("%s holds another secret than the previous release's", name)
		}
	}
	// A node of the previous release asks m0 in protocol 1.
	creds, err := loadCredentials(s.node(s.ca, 4, "w4", RoleWorker, cluster))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", net.JoinHostPort(s.addr(2).String(), strconv.Itoa(s.port)), creds.clientConfig("m0"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	conn.Write([]byte(`{"v":1,"cluster":"` + cluster + `","record":{"secret":"` + b64(bytes.Repeat([]byte{9}, SecretBytes)) + `","created":1,"by":"w4"}}` + "\n"))
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	var m legacyMessage
	if err != nil || json.Unmarshal(line, &m) != nil || m.Version != 1 || m.Record == nil || !bytes.Equal(m.Record.Secret, old.Secret) {
		t.Fatalf("a node of the previous release got %q (%v) from m0, want the secret in protocol 1", line, err)
	}
	// What that node sent (the oldest record it could make) moved nothing.
	if !bytes.Equal(secretOf(t, m0, time.Second), old.Secret) {
		t.Fatal("a protocol 1 record replaced m0's secret")
	}
}

// TestScheduledRotation: with RotateEvery, the first manager issues a new
// secret when the record is older; every node moves to it, and it keeps
// doing so: no secret outlives the period by much. The second manager,
// whose turn is a stagger later, does not race it.
func TestScheduledRotation(t *testing.T) {
	s := newSwarm(t, "m1", "m2")
	start := func(dir string, i int) *Agent {
		a, err := New(Config{
			Dir: dir, Addr: s.addr(i), Port: s.port, Interval: 100 * time.Millisecond, GenerateAfter: 2 * time.Second,
			RotateEvery: 700 * time.Millisecond, RotateStagger: time.Hour,
			Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		})
		if err != nil {
			t.Fatal(err)
		}
		return s.run(a)
	}
	m1 := start(s.node(s.ca, 1, "m1", RoleManager, cluster), 1)
	m2 := start(s.node(s.ca, 2, "m2", RoleManager, cluster), 2)
	w3 := start(s.node(s.ca, 3, "w3", RoleWorker, cluster), 3)
	first := secretOf(t, m1, 5*time.Second)
	seen := map[string]bool{}
	testutil.Until(t, waitLong, "three scheduled rotations reach every node", func() error {
		st := m1.Status()
		for name, a := range map[string]*Agent{"m2": m2, "w3": w3} {
			if o := a.Status(); o.SecretGeneration != st.SecretGeneration {
				return fmt.Errorf("%s at generation %d, m1 at %d", name, o.SecretGeneration, st.SecretGeneration)
			}
		}
		seen[st.SecretID] = true
		if st.SecretGeneration < 4 {
			return fmt.Errorf("m1 at generation %d", st.SecretGeneration)
		}
		return nil
	})
	if bytes.Equal(secretOf(t, w3, time.Second), first) || len(seen) < 2 {
		t.Fatalf("the secret did not change: %d secrets seen", len(seen))
	}
	if st := m1.Status(); st.SecretBy != "m1" {
		t.Fatalf("the newest secret was issued by %s; m2's turn is an hour later", st.SecretBy)
	}
}
