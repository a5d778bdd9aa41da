package swarmtrust

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vxsec/vxsec/announce"
	"github.com/vxsec/vxsec/internal/testutil"
	"github.com/vxsec/vxsec/swarmtrust/testpki"
)

// passOf waits until a holds a pass and returns it.
func passOf(t *testing.T, a *Agent) *pass {
	t.Helper()
	var p *pass
	testutil.Until(t, waitLong, "a pass", func() error {
		if _, p = a.identityNow(); p == nil {
			return fmt.Errorf("no pass yet (status %+v)", a.Status())
		}
		return nil
	})
	return p
}

func credsOf(t *testing.T, dir string) credentials {
	t.Helper()
	c, err := loadCredentials(dir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestAttackSwarmTables: in swarm mode a table is accepted only signed by the
// node whose manager's pass names the address it was pulled from. An
// attacker is a worker of the swarm holding the cluster secret and a pass
// of its own (a working member, the positive control below), positioned
// to answer pulls meant for w2 (a man in the middle, or a member that
// advertises w2's address). Every form of table it can make for w2 is
// refused, each for its reason.
func TestAttackSwarmTables(t *testing.T) {
	s := newSwarm(t, "m1")
	m1 := s.agent(s.node(s.ca, 1, "m1", RoleManager, cluster), 1, "")
	w2dir := s.node(s.ca, 2, "w2", RoleWorker, cluster)
	w2 := s.agent(w2dir, 2, "")
	w3 := s.agent(s.node(s.ca, 3, "w3", RoleWorker, cluster), 3, "")
	evilDir := s.node(s.ca, 4, "w4", RoleWorker, cluster)
	evil := s.agent(evilDir, 4, "")
	for _, a := range []*Agent{m1, w2, w3, evil} {
		passOf(t, a)
	}
	if st := m1.Status(); st.PassBy != "m1" || st.PassesIssued < 3 {
		t.Fatalf("m1's status %+v: want its own pass and three issued", st)
	}

	table := []byte(`{"host":"127.0.1.2","version":"1.1","endpoints":[]}`)
	genuine, err := w2.Tables().SignTable(table)
	if err != nil {
		t.Fatal(err)
	}
	evilTable, err := evil.Tables().SignTable(table)
	if err != nil {
		t.Fatal(err)
	}
	evilCreds := credsOf(t, evilDir)
	m1Creds := credsOf(t, m1.cfg.Dir)
	w2Signed, _ := announce.DecodeSigned(genuine)
	evilSigned, _ := announce.DecodeSigned(evilTable)

	// resign makes a signed table of table with the attacker's key and
	// chain, and pass p.
	resign := func(p *pass, table []byte) []byte {
		sig, err := evilCreds.sign(announce.SignedMessage(table))
		if err != nil {
			t.Fatal(err)
		}
		var raw []byte
		if p != nil {
			raw, _ = json.Marshal(p)
		}
		b, err := announce.EncodeSigned(announce.Signed{Chain: evilCreds.cert.Certificate, Sig: sig, Pass: raw, Table: table})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var w2Pass pass
	json.Unmarshal(w2Signed.Pass, &w2Pass)
	var evilPass pass
	json.Unmarshal(evilSigned.Pass, &evilPass)
	// A pass the attacker signs itself, for w2's address.
	selfMade := &pass{Node: "w4", Addr: "127.0.1.2", NotAfter: time.Now().Add(time.Hour).Unix(), By: "w4", Chain: evilCreds.cert.Certificate}
	selfMade.Sig, _ = evilCreds.sign(selfMade.signedBytes(cluster))
	// A manager's pass that ran out.
	expired, err := issuePass(m1Creds, "w4", s.addr(2), time.Now().Add(-2*PassLife))
	if err != nil {
		t.Fatal(err)
	}
	// The real w2's pass, under the attacker's signature.
	other := newSwarm(t, "x1")
	strangerDir := other.node(other.ca, 2, "w2", RoleWorker, cluster)
	stranger := credsOf(t, strangerDir)
	strangerSig, _ := stranger.sign(announce.SignedMessage(table))
	strangerTable, _ := announce.EncodeSigned(announce.Signed{Chain: stranger.cert.Certificate, Sig: strangerSig, Pass: w2Signed.Pass, Table: table})
	altered := append([]byte(nil), genuine...)
	altered[len(altered)-3] ^= 1
	noPass, _ := announce.EncodeSigned(announce.Signed{Chain: evilCreds.cert.Certificate, Sig: evilSigned.Sig, Table: table})

	cases := []struct {
		name   string
		signed []byte
		want   string // "" accepts
	}{
		{"genuine", genuine, ""},
		{"the attacker's own pass", evilTable, "is for address 127.0.1.4, not 127.0.1.2"},
		{"w2's pass, the attacker's signature", resign(&w2Pass, table), "is node w2's, not w4's"},
		{"a pass the attacker issued itself", resign(selfMade, table), "a swarm-worker: only managers issue it"},
		{"a manager's pass that ran out", resign(expired, table), "ran out"},
		{"no pass", noPass, "no pass"},
		{"w2's table altered", altered, "signature"},
		{"another CA's w2", strangerTable, "not certified by this swarm's CA"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, signer, _, err := w3.Tables().OpenTable(s.addr(2), tc.signed)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want == "" && (signer != "w2" || string(got) != string(table)):
				t.Fatalf("accepted as %q: %s", signer, got)
			case tc.want != "" && err == nil:
				t.Fatalf("accepted as %q, want refused (%s)", signer, tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("refused with %v, want %q", err, tc.want)
			}
			if err != nil {
				t.Logf("refused: %v", err)
			}
		})
	}
	// Positive control: the attacker is a working member; its own table,
	// pulled from its own address, is accepted.
	if _, signer, _, err := w3.Tables().OpenTable(s.addr(4), evilTable); err != nil || signer != "w4" {
		t.Fatalf("the attacker's own table from its own address: signer %q, %v", signer, err)
	}

	// A table delta (gossip carries its signature alone; the receiver
	// checks it with the chain and pass of w2's table it holds): w2's
	// opens, the attacker's under w2's chain and pass does not.
	body := []byte("\x00VXD a delta's body")
	w2Sig, err := w2.Tables().SignRaw(body)
	if err != nil {
		t.Fatal(err)
	}
	evilSig, err := evil.Tables().SignRaw(body)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []struct {
		name string
		sig  []byte
		ok   bool
	}{{"w2's delta", w2Sig, true}, {"the attacker's delta with w2's chain and pass", evilSig, false}} {
		wrapped, _ := announce.EncodeSigned(announce.Signed{Chain: w2Signed.Chain, Pass: w2Signed.Pass, Sig: d.sig, Table: body})
		if _, signer, _, err := w3.Tables().OpenTable(s.addr(2), wrapped); (err == nil) != d.ok || (d.ok && signer != "w2") {
			t.Fatalf("%s: signer %q, %v", d.name, signer, err)
		}
	}

	// Pulls: the attacker proves itself from its own address, not w2's.
	msg := []byte("both nonces")
	block, err := evil.Tables().SignPeer(msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := w3.Tables().CheckPeer(s.addr(4), block, msg); err != nil {
		t.Fatalf("the attacker's pull from its own address: %v", err)
	}
	if err := w3.Tables().CheckPeer(s.addr(2), block, msg); !errors.Is(err, ErrPass) {
		t.Fatalf("the attacker's pull as w2: %v, want refused for its pass", err)
	}
}

// TestAttackPassForAnotherAddress: a manager issues a pass only for the
// address the asking node's connection comes from. The attacker (a worker
// of the swarm) asks m1 for a pass for w2's address from its own: refused
// and counted. Control: asking for its own address, from it, gets one.
func TestAttackPassForAnotherAddress(t *testing.T) {
	s := newSwarm(t, "m1")
	m1 := s.agent(s.node(s.ca, 1, "m1", RoleManager, cluster), 1, "")
	passOf(t, m1)
	evil := credsOf(t, s.node(s.ca, 4, "w4", RoleWorker, cluster))
	ask := func(addr string) *pass {
		d := tls.Dialer{NetDialer: &net.Dialer{LocalAddr: &net.TCPAddr{IP: s.addr(4).AsSlice()}}, Config: evil.clientConfig("m1")}
		conn, err := d.Dial("tcp", net.JoinHostPort(s.addr(1).String(), strconv.Itoa(s.port)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(waitLong))
		if err := writeMessage(conn, message{Version: protocolVersion, Cluster: cluster, Addr: addr}); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(conn).ReadBytes('\n')
		if err != nil {
			t.Fatal(err)
		}
		var m message
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatal(err)
		}
		return m.Pass
	}
	if p := ask("127.0.1.2"); p != nil {
		t.Fatalf("m1 issued the attacker a pass for w2's address: %+v", p)
	}
	if st := m1.Status(); st.PassesRefused != 1 || !strings.Contains(st.LastPassRefusal, "from 127.0.1.4") {
		t.Fatalf("m1's status %+v: want one pass refused", st)
	}
	p := ask("127.0.1.4")
	if p == nil {
		t.Fatal("no pass for the attacker's own address (control)")
	}
	if err := evil.verifyPass(p, "w4", s.addr(4), time.Now()); err != nil {
		t.Fatalf("the control's pass: %v", err)
	}
	t.Logf("a pass for another address refused (%s); for its own, issued by %s until %s",
		m1.Status().LastPassRefusal, p.By, time.Unix(p.NotAfter, 0).UTC().Format(time.RFC3339))
}

// TestPassFollowsManagers: a pass issued by a node that is no manager any
// more (state.json no longer names it) stops being accepted.
func TestPassFollowsManagers(t *testing.T) {
	s := newSwarm(t, "m1", "m2")
	m1Creds := credsOf(t, s.node(s.ca, 1, "m1", RoleManager, cluster))
	p, err := issuePass(m1Creds, "w3", s.addr(3), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	reader := credsOf(t, s.node(s.ca, 5, "w5", RoleWorker, cluster))
	if err := reader.verifyPass(p, "w3", s.addr(3), time.Now()); err != nil {
		t.Fatalf("a current manager's pass: %v", err)
	}
	s.managers = []testpki.Manager{{NodeID: "m2", Addr: "127.0.1.2:2377"}}
	demoted := credsOf(t, s.node(s.ca, 5, "w5", RoleWorker, cluster))
	if err := demoted.verifyPass(p, "w3", s.addr(3), time.Now()); err == nil || !strings.Contains(err.Error(), "not among this swarm's managers") {
		t.Fatalf("a pass of a node no longer a manager: %v", err)
	}
	if _, err := issuePass(reader, "w3", netip.MustParseAddr("127.0.1.3"), time.Now()); err == nil {
		t.Fatal("a worker issued a pass")
	}
}

// TestPassKept: the pass is kept with the secret, so a daemon restarted
// while no manager answers still signs its tables.
func TestPassKept(t *testing.T) {
	s := newSwarm(t, "m1")
	s.agent(s.node(s.ca, 1, "m1", RoleManager, cluster), 1, "")
	dir := s.node(s.ca, 2, "w2", RoleWorker, cluster)
	keep := filepath.Join(t.TempDir(), "swarm-secret.json")
	w2 := s.agent(dir, 2, keep)
	p := passOf(t, w2)
	secretOf(t, w2, waitLong)
	testutil.Until(t, waitLong, "the pass kept", func() error {
		raw, err := os.ReadFile(keep)
		if err != nil || !strings.Contains(string(raw), `"pass"`) {
			return fmt.Errorf("kept file: %v", err)
		}
		return nil
	})
	// The restart, with no Run: nothing is asked of any manager.
	again, err := New(Config{Dir: dir, Addr: s.addr(2), Port: s.port, SecretFile: keep, Log: w2.log})
	if err != nil {
		t.Fatal(err)
	}
	if _, kept := again.identityNow(); kept == nil || kept.NotAfter != p.NotAfter {
		t.Fatalf("the restarted agent holds pass %+v, want %+v", kept, p)
	}
	if _, err := again.Tables().SignTable([]byte(`{}`)); err != nil {
		t.Fatalf("the restarted agent cannot sign: %v", err)
	}
}
