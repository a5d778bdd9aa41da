package swarmtrust

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vxsec/vxsec/internal/testutil"
)

// sendMessage sends m to node i's trust port as the holder of creds, from
// the address from, and returns the answer (nil if the node closed).
func (s *swarm) sendMessage(t *testing.T, creds credentials, from, to int, m message) *message {
	t.Helper()
	d := tls.Dialer{NetDialer: &net.Dialer{LocalAddr: &net.TCPAddr{IP: s.addr(from).AsSlice()}}, Config: creds.clientConfig("")}
	conn, err := d.Dial("tcp", net.JoinHostPort(s.addr(to).String(), strconv.Itoa(s.port)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(waitLong))
	if err := writeMessage(conn, m); err != nil {
		return nil
	}
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil {
		return nil
	}
	var got message
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatal(err)
	}
	return &got
}

// TestAttackEvictedNode: m1 evicts w3 (as after `docker node rm`). w3 is a
// worker that keeps its certificate, its pass and the old secret, and
// tries everything a member could. Before the eviction (the positive
// control) w2 accepts w3's table and pull; after it, within one round:
// w2 holds the eviction list and the new secret; w3's table and pull are
// refused as evicted; m1 refuses w3's exchanges, and w2 refuses w3 asking
// it directly, so w3 never learns the new secret. A worker's forged list
// evicting w2 is refused.
func TestAttackEvictedNode(t *testing.T) {
	s := newSwarm(t, "m1")
	m1 := s.agent(s.node(s.ca, 1, "m1", RoleManager, cluster), 1, "")
	w2 := s.agent(s.node(s.ca, 2, "w2", RoleWorker, cluster), 2, "")
	w3dir := s.node(s.ca, 3, "w3", RoleWorker, cluster)
	w3 := s.agent(w3dir, 3, "")
	w4dir := s.node(s.ca, 4, "w4", RoleWorker, cluster)
	for _, a := range []*Agent{m1, w2, w3} {
		passOf(t, a)
	}
	old := secretOf(t, m1, waitLong)
	testutil.Until(t, waitLong, "w2 and w3 hold m1's secret", func() error {
		for _, a := range []*Agent{w2, w3} {
			if !bytes.Equal(secretOf(t, a, waitLong), old) {
				return errors.New("not yet")
			}
		}
		return nil
	})
	table := []byte(`{"host":"127.0.1.3"}`)
	signed := func() []byte {
		b, err := w3.Tables().SignTable(table)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	msg := []byte("both nonces")
	block, err := w3.Tables().SignPeer(msg)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := w2.Tables().OpenTable(s.addr(3), signed()); err != nil {
		t.Fatalf("control: w2 refused w3's table before the eviction: %v", err)
	}
	if err := w2.Tables().CheckPeer(s.addr(3), block, msg); err != nil {
		t.Fatalf("control: w2 refused w3's pull before the eviction: %v", err)
	}

	refusedBefore := m1.Status().Refused
	seq, id, gen, err := m1.Evict([]string{"w3"})
	if err != nil {
		t.Fatal(err)
	}
	took := testutil.Until(t, waitLong, "w2 holds the eviction list and the new secret", func() error {
		st := w2.Status()
		if st.EvictionSeq != seq || st.SecretID != id || st.SecretGeneration != gen {
			return fmt.Errorf("w2: list %d, secret %s/%d; want %d, %s/%d", st.EvictionSeq, st.SecretID, st.SecretGeneration, seq, id, gen)
		}
		return nil
	})
	t.Logf("w2 held eviction list %d and secret %s (generation %d) %s after m1 evicted w3", seq, id, gen, took.Round(time.Millisecond))
	if _, _, _, err := w2.Tables().OpenTable(s.addr(3), signed()); !errors.Is(err, ErrEvicted) {
		t.Fatalf("w2 took w3's table after the eviction: %v", err)
	}
	if err := w2.Tables().CheckPeer(s.addr(3), block, msg); !errors.Is(err, ErrEvicted) {
		t.Fatalf("w2 served w3's pull after the eviction: %v", err)
	}
	if !w2.Tables().Revoked("w3") || w2.Tables().Revoked("m1") {
		t.Fatal("Revoked does not follow the list")
	}
	// w3 asks w2 directly (it is no manager: w3's rounds never ask it).
	if got := s.sendMessage(t, credsOf(t, w3dir), 3, 2, message{Version: protocolVersion, Cluster: cluster}); got != nil {
		t.Fatalf("w2 answered the evicted w3: %+v", got.Record != nil)
	}
	// w3's own rounds run every 300 ms: m1 refuses them, and w3 keeps
	// the old secret.
	testutil.Until(t, waitLong, "m1 refuses w3's rounds", func() error {
		if st := m1.Status(); st.Refused <= refusedBefore || !strings.Contains(st.LastRefusal, "evicted") {
			return fmt.Errorf("m1 refused %d (last %q)", st.Refused, st.LastRefusal)
		}
		return nil
	})
	time.Sleep(time.Second)
	if now := secretOf(t, w3, waitLong); !bytes.Equal(now, old) {
		t.Fatal("the evicted w3 learned the new secret")
	}
	t.Logf("w3 still holds only the old secret %s after; m1 refused it (%s)", (&record{Secret: old}).id(), m1.Status().LastRefusal)

	// A worker (w4, not evicted) offers m1 a list it signed, evicting w2.
	w4 := credsOf(t, w4dir)
	forged := &evictions{Seq: seq + 10, Nodes: []evicted{{ID: "w2", Until: time.Now().Add(time.Hour).Unix()}}, By: "w4", Chain: w4.cert.Certificate}
	forged.Sig, _ = w4.sign(forged.signedBytes(cluster))
	if got := s.sendMessage(t, w4, 4, 1, message{Version: protocolVersion, Cluster: cluster, Evictions: forged}); got == nil {
		t.Fatal("m1 did not answer w4 (a node in good standing)")
	}
	st := m1.Status()
	if st.EvictionsRefused != 1 || st.EvictionSeq != seq || m1.isEvicted("w2") {
		t.Fatalf("m1 after the forged list: %+v", st)
	}
	t.Logf("the worker's forged list refused: %s", st.LastEvictionRefusal)
}

// TestEvictionOrder: a newer list replaces an older one, never the other
// way; at one number the longer wins; entries past their time lapse.
func TestEvictionOrder(t *testing.T) {
	s := newSwarm(t, "m1")
	m1 := credsOf(t, s.node(s.ca, 1, "m1", RoleManager, cluster))
	now := time.Now()
	e1, err := issueEvictions(m1, nil, []string{"w3"}, now)
	if err != nil {
		t.Fatal(err)
	}
	e2, err := issueEvictions(m1, e1, []string{"w4"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if !e2.newer(e1) || e1.newer(e2) || e2.Seq != 2 || !e2.has("w3", now) || !e2.has("w4", now) {
		t.Fatalf("e1 %+v, e2 %+v", e1, e2)
	}
	if e2.has("w3", now.Add(evictionKeep+time.Minute)) {
		t.Fatal("an entry outlived its time")
	}
	if _, err := issueEvictions(m1, nil, []string{"m1"}, now); err == nil {
		t.Fatal("a manager evicted itself")
	}
	w := credsOf(t, s.node(s.ca, 2, "w2", RoleWorker, cluster))
	if _, err := issueEvictions(w, nil, []string{"w3"}, now); err == nil || !strings.Contains(err.Error(), "only a swarm manager") {
		t.Fatalf("a worker evicted: %v", err)
	}
	if err := w.verifyEvictions(e2); err != nil {
		t.Fatal(err)
	}
}

// TestEvictAbsent: the leader, given the swarm's node list, evicts the
// nodes whose tables it holds that the swarm no longer lists (`docker node
// rm`), once; never itself, never a node the swarm lists, and nobody when
// the list is empty.
func TestEvictAbsent(t *testing.T) {
	s := newSwarm(t, "m1")
	m1 := s.agent(s.node(s.ca, 1, "m1", RoleManager, cluster), 1, "")
	secretOf(t, m1, waitLong)
	known := []string{"m1", "w2", "w3", ""}
	for _, tc := range []struct {
		name  string
		swarm []string
		want  []string
	}{
		{"the engine listed nothing", nil, nil},
		{"every node is in the swarm", []string{"m1", "w2", "w3"}, nil},
		{"w3 was removed", []string{"m1", "w2"}, []string{"w3"}},
		{"w3 is evicted already", []string{"m1", "w2"}, nil},
		{"a list without the leader itself", []string{"w2"}, nil},
	} {
		got, err := m1.EvictAbsent(tc.swarm, known)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Fatalf("%s: evicted %v (%v), want %v", tc.name, got, err, tc.want)
		}
	}
	if st := m1.Status(); !slices.Equal(st.Evicted, []string{"w3"}) {
		t.Fatalf("the list holds %v, want [w3]", st.Evicted)
	}
}
