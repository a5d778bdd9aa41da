package gossip

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vxsec/vxsec/announce"
	"github.com/vxsec/vxsec/identity"
	"github.com/vxsec/vxsec/internal/testutil"
)

// testIdentities makes a cluster CA, issues one identity per host (name →
// the address its certificate names), and returns them with the
// cluster's verifier.
func testIdentities(t *testing.T, hosts map[string]string) (map[string]*identity.Identity, *identity.Verifier) {
	t.Helper()
	ids, vs, _ := testIdentitiesCA(t, hosts)
	for _, v := range vs {
		return ids, v
	}
	return ids, nil
}

// testIdentitiesCA is testIdentities with a verifier per host (each holds
// its own revocation list) and the CA's directory.
func testIdentitiesCA(t *testing.T, hosts map[string]string) (map[string]*identity.Identity, map[string]*identity.Verifier, string) {
	t.Helper()
	ca := t.TempDir()
	if err := identity.InitCA(ca, "test-cluster", time.Hour); err != nil {
		t.Fatal(err)
	}
	out := map[string]*identity.Identity{}
	verifiers := map[string]*identity.Verifier{}
	for name, addr := range hosts {
		dir := filepath.Join(t.TempDir(), name)
		a := netip.MustParseAddr(addr)
		if _, err := identity.Issue(ca, dir, name, []netip.Addr{a}, time.Hour); err != nil {
			t.Fatal(err)
		}
		id, vv, err := identity.Load(dir, a)
		if err != nil {
			t.Fatal(err)
		}
		out[name], verifiers[name] = id, vv
	}
	return out, verifiers, ca
}

// fakeServer serves every pull (version 2, with secret) raw: a man in the
// middle of a pull who holds the cluster secret (the path position is the
// test's: the client dials it).
func fakeServer(t *testing.T, addr string, secret, raw []byte) string {
	t.Helper()
	l, err := net.Listen("tcp", addr+":0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			var first [1]byte
			if _, err := conn.Read(first[:]); err == nil && first[0] == pullMagicV2 {
				servePull(conn, [][]byte{secret}, newNonce(), func() []byte { return raw }, func() {}, nil)
			}
			conn.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); wg.Wait() })
	return l.Addr().String()
}

// TestAttackForgedTables: a man in the middle of h1's pull from h2, holding the
// cluster secret and h3's identity, serves forged "h2" tables carrying its
// own X25519 key. Each form is refused by h1 and counted: unsigned, signed
// by h3, h3's signature under h2's certificate, h2's table altered after
// signing, and signed by another CA's "h2". The same server relaying h2's
// genuine signed table is accepted, and a host without identities (the
// secret alone) accepts the forged table: the attack the signatures stop.
// The same genuine table replayed once h2 announced a newer one is
// refused as stale.
func TestAttackForgedTables(t *testing.T) {
	const a1, a2, a3 = "127.0.0.91", "127.0.0.92", "127.0.0.93"
	ids, v := testIdentities(t, map[string]string{"h1": a1, "h2": a2, "h3": a3})
	otherCA, _ := testIdentities(t, map[string]string{"h2": a2})
	h2 := netip.MustParseAddr(a2)
	evilKey := bytes.Repeat([]byte{0xee}, 32)
	forged := announce.Table{Host: h2, Version: announce.Version{Epoch: 9, Seq: 9},
		IPsec: announce.IPsec{Keys: []announce.Key{{Epoch: 1, Public: evilKey}}}}
	forgedRaw, err := announce.Encode(forged)
	if err != nil {
		t.Fatal(err)
	}
	genuine := announce.Table{Host: h2, Version: announce.Version{Epoch: 5, Seq: 1},
		IPsec: announce.IPsec{Keys: []announce.Key{{Epoch: 1, Public: bytes.Repeat([]byte{0x22}, 32)}}}}
	genuineRaw, _ := announce.Encode(genuine)
	signedBy := func(id *identity.Identity, raw []byte) []byte {
		b, err := id.SignTable(raw)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	genuineSigned := signedBy(ids["h2"], genuineRaw)
	// h3's signature, h2's certificate in front.
	s3, _ := announce.DecodeSigned(signedBy(ids["h3"], forgedRaw))
	s2, _ := announce.DecodeSigned(genuineSigned)
	stolen, _ := announce.EncodeSigned(announce.Signed{Chain: s2.Chain, Sig: s3.Sig, Table: forgedRaw})
	altered, _ := announce.EncodeSigned(announce.Signed{Chain: s2.Chain, Sig: s2.Sig, Table: forgedRaw})

	c1, _, _ := startNodeConfig(t, Config{Addr: netip.MustParseAddr(a1), Secret: secretA, Signer: ids["h1"], Verifier: v, RequireSigned: true})
	open, _, _ := startNodeConfig(t, Config{Addr: netip.MustParseAddr("127.0.0.94"), Secret: secretA})

	for _, tc := range []struct {
		name string
		raw  []byte
		why  error
	}{
		{"unsigned", forgedRaw, nil},
		{"signed by h3", signedBy(ids["h3"], forgedRaw), identity.ErrNotForHost},
		{"h3's signature under h2's certificate", stolen, identity.ErrSignature},
		{"h2's table altered after signing", altered, identity.ErrSignature},
		{"signed by another CA's h2", signedBy(otherCA["h2"], forgedRaw), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mitm := fakeServer(t, "127.0.0.95", secretA, tc.raw)
			got, _, err := c1.pull(context.Background(), mitm, h2, announce.Version{})
			if !errors.Is(err, errIdentity) || (tc.why != nil && !errors.Is(err, tc.why)) {
				t.Fatalf("h1 took the forged table (%+v, err %v)", got, err)
			}
			t.Logf("h1 refused it: %v", err)
			// The control: the secret alone lets the forged "h2" through.
			if tc.name == "unsigned" {
				got, _, err := open.pull(context.Background(), mitm, h2, announce.Version{})
				if err != nil || got.Host != h2 || !bytes.Equal(got.Keys[0].Public, evilKey) {
					t.Fatalf("control: a host without identities did not take the forged table: %+v %v", got, err)
				}
				t.Logf("control: a host with the secret alone installed the forged h2 table, X25519 key %x...", got.Keys[0].Public[:4])
			}
		})
	}
	// The genuine table, relayed by the same server: accepted.
	mitm := fakeServer(t, "127.0.0.95", secretA, genuineSigned)
	got, _, err := c1.pull(context.Background(), mitm, h2, genuine.Version)
	if err != nil || got.Version != genuine.Version {
		t.Fatalf("h1 refused h2's genuine table relayed: %+v %v", got, err)
	}
	// A replay: h2 has since published 5.2 (announced in its tags), and
	// the server answers with the genuine, signed 5.1 it recorded.
	got, _, err = c1.pull(context.Background(), mitm, h2, announce.Version{Epoch: 5, Seq: 2})
	if !errors.Is(err, errStale) {
		t.Fatalf("h1 took h2's older table replayed after 5.2 was announced: %+v %v", got, err)
	}
	t.Logf("replayed older table refused: %v", err)
}

// TestAttackKeysBoundToAnotherIdentity: a member (h3) publishes, under its
// own valid signature, IPsec epochs bound to h2's identity, so that its
// peers would derive their SA keys with h3 under h2's name. h1 refuses the
// table and says why. Controls: the same table with the epoch bound to h3,
// or to no identity (a release before the binding), is taken.
func TestAttackKeysBoundToAnotherIdentity(t *testing.T) {
	const a1, a3 = "127.0.0.91", "127.0.0.93"
	ids, v := testIdentities(t, map[string]string{"h1": a1, "h2": "127.0.0.92", "h3": a3})
	h3 := netip.MustParseAddr(a3)
	c1, _, _ := startNodeConfig(t, Config{Addr: netip.MustParseAddr(a1), Secret: secretA, Signer: ids["h1"], Verifier: v, RequireSigned: true})
	for _, tc := range []struct {
		id    string
		taken bool
	}{
		{"h2", false},
		{"h3", true},
		{"", true},
	} {
		t.Run("bound to "+strconv.Quote(tc.id), func(t *testing.T) {
			tab := announce.Table{Host: h3, Version: announce.Version{Epoch: 3, Seq: 1},
				IPsec: announce.IPsec{Keys: []announce.Key{{Epoch: 1, Public: bytes.Repeat([]byte{0x33}, 32), ID: tc.id}}}}
			raw, err := announce.Encode(tab)
			if err != nil {
				t.Fatal(err)
			}
			signed, err := ids["h3"].SignTable(raw)
			if err != nil {
				t.Fatal(err)
			}
			got, _, err := c1.pull(context.Background(), fakeServer(t, a3, secretA, signed), h3, announce.Version{})
			switch {
			case tc.taken && (err != nil || got.Keys[0].ID != tc.id):
				t.Fatalf("control: h1 refused h3's own table (%+v, err %v)", got, err)
			case !tc.taken && (!errors.Is(err, errIdentity) || !strings.Contains(err.Error(), `identity "h2"`)):
				t.Fatalf("h1 took h3's epoch bound to h2 (%+v, err %v)", got, err)
			case !tc.taken:
				t.Logf("h1 refused it: %v", err)
			}
		})
	}
}

// TestAttackMemberWithoutIdentity: members with identities exchange signed tables; a
// member with the secret but no identity joins (the secret admits it to
// gossip), but the others neither serve it their tables nor install its
// own, and count both refusals.
func TestAttackMemberWithoutIdentity(t *testing.T) {
	const a1, a2, a3 = "127.0.0.96", "127.0.0.97", "127.0.0.98"
	ids, v := testIdentities(t, map[string]string{"h1": a1, "h2": a2})
	ep := func(last byte) announce.Table {
		return announce.Table{Endpoints: []announce.Endpoint{{VNI: 1, IP: netip.AddrFrom4([4]byte{10, 0, 0, last}), MAC: net.HardwareAddr{2, 0, 0, 0, 0, last}}}}
	}
	c1, rec1, port1 := startNodeConfig(t, Config{Addr: netip.MustParseAddr(a1), Secret: secretA, Signer: ids["h1"], Verifier: v, RequireSigned: true, Local: newLocal(ep(1))})
	seed := []string{net.JoinHostPort(a1, strconv.Itoa(port1))}
	_, rec2, _ := startNodeConfig(t, Config{Addr: netip.MustParseAddr(a2), Secret: secretA, Signer: ids["h2"], Verifier: v, RequireSigned: true, Seeds: seed, Local: newLocal(ep(2))})
	c3, rec3, _ := startNodeConfig(t, Config{Addr: netip.MustParseAddr(a3), Secret: secretA, Seeds: seed, Local: newLocal(ep(3))})
	testutil.Eventually(t, 10*time.Second, "h1 and h2 install each other's signed tables", func() bool {
		_, ok1 := rec1.table(netip.MustParseAddr(a2))
		_, ok2 := rec2.table(netip.MustParseAddr(a1))
		return ok1 && ok2
	})
	testutil.Eventually(t, 10*time.Second, "h3, with the secret alone, is a member", func() bool { return len(c3.Members()) == 3 })
	testutil.Eventually(t, 10*time.Second, "h1 refuses h3's unsigned table, and h3's pulls", func() bool {
		st := c1.Stats()
		return st.Refused["table-identity"] > 0 && st.Refused["pull-identity"] > 0
	})
	if _, ok := rec3.table(netip.MustParseAddr(a1)); ok {
		t.Fatal("h3, with no identity, got h1's table")
	}
	if _, ok := rec1.table(netip.MustParseAddr(a3)); ok {
		t.Fatal("h1 installed h3's unsigned table")
	}
	if _, ok := rec2.table(netip.MustParseAddr(a3)); ok {
		t.Fatal("h2 installed h3's unsigned table")
	}
}

// TestAttackRevokedHost: the CA revokes h3, and only h1 is given the list.
// h2 gets it in front of h1's next table, which h1 publishes for that
// reason alone; both drop h3's table (its endpoints and keys) and stop
// counting h3 as a VXLAN source, though h3 is still a member. Before, h2
// had h3's table: the control.
func TestAttackRevokedHost(t *testing.T) {
	const a1, a2, a3 = "127.0.0.101", "127.0.0.102", "127.0.0.103"
	ids, v, ca := testIdentitiesCA(t, map[string]string{"h1": a1, "h2": a2, "h3": a3})
	h3 := netip.MustParseAddr(a3)
	start := func(name, addr string, seeds []string) (*Cluster, *recorder, int) {
		return startNodeConfig(t, Config{Addr: netip.MustParseAddr(addr), Secret: secretA, Signer: ids[name], Verifier: v[name], RequireSigned: true, Seeds: seeds})
	}
	c1, rec1, port1 := start("h1", a1, nil)
	seed := []string{net.JoinHostPort(a1, strconv.Itoa(port1))}
	c2, rec2, _ := start("h2", a2, seed)
	c3, rec3, _ := start("h3", a3, seed)
	testutil.Eventually(t, 10*time.Second, "h1 and h2 hold h3's table, and h3 h2's", func() bool {
		_, ok1 := rec1.table(h3)
		_, ok2 := rec2.table(h3)
		_, ok3 := rec3.table(netip.MustParseAddr(a2))
		return ok1 && ok2 && ok3
	})
	isSource := func(r *recorder) bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, a := range r.members {
			if a == h3 {
				return true
			}
		}
		return false
	}
	if !isSource(rec2) {
		t.Fatal("control: h2 does not count h3 as a VXLAN source")
	}

	crl, _, err := identity.Revoke(ca, "h3")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if ok, err := v["h1"].OfferCRL(crl); !ok || err != nil {
		t.Fatalf("h1 refused the CA's list: %v", err)
	}
	c1.RevocationChanged()
	testutil.Eventually(t, 10*time.Second, "h2 drops h3's table", func() bool {
		_, ok := rec2.table(h3)
		return !ok && v["h2"].CRLNumber() == 1 && !isSource(rec2)
	})
	t.Logf("h2 dropped revoked h3 %s after h1 was given the list", time.Since(t0).Round(time.Millisecond))
	if _, ok := rec1.table(h3); ok || isSource(rec1) {
		t.Fatal("h1 kept h3's table")
	}
	// h3 is still a member (it holds the secret), and what it publishes
	// next is refused.
	testutil.Eventually(t, 10*time.Second, "h2 refuses h3's tables", func() bool { return c2.Stats().Refused["table-identity"] > 0 })
	if len(c2.Members()) != 3 {
		t.Fatalf("h2 lists %d members", len(c2.Members()))
	}
	// Nor does h3 read the others' tables any more; before, it did.
	testutil.Eventually(t, 10*time.Second, "h2 refuses h3's pulls", func() bool {
		_, _, err := c3.pull(context.Background(), net.JoinHostPort(a2, strconv.Itoa(c2.cfg.Port)), netip.MustParseAddr(a2), announce.Version{})
		return err != nil && c2.Stats().Refused["pull-identity"] > 0
	})
}

// TestAttackSwappedEphemeralKey: a man in the middle of a pull, holding
// the cluster secret, relays h1's proof and identity block but puts its
// own ephemeral key in place of h1's, to read the table sealed for it.
// The server checks h1's signature over the key it received: refused.
// Control: the same block with h1's own key is accepted.
func TestAttackSwappedEphemeralKey(t *testing.T) {
	const a1 = "127.0.0.96"
	ids, v := testIdentities(t, map[string]string{"h1": a1})
	sn, cn := newNonce(), newNonce()
	h1Key, evilKey := bytes.Repeat([]byte{0x11}, ephemeralSize), bytes.Repeat([]byte{0xee}, ephemeralSize)
	block, err := ids["h1"].SignPeer(identityMessage(sn, cn, h1Key))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.CheckPeer(netip.MustParseAddr(a1), block, identityMessage(sn, cn, h1Key)); err != nil {
		t.Fatalf("control: h1's block with its own key: %v", err)
	}
	err = v.CheckPeer(netip.MustParseAddr(a1), block, identityMessage(sn, cn, evilKey))
	if !errors.Is(err, identity.ErrSignature) {
		t.Fatalf("h1's block with the attacker's key: %v, want a signature refused", err)
	}
	t.Logf("the swapped ephemeral key refused: %v", err)
}
