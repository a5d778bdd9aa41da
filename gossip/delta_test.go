package gossip

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/vxsec/vxsec/announce"
	"github.com/vxsec/vxsec/identity"
	"github.com/vxsec/vxsec/internal/testutil"
)

func testEndpoint(i int) announce.Endpoint {
	return announce.Endpoint{
		VNI: 7, IP: netip.AddrFrom4([4]byte{10, 0, byte(i / 250), byte(1 + i%250)}),
		MAC:     net.HardwareAddr{2, 0, 0, 0, byte(i / 250), byte(1 + i%250)},
		Created: time.Date(2026, 12, 2, 10, 0, 0, i, time.UTC),
	}
}

// startPair starts h1 and h2 on a1 and a2 with the test secret and no
// repair pass, and waits until h2 holds h1's first table.
func startPair(t *testing.T, a1, a2 string) (c1, c2 *Cluster, rec2 *recorder) {
	t.Helper()
	c1, _, port := startNodeConfig(t, Config{Addr: netip.MustParseAddr(a1), Secret: secretA, timing: timing{antiEntropy: time.Hour}})
	c2, rec2, _ = startNodeConfig(t, Config{Addr: netip.MustParseAddr(a2), Secret: secretA, Seeds: []string{net.JoinHostPort(a1, strconv.Itoa(port))}, timing: timing{antiEntropy: time.Hour}})
	testutil.Eventually(t, 10*time.Second, "h2 installs h1's first table", func() bool { _, ok := rec2.table(netip.MustParseAddr(a1)); return ok })
	return c1, c2, rec2
}

// deltaAdding is the delta from prev to prev with ep added, unsigned, and
// that table.
func deltaAdding(t *testing.T, prev announce.Table, ep announce.Endpoint) (announce.Delta, announce.Table) {
	t.Helper()
	next := prev
	next.Version.Seq++
	next.Endpoints = append(slices.Clone(prev.Endpoints), ep)
	raw, err := announce.Encode(next)
	if err != nil {
		t.Fatal(err)
	}
	d, ok := announce.Diff(prev, next, raw, 72)
	if !ok {
		t.Fatal("no delta")
	}
	return d, next
}

// heldOf is what c holds of member name's table.
func heldOf(c *Cluster, name string) (heldTable, announce.Version) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.held[name], c.known[name]
}

// TestDeltasReplacePulls: endpoint changes, a network made and key rotations reach the
// other members as deltas, signed and checked, with no pull served; each member ends with
// exactly the table its author has. The control: the same changes from a
// member that sends no deltas are pulled, by every other member, each
// time.
func TestDeltasReplacePulls(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ips      [3]string
		noDeltas bool
	}{
		{"deltas", [3]string{"127.0.0.121", "127.0.0.122", "127.0.0.123"}, false},
		{"control-no-deltas", [3]string{"127.0.0.124", "127.0.0.125", "127.0.0.126"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ids, vs, _ := testIdentitiesCA(t, map[string]string{"h1": tc.ips[0], "h2": tc.ips[1], "h3": tc.ips[2]})
			var cs []*Cluster
			var recs []*recorder
			var seed []string
			for i, name := range []string{"h1", "h2", "h3"} {
				c, rec, port := startNodeConfig(t, Config{Addr: netip.MustParseAddr(tc.ips[i]), Secret: secretA, Signer: ids[name], Verifier: vs[name],
					RequireSigned: true, Seeds: seed, timing: timing{antiEntropy: time.Hour, noDeltas: tc.noDeltas}})
				if i == 0 {
					seed = []string{net.JoinHostPort(tc.ips[0], strconv.Itoa(port))}
				}
				cs, recs = append(cs, c), append(recs, rec)
			}
			h1 := netip.MustParseAddr(tc.ips[0])
			testutil.Eventually(t, 10*time.Second, "h2 and h3 install h1's first table", func() bool {
				_, ok2 := recs[1].table(h1)
				_, ok3 := recs[2].table(h1)
				return ok2 && ok3
			})
			pullsBefore := cs[0].Stats().Accepted["pull"]
			const changes = 6
			var eps []announce.Endpoint
			var nets []announce.Network
			for i := range changes {
				if i == 3 {
					eps = slices.Delete(eps, 0, 1) // one removed on the way
				}
				if i == 2 { // a network made: the networks change too
					nets = []announce.Network{{ID: "n7", VNI: 7, Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")},
						Created: time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)}}
				}
				eps = append(eps, testEndpoint(i))
				tb := announce.Table{Endpoints: slices.Clone(eps), Networks: nets}
				if i >= 4 { // a key rotation: the IPsec part changes too
					tb.Keys = []announce.Key{{Epoch: uint64(i), Public: bytes.Repeat([]byte{byte(i)}, 32), ID: "h1"}}
				}
				publish(cs[0], tb)
				testutil.Eventually(t, 10*time.Second, "h2 and h3 hold h1's change "+strconv.Itoa(i), func() bool {
					for _, r := range recs[1:] {
						if tb, _ := r.table(h1); !slices.EqualFunc(tb.Endpoints, eps, func(a, b announce.Endpoint) bool { return a.IP == b.IP }) {
							return false
						}
					}
					return true
				})
			}
			// Exactly h1's table, byte for byte.
			cs[0].mu.Lock()
			want := cs[0].localRaw
			cs[0].mu.Unlock()
			for i, r := range recs[1:] {
				tb, _ := r.table(h1)
				if got, _ := announce.Encode(tb); !bytes.Equal(got, want) {
					t.Fatalf("h%d holds\n%s\nh1 has\n%s", i+2, got, want)
				}
			}
			pulls := cs[0].Stats().Accepted["pull"] - pullsBefore
			deltas := cs[1].Stats().Accepted["delta"] + cs[2].Stats().Accepted["delta"]
			t.Logf("%d changes of h1: %d pulls served, %d deltas installed by h2 and h3", changes, pulls, deltas)
			if tc.noDeltas {
				if pulls < 2*changes || deltas != 0 {
					t.Fatalf("control: %d pulls and %d deltas; want every change pulled by both", pulls, deltas)
				}
				return
			}
			if pulls != 0 || deltas != 2*changes {
				t.Fatalf("%d pulls served and %d deltas installed; want none and %d", pulls, deltas, 2*changes)
			}
			for _, c := range cs[1:] {
				if st := c.Stats(); st.Refused["delta-identity"]+st.Refused["delta-mismatch"]+st.Refused["delta-malformed"] != 0 {
					t.Fatalf("deltas refused: %v", st.Refused)
				}
			}
		})
	}
}

// TestDeltaGapPulls: a member that does not hold the version a delta is
// from (it missed one) keeps the delta for a while, and pulls the table
// its author announced deltaWait later; nothing is lost.
func TestDeltaGapPulls(t *testing.T) {
	const a1, a2 = "127.0.0.131", "127.0.0.132"
	c1, c2, rec2 := startPair(t, a1, a2)
	h1 := netip.MustParseAddr(a1)
	publish(c1, announce.Table{Endpoints: []announce.Endpoint{testEndpoint(1)}})
	testutil.Eventually(t, 10*time.Second, "h2 installs h1's change", func() bool { tb, _ := rec2.table(h1); return len(tb.Endpoints) == 1 })
	pulls := c1.Stats().Accepted["pull"]
	// h2 goes back to h1's first table, as if it had missed the delta
	// to the second.
	c2.mu.Lock()
	h := c2.held[a1]
	h.table.Version.Seq, h.table.Endpoints = 0, nil
	c2.held[a1], c2.known[a1] = h, announce.Version{Epoch: h.table.Version.Epoch}
	c2.mu.Unlock()
	publish(c1, announce.Table{Endpoints: []announce.Endpoint{testEndpoint(1), testEndpoint(2)}})
	testutil.Eventually(t, 10*time.Second, "h2 holds h1's newest table", func() bool {
		tb, _ := rec2.table(h1)
		return len(tb.Endpoints) == 2
	})
	if early, pulled := c2.Stats().Accepted["delta-early"], c1.Stats().Accepted["pull"]-pulls; early != 1 || pulled != 1 {
		t.Fatalf("h2 kept %d deltas from a version it did not hold, and pulled %d times; want one of each", early, pulled)
	}
}

// TestBehindWaitsForDeltas: a member that is behind (deltas queued that
// it has not installed yet, as on a host short of CPU) waits for them
// rather than pulling the versions announced meanwhile. The control waits
// only deltaWait, as before, and pulls.
func TestBehindWaitsForDeltas(t *testing.T) {
	for _, tc := range []struct {
		name      string
		a1, a2    string
		behind    time.Duration
		wantPulls bool
	}{
		{"waits", "127.0.0.141", "127.0.0.142", 0, false},
		{"control-waits-deltaWait-only", "127.0.0.143", "127.0.0.144", deltaWait, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c1, _, port := startNodeConfig(t, Config{Addr: netip.MustParseAddr(tc.a1), Secret: secretA, timing: timing{antiEntropy: time.Hour}})
			c2, rec2, _ := startNodeConfig(t, Config{Addr: netip.MustParseAddr(tc.a2), Secret: secretA,
				Seeds: []string{net.JoinHostPort(tc.a1, strconv.Itoa(port))}, timing: timing{antiEntropy: time.Hour, behindWait: tc.behind}})
			h1 := netip.MustParseAddr(tc.a1)
			testutil.Eventually(t, 10*time.Second, "h2 installs h1's first table", func() bool { _, ok := rec2.table(h1); return ok })
			pulls := c1.Stats().Accepted["pull"]
			rec2.hold.Lock() // h2's installs stop; its deltas queue
			var eps []announce.Endpoint
			for i := range 4 {
				eps = append(eps, testEndpoint(i))
				publish(c1, announce.Table{Endpoints: slices.Clone(eps)})
				time.Sleep(150 * time.Millisecond) // a version each
			}
			time.Sleep(time.Second) // past deltaWait, short of behindWait
			rec2.hold.Unlock()
			testutil.Eventually(t, 10*time.Second, "h2 holds h1's newest table", func() bool {
				tb, _ := rec2.table(h1)
				return len(tb.Endpoints) == len(eps)
			})
			pulled, behind := c1.Stats().Accepted["pull"]-pulls, c2.Stats().Accepted["delta-behind"]
			t.Logf("h1 served %d pulls; h2 waited longer %d times", pulled, behind)
			if tc.wantPulls {
				if pulled == 0 {
					t.Fatal("control: h2 did not pull while it was behind; the test would prove nothing")
				}
				return
			}
			if pulled != 0 || behind == 0 {
				t.Fatalf("h1 served %d pulls and h2 waited longer %d times; want none and some", pulled, behind)
			}
		})
	}
}

// TestDeltasOutOfOrder: UDP may deliver a host's deltas newest first; a
// delta from a version not held yet is kept, and the run is installed
// once the one before it comes, at once (one signature checked), with no
// pull.
func TestDeltasOutOfOrder(t *testing.T) {
	const a1, a2, a3 = "127.0.0.135", "127.0.0.136", "127.0.0.137"
	c1, _, port := startNodeConfig(t, Config{Addr: netip.MustParseAddr(a1), Secret: secretA, timing: timing{antiEntropy: time.Hour}})
	seed := []string{net.JoinHostPort(a1, strconv.Itoa(port))}
	c2, rec2, _ := startNodeConfig(t, Config{Addr: netip.MustParseAddr(a2), Secret: secretA, Seeds: seed, timing: timing{antiEntropy: time.Hour}})
	c3, rec3, _ := startNodeConfig(t, Config{Addr: netip.MustParseAddr(a3), Secret: secretA, Seeds: seed, timing: timing{antiEntropy: time.Hour}})
	h1 := netip.MustParseAddr(a1)
	testutil.Eventually(t, 10*time.Second, "h2 and h3 install h1's first table", func() bool {
		_, ok2 := rec2.table(h1)
		_, ok3 := rec3.table(h1)
		return ok2 && ok3
	})
	pulls := c1.Stats().Accepted["pull"]
	h, _ := heldOf(c2, a1)
	var wires [][]byte
	prev := h.table
	for i := range 3 {
		var d announce.Delta
		d, prev = deltaAdding(t, prev, testEndpoint(i))
		wire, _ := announce.EncodeDelta(d)
		wires = append(wires, wire)
	}
	// Newest first: the last two wait for the first.
	for _, i := range []int{2, 1, 0} {
		if err := c3.tr.sendDelta(c3.keyring.GetPrimaryKey(), wires[i], []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr(a2), uint16(c2.cfg.Port))}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	testutil.Eventually(t, 10*time.Second, "h2 holds h1's table with all three endpoints", func() bool {
		tb, _ := rec2.table(h1)
		return len(tb.Endpoints) == 3 && tb.Version == prev.Version
	})
	st := c2.Stats()
	if st.Accepted["delta"] != 3 || st.Accepted["delta-early"] != 2 || st.Accepted["delta-run"] != 1 || c1.Stats().Accepted["pull"] != pulls {
		t.Fatalf("h2 installed %d deltas (%d runs), kept %d early, and h1 served %d pulls; want 3 (1 run), 2 and none",
			st.Accepted["delta"], st.Accepted["delta-run"], st.Accepted["delta-early"], c1.Stats().Accepted["pull"]-pulls)
	}
}

// TestAttackForgedDelta: h3, a member holding the cluster secret and an
// identity of its own, sends deltas of h1's table to h2's gossip port to
// put its own endpoint in h2's view of h1 (to draw h1's traffic for that
// address). h2 refuses each one and counts it, and its view of h1 is
// unchanged: signed by h3, unsigned, h1's genuine delta with an endpoint
// changed, a delta signed by h1 binding its IPsec epoch to h3's name, and
// h1's genuine delta replayed once installed. The controls:
// the channel works (a delta h1 signed, sent the same way by h3, is
// installed), and a member without identities (the secret alone) installs
// the forged delta: the attack the signatures stop.
func TestAttackForgedDelta(t *testing.T) {
	const a1, a2, a3 = "127.0.0.141", "127.0.0.142", "127.0.0.143"
	ids, vs, _ := testIdentitiesCA(t, map[string]string{"h1": a1, "h2": a2, "h3": a3})
	start := func(name, addr string, seeds []string, verify bool) (*Cluster, *recorder, int) {
		cfg := Config{Addr: netip.MustParseAddr(addr), Secret: secretA, Signer: ids[name], Seeds: seeds, timing: timing{antiEntropy: time.Hour}}
		if verify {
			cfg.Verifier, cfg.RequireSigned = vs[name], true
		}
		return startNodeConfig(t, cfg)
	}
	c1, _, port := start("h1", a1, nil, true)
	seed := []string{net.JoinHostPort(a1, strconv.Itoa(port))}
	c2, rec2, _ := start("h2", a2, seed, true)
	c3, _, _ := start("h3", a3, seed, true)
	h1 := netip.MustParseAddr(a1)
	testutil.Eventually(t, 10*time.Second, "h2 installs h1's table", func() bool { _, ok := rec2.table(h1); return ok })
	_ = c1

	evil := announce.Endpoint{VNI: 7, IP: netip.MustParseAddr("10.0.0.66"), MAC: net.HardwareAddr{2, 0xba, 0xd, 0, 0, 0x66}, Created: time.Now().UTC()}
	// deltaOf makes the delta from what c holds of h1 to that table with
	// ep added, signed by id (nil: unsigned).
	deltaOf := func(c *Cluster, ep announce.Endpoint, id *identity.Identity) announce.Delta {
		t.Helper()
		h, _ := heldOf(c, a1)
		d, _ := deltaAdding(t, h.table, ep)
		if id != nil {
			var err error
			body, _ := d.Body()
			if d.Sig, err = id.SignRaw(body); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	send := func(d announce.Delta) {
		t.Helper()
		wire, err := announce.EncodeDelta(d)
		if err != nil {
			t.Fatal(err)
		}
		if err := c3.tr.sendDelta(c3.keyring.GetPrimaryKey(), wire, []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr(a2), uint16(c2.cfg.Port))}); err != nil {
			t.Fatal(err)
		}
	}
	hasEvil := func(r *recorder) bool {
		tb, _ := r.table(h1)
		return slices.ContainsFunc(tb.Endpoints, func(e announce.Endpoint) bool { return e.IP == evil.IP })
	}

	altered := deltaOf(c2, testEndpoint(9), ids["h1"])
	altered.Added[0].Endpoint = evil
	// h1's own delta (signed by h1), binding its IPsec epoch to h3's
	// name: SA keys with h1 would be derived under another identity.
	boundElsewhere := func() announce.Delta {
		h, _ := heldOf(c2, a1)
		next := h.table
		next.Version.Seq++
		next.Keys = []announce.Key{{Epoch: 1, Public: bytes.Repeat([]byte{0xee}, 32), ID: "h3"}}
		raw, _ := announce.Encode(next)
		d, ok := announce.Diff(h.table, next, raw, 72)
		if !ok {
			t.Fatal("no delta")
		}
		body, _ := d.Body()
		d.Sig, _ = ids["h1"].SignRaw(body)
		return d
	}()
	for i, tc := range []struct {
		name string
		d    announce.Delta
	}{
		{"signed by h3", deltaOf(c2, evil, ids["h3"])},
		{"unsigned", deltaOf(c2, evil, nil)},
		{"h1's delta with h3's endpoint in it", altered},
		{"h1's delta binding its IPsec epoch to h3", boundElsewhere},
	} {
		send(tc.d)
		testutil.Eventually(t, 10*time.Second, "h2 refuses the delta "+tc.name, func() bool {
			return c2.Stats().Refused["delta-identity"] == uint64(i+1)
		})
		if hasEvil(rec2) {
			t.Fatalf("h2 installed the delta %s", tc.name)
		}
		t.Logf("h2 refused the delta %s", tc.name)
	}

	// The control: h1's own delta, sent by h3 the same way, is installed.
	genuine := deltaOf(c2, testEndpoint(8), ids["h1"])
	send(genuine)
	testutil.Eventually(t, 10*time.Second, "h2 installs h1's genuine delta", func() bool {
		tb, _ := rec2.table(h1)
		return len(tb.Endpoints) == 1 && tb.Endpoints[0].IP == testEndpoint(8).IP
	})
	// Replayed, it is a gap: it is not from the version held.
	gaps := c2.Stats().Refused["delta-gap"]
	send(genuine)
	testutil.Eventually(t, 10*time.Second, "h2 counts the replay as a gap", func() bool { return c2.Stats().Refused["delta-gap"] > gaps })
	if _, v := heldOf(c2, a1); v != genuine.Next {
		t.Fatalf("after the replay h2 holds h1 at %s, want %s", v, genuine.Next)
	}

	// The control: with the secret alone, h3's delta in h1's name goes in.
	const o1, o2, o3 = "127.0.0.144", "127.0.0.145", "127.0.0.146"
	_, _, oport := start("h1", o1, nil, false)
	oseed := []string{net.JoinHostPort(o1, strconv.Itoa(oport))}
	o2c, orec2, _ := start("h2", o2, oseed, false)
	o3c, _, _ := start("h3", o3, oseed, false)
	oh1 := netip.MustParseAddr(o1)
	testutil.Eventually(t, 10*time.Second, "open h2 installs h1's table", func() bool { _, ok := orec2.table(oh1); return ok })
	h, _ := heldOf(o2c, o1)
	d, _ := deltaAdding(t, h.table, evil)
	wire, _ := announce.EncodeDelta(d)
	if err := o3c.tr.sendDelta(o3c.keyring.GetPrimaryKey(), wire, []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr(o2), uint16(o2c.cfg.Port))}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "control: open h2 installs h3's delta in h1's name", func() bool {
		tb, _ := orec2.table(oh1)
		return slices.ContainsFunc(tb.Endpoints, func(e announce.Endpoint) bool { return e.IP == evil.IP })
	})
}

// TestAttackStrangerDeltas: someone without the cluster secret sends h2 a
// delta of h1's table with an endpoint of its own, to its gossip port:
// sealed under another cluster's gossip key, not sealed, and sealed under
// nothing but with memberlist's framing. Each is refused before it is
// read, and counted; h2's view of h1 is unchanged. The control: the same
// delta sealed under this cluster's key, from the same address, is
// installed: what the seal keeps out.
func TestAttackStrangerDeltas(t *testing.T) {
	const a1, a2 = "127.0.0.151", "127.0.0.152"
	_, c2, rec2 := startPair(t, a1, a2)
	h1 := netip.MustParseAddr(a1)
	h, _ := heldOf(c2, a1)
	d, _ := deltaAdding(t, h.table, testEndpoint(66))
	wire, _ := announce.EncodeDelta(d)
	otherKey, err := GossipKey([]byte("another cluster's secret, 32 by."), keyPeriod(time.Now(), DefaultKeyPeriod))
	if err != nil {
		t.Fatal(err)
	}
	ourKey, err := GossipKey(secretA, keyPeriod(time.Now(), DefaultKeyPeriod))
	if err != nil {
		t.Fatal(err)
	}
	foreign, _ := sealDelta(otherKey, wire)
	plain, _ := sealDelta(nil, wire)
	genuine, _ := sealDelta(ourKey, wire)
	// memberlist's framing: sealed without the delta's label.
	block, _ := aes.NewCipher(ourKey)
	g, _ := cipher.NewGCM(block)
	nonce := make([]byte, gcmNonce)
	unlabelled := g.Seal(append([]byte{deltaPacket, 1}, nonce...), nonce, wire, nil)

	conn, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP("127.0.0.159")}, net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(a2), uint16(c2.cfg.Port))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for i, p := range [][]byte{foreign, plain, unlabelled} {
		conn.Write(p)
		testutil.Eventually(t, 5*time.Second, "h2 refuses stranger's delta "+strconv.Itoa(i), func() bool {
			return c2.Stats().Refused["packet-unauthentic"] == uint64(i+1)
		})
	}
	if tb, _ := rec2.table(h1); len(tb.Endpoints) != 0 || c2.Stats().Accepted["delta"] != 0 {
		t.Fatalf("h2 took a stranger's delta: h1 has %d endpoints", len(tb.Endpoints))
	}
	conn.Write(genuine)
	testutil.Eventually(t, 5*time.Second, "control: h2 installs the delta sealed with the cluster's key", func() bool {
		tb, _ := rec2.table(h1)
		return len(tb.Endpoints) == 1 && c2.Stats().Accepted["delta"] == 1
	})
}

// TestAttackForgedDeltaInRun: h3, a member with an identity of its own,
// slips a delta of h1's table signed by itself into the middle of a run
// of h1's genuine deltas that h2 installs at once (checking only the
// last's signature, and the hash of the table the run makes). The run
// does not rebuild what h1 signed, so h2 takes the deltas one at a time:
// it installs h1's first, refuses h3's (counted), and never holds h3's
// endpoint. The control: h1's genuine middle delta, sent after, completes
// the run, installed at once.
func TestAttackForgedDeltaInRun(t *testing.T) {
	const a1, a2, a3 = "127.0.0.161", "127.0.0.162", "127.0.0.163"
	ids, vs, _ := testIdentitiesCA(t, map[string]string{"h1": a1, "h2": a2, "h3": a3})
	var seed []string
	var cs []*Cluster
	var recs []*recorder
	for i, name := range []string{"h1", "h2", "h3"} {
		addr := []string{a1, a2, a3}[i]
		c, rec, port := startNodeConfig(t, Config{Addr: netip.MustParseAddr(addr), Secret: secretA, Signer: ids[name], Verifier: vs[name],
			RequireSigned: true, Seeds: seed, timing: timing{antiEntropy: time.Hour}})
		if i == 0 {
			seed = []string{net.JoinHostPort(a1, strconv.Itoa(port))}
		}
		cs, recs = append(cs, c), append(recs, rec)
	}
	h1 := netip.MustParseAddr(a1)
	testutil.Eventually(t, 10*time.Second, "h2 and h3 install h1's table", func() bool {
		_, ok2 := recs[1].table(h1)
		_, ok3 := recs[2].table(h1)
		return ok2 && ok3
	})
	sign := func(d announce.Delta, id *identity.Identity) []byte {
		body, _ := d.Body()
		var err error
		if d.Sig, err = id.SignRaw(body); err != nil {
			t.Fatal(err)
		}
		wire, err := announce.EncodeDelta(d)
		if err != nil {
			t.Fatal(err)
		}
		return wire
	}
	h, _ := heldOf(cs[1], a1)
	d1, v1 := deltaAdding(t, h.table, testEndpoint(1))
	d2, v2 := deltaAdding(t, v1, testEndpoint(2))
	d3, _ := deltaAdding(t, v2, testEndpoint(3))
	evil := announce.Endpoint{VNI: 7, IP: netip.MustParseAddr("10.0.0.66"), MAC: net.HardwareAddr{2, 0xba, 0xd, 0, 0, 0x66}, Created: time.Now().UTC()}
	forged, _ := deltaAdding(t, v1, evil)
	to := []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr(a2), uint16(cs[1].cfg.Port))}
	send := func(wire []byte) {
		t.Helper()
		if err := cs[2].tr.sendDelta(cs[2].keyring.GetPrimaryKey(), wire, to); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Newest first: the run waits for its first delta.
	send(sign(d3, ids["h1"]))
	send(sign(forged, ids["h3"]))
	send(sign(d1, ids["h1"]))
	testutil.Eventually(t, 10*time.Second, "h2 refuses h3's delta in the run", func() bool { return cs[1].Stats().Refused["delta-identity"] == 1 })
	tb, _ := recs[1].table(h1)
	if slices.ContainsFunc(tb.Endpoints, func(e announce.Endpoint) bool { return e.IP == evil.IP }) || tb.Version != v1.Version {
		t.Fatalf("h2 holds h1 at %s with %d endpoints; want h1's first delta alone installed (%s)", tb.Version, len(tb.Endpoints), v1.Version)
	}
	if n := cs[1].Stats().Accepted["delta-run"]; n != 0 {
		t.Fatalf("h2 installed %d runs with the forged delta in them", n)
	}
	// The control: h1's own second delta completes the run.
	send(sign(d2, ids["h1"]))
	testutil.Eventually(t, 10*time.Second, "h2 installs h1's run", func() bool {
		tb, _ := recs[1].table(h1)
		return len(tb.Endpoints) == 3 && cs[1].Stats().Accepted["delta-run"] == 1
	})
}

// TestTagTrailsDeltas: a burst of versions, each carried by its delta,
// changes the version tag (a membership broadcast every member relays)
// far fewer times than there are versions, and the tag still ends at the
// newest version. The control tags every version, as before tagLoop.
func TestTagTrailsDeltas(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ips     [2]string
		spacing time.Duration
	}{
		{"trailing", [2]string{"127.0.0.141", "127.0.0.142"}, 1500 * time.Millisecond},
		{"control-every-version", [2]string{"127.0.0.143", "127.0.0.144"}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c1, _, port := startNodeConfig(t, Config{Addr: netip.MustParseAddr(tc.ips[0]), Secret: secretA,
				timing: timing{antiEntropy: time.Hour, tagSpacing: tc.spacing}})
			c2, rec2, _ := startNodeConfig(t, Config{Addr: netip.MustParseAddr(tc.ips[1]), Secret: secretA,
				Seeds: []string{net.JoinHostPort(tc.ips[0], strconv.Itoa(port))}, timing: timing{antiEntropy: time.Hour}})
			h1 := netip.MustParseAddr(tc.ips[0])
			testutil.Eventually(t, 10*time.Second, "h2 installs h1's first table", func() bool {
				_, ok := rec2.table(h1)
				return ok
			})
			// Let the first table's tag go, then count from here.
			time.Sleep(2 * time.Second)
			tags0, sent0 := c1.Stats().Accepted["tag-set"], c1.Stats().Accepted["delta-sent"]
			const versions = 6
			var eps []announce.Endpoint
			for i := range versions {
				eps = append(eps, testEndpoint(i))
				publish(c1, announce.Table{Endpoints: slices.Clone(eps)})
				testutil.Eventually(t, 10*time.Second, "h2 holds h1's version "+strconv.Itoa(i), func() bool {
					tb, _ := rec2.table(h1)
					return len(tb.Endpoints) == len(eps)
				})
			}
			c1.mu.Lock()
			newest := c1.announced.Version.String()
			c1.mu.Unlock()
			testutil.Eventually(t, 10*time.Second, "h2 sees h1's tag at the newest version", func() bool {
				for _, m := range c2.serf.Members() {
					if m.Name == c1.serf.LocalMember().Name {
						return m.Tags[tagVersion] == newest
					}
				}
				return false
			})
			tags := c1.Stats().Accepted["tag-set"] - tags0
			sent := c1.Stats().Accepted["delta-sent"] - sent0
			t.Logf("%d versions: %d deltas sent, %d tags set", versions, sent, tags)
			if sent != versions {
				t.Fatalf("%d deltas sent for %d versions", sent, versions)
			}
			if tc.spacing < 0 {
				if tags <= versions/2 {
					t.Fatalf("control: %d tags set for %d versions; want more than %d", tags, versions, versions/2)
				}
				return
			}
			if tags > versions/2 {
				t.Fatalf("%d tags set for %d versions carried by deltas; want at most %d", tags, versions, versions/2)
			}
		})
	}
}
