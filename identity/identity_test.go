package identity

import (
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vxsec/vxsec/announce"
)

func mustCA(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	if err := InitCA(dir, "test", time.Hour); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mustIssue(t *testing.T, ca, host, addr string, validity time.Duration) (*Identity, *Verifier) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), host)
	if _, err := Issue(ca, dir, host, []netip.Addr{netip.MustParseAddr(addr)}, validity); err != nil {
		t.Fatal(err)
	}
	id, v, err := Load(dir, netip.MustParseAddr(addr))
	if err != nil {
		t.Fatal(err)
	}
	return id, v
}

// TestOpenTable: a table signed by the host its certificate names opens;
// every other case is refused with the reason.
func TestOpenTable(t *testing.T) {
	ca := mustCA(t)
	h1, v := mustIssue(t, ca, "h1", "10.0.0.1", time.Hour)
	h2, _ := mustIssue(t, ca, "h2", "10.0.0.2", time.Hour)
	stranger, _ := mustIssue(t, mustCA(t), "h1", "10.0.0.1", time.Hour)
	table := []byte(`{"host":"10.0.0.1","version":{"epoch":1,"seq":1}}`)
	sign := func(id *Identity, b []byte) []byte {
		s, err := id.SignTable(b)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	good := sign(h1, table)
	g, _ := announce.DecodeSigned(good)
	s2, _ := announce.DecodeSigned(sign(h2, table))
	swapped, _ := announce.EncodeSigned(announce.Signed{Chain: g.Chain, Sig: s2.Sig, Table: table})
	altered, _ := announce.EncodeSigned(announce.Signed{Chain: g.Chain, Sig: g.Sig, Table: []byte(`{"host":"10.0.0.1","version":{"epoch":1,"seq":2}}`)})
	// later shares v's cache of verified chains, which "genuine" fills
	// first: a chain remembered must still expire.
	later := &Verifier{roots: v.roots, crl: v.crl, chains: v.chains, now: func() time.Time { return time.Now().Add(2 * time.Hour) }}

	for _, tc := range []struct {
		name   string
		v      *Verifier
		host   string
		signed []byte
		want   error  // errors.Is, or
		says   string // in the error
	}{
		{"genuine", v, "10.0.0.1", good, nil, ""},
		{"for another host", v, "10.0.0.2", good, ErrNotForHost, "certified for [10.0.0.1]"},
		{"another host's table", v, "10.0.0.1", sign(h2, table), ErrNotForHost, `"h2"`},
		{"another host's signature under h1's certificate", v, "10.0.0.1", swapped, ErrSignature, ""},
		{"altered after signing", v, "10.0.0.1", altered, ErrSignature, ""},
		{"another CA", v, "10.0.0.1", sign(stranger, table), nil, "not certified by this cluster's CA"},
		{"expired", later, "10.0.0.1", good, nil, "expired"},
		{"not signed", v, "10.0.0.1", table, nil, "no signed table's header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, name, _, err := tc.v.OpenTable(netip.MustParseAddr(tc.host), tc.signed)
			if tc.want == nil && tc.says == "" {
				if err != nil || string(got) != string(table) || !strings.HasPrefix(name, "h1#") {
					t.Fatalf("OpenTable = %q, %q, %v; want the table, h1", got, name, err)
				}
				return
			}
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("OpenTable err = %v; want %v saying %q", err, tc.want, tc.says)
			}
		})
	}
}

// TestLoad: a host refuses at start an identity that does not name the
// address it advertises, or that is missing, with the reason.
func TestLoad(t *testing.T) {
	ca := mustCA(t)
	dir := filepath.Join(t.TempDir(), "h1")
	if _, err := Issue(ca, dir, "h1", []netip.Addr{netip.MustParseAddr("10.0.0.1")}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Load(dir, netip.MustParseAddr("10.0.0.9")); !errors.Is(err, ErrNotForHost) {
		t.Fatalf("an identity for another address: %v", err)
	}
	if _, _, err := Load(t.TempDir(), netip.MustParseAddr("10.0.0.1")); err == nil || !strings.Contains(err.Error(), "vxsec ca issue") {
		t.Fatalf("no identity: %v", err)
	}
	if err := InitCA(ca, "again", time.Hour); err == nil || !strings.Contains(err.Error(), "already holds a CA") {
		t.Fatalf("InitCA over a CA: %v", err)
	}
	if _, err := Issue(ca, t.TempDir(), "h2", nil, time.Hour); err == nil {
		t.Fatal("Issue without an address")
	}
	// A host certificate never outlives its CA.
	cert, err := Issue(ca, t.TempDir(), "h3", []netip.Addr{netip.MustParseAddr("10.0.0.3")}, 100*time.Hour)
	if err != nil || cert.NotAfter.After(time.Now().Add(time.Hour)) {
		t.Fatalf("a host certificate outlives its CA: %v %v", cert.NotAfter, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("host key mode: %v %v", fi.Mode(), err)
	}
}

// TestRevocation: a host revoked by the CA is refused once a host holds
// the list; the list spreads in front of every table that host signs; a
// list not signed by the CA, or not newer, changes nothing.
func TestRevocation(t *testing.T) {
	ca := mustCA(t)
	h1, v1 := mustIssue(t, ca, "h1", "10.0.0.1", time.Hour)
	_, v2 := mustIssue(t, ca, "h2", "10.0.0.2", time.Hour)
	h3, _ := mustIssue(t, ca, "h3", "10.0.0.3", time.Hour)
	table := []byte(`{}`)
	sign := func(id *Identity) []byte {
		s, err := id.SignTable(table)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	open := func(v *Verifier, host string, b []byte) (string, bool, error) {
		_, signer, newCRL, err := v.OpenTable(netip.MustParseAddr(host), b)
		return signer, newCRL, err
	}
	signer3, _, err := open(v2, "10.0.0.3", sign(h3))
	if err != nil || v2.Revoked(signer3) {
		t.Fatalf("before revocation, h2 refuses h3: %v", err)
	}

	crl, serials, err := Revoke(ca, "h3")
	if err != nil || len(serials) != 1 {
		t.Fatalf("Revoke: %v %v", serials, err)
	}
	if _, _, err := Revoke(ca, "h3"); err == nil {
		t.Fatal("revoking h3 twice: no error")
	}
	// A list from another CA is refused.
	other := mustCA(t)
	mustIssue(t, other, "h3", "10.0.0.3", time.Hour)
	forged, _, err := Revoke(other, "h3")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := v1.OfferCRL(forged); ok || err == nil {
		t.Fatalf("h1 adopted another CA's list: %v %v", ok, err)
	}
	// h1 gets the CA's list; h2 gets it only in front of h1's table.
	if ok, err := v1.OfferCRL(crl); !ok || err != nil || v1.CRLNumber() != 1 {
		t.Fatalf("h1 did not adopt the list: %v %v", ok, err)
	}
	if ok, _ := v1.OfferCRL(crl); ok {
		t.Fatal("h1 adopted the same list twice")
	}
	if _, _, err := open(v1, "10.0.0.3", sign(h3)); !errors.Is(err, ErrRevoked) {
		t.Fatalf("h1 took revoked h3's table: %v", err)
	}
	if _, newCRL, err := open(v2, "10.0.0.1", sign(h1)); err != nil || !newCRL || v2.CRLNumber() != 1 {
		t.Fatalf("h2 did not adopt the list in front of h1's table: %v %v", newCRL, err)
	}
	if !v2.Revoked(signer3) {
		t.Fatal("h2 does not count h3 as revoked")
	}
	if _, _, err := open(v2, "10.0.0.3", sign(h3)); !errors.Is(err, ErrRevoked) {
		t.Fatalf("h2 took revoked h3's table: %v", err)
	}
	// h3 still signs with the older (no) list: it rolls nothing back.
	if _, newCRL, _ := open(v2, "10.0.0.3", sign(h3)); newCRL || v2.CRLNumber() != 1 {
		t.Fatal("an older list replaced the newer")
	}
}

// TestCheckPeer: a pulling host proves its identity by signing the pull's
// message; another host's address, another message, a revoked identity or
// a signed table in its place are refused.
func TestCheckPeer(t *testing.T) {
	ca := mustCA(t)
	h1, v := mustIssue(t, ca, "h1", "10.0.0.1", time.Hour)
	msg := []byte("vxsec pull client v1\x00nonces")
	block, err := h1.SignPeer(msg)
	if err != nil {
		t.Fatal(err)
	}
	table, _ := h1.SignTable([]byte(`{}`))
	for _, tc := range []struct {
		name  string
		host  string
		block []byte
		msg   []byte
		ok    bool
	}{
		{"genuine", "10.0.0.1", block, msg, true},
		{"from another address", "10.0.0.2", block, msg, false},
		{"for another pull", "10.0.0.1", block, []byte("vxsec pull client v1\x00other"), false},
		{"a signed table instead", "10.0.0.1", table, msg, false},
	} {
		if err := v.CheckPeer(netip.MustParseAddr(tc.host), tc.block, tc.msg); (err == nil) != tc.ok {
			t.Errorf("%s: CheckPeer = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
	crl, _, err := Revoke(ca, "h1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.OfferCRL(crl); err != nil {
		t.Fatal(err)
	}
	if err := v.CheckPeer(netip.MustParseAddr("10.0.0.1"), block, msg); !errors.Is(err, ErrRevoked) {
		t.Fatalf("a revoked host's pull: %v", err)
	}
}

// TestRenew: a certificate issued again into the host's directory replaces
// the running one: later tables verify under the new serial, and revoking
// the old serial leaves the host trusted. Another host's certificate, or a
// revoked one, is not taken.
func TestRenew(t *testing.T) {
	ca := mustCA(t)
	addr := netip.MustParseAddr("192.0.2.31")
	dir := filepath.Join(t.TempDir(), "h1")
	if _, err := Issue(ca, dir, "h1", []netip.Addr{addr}, 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	id, _, err := Load(dir, addr)
	if err != nil {
		t.Fatal(err)
	}
	_, v := mustIssue(t, ca, "h2", "192.0.2.32", time.Hour)
	old := id.Serial()
	if _, err := Issue(ca, dir, "h1", []netip.Addr{addr}, 50*time.Minute); err != nil {
		t.Fatal(err)
	}
	next, _, err := Load(dir, addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := id.Renew(next); err != nil {
		t.Fatal(err)
	}
	if id.Serial().Cmp(old) == 0 || time.Until(id.Expires()) < 40*time.Minute {
		t.Fatalf("after the renewal: serial %x (was %x), expires %s", id.Serial(), old, id.Expires())
	}
	crl, _, err := Revoke(ca, hex.EncodeToString(old.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.OfferCRL(crl); err != nil {
		t.Fatal(err)
	}
	signed, err := id.SignTable([]byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, signer, _, err := v.OpenTable(addr, signed); err != nil || !strings.HasSuffix(signer, "#"+id.Serial().String()) {
		t.Fatalf("a table signed after the renewal, the old serial revoked: signer %q, %v", signer, err)
	}
	other, _ := mustIssue(t, ca, "h3", "192.0.2.31", time.Hour)
	if err := id.Renew(other); err == nil || !strings.Contains(err.Error(), `host "h3"`) {
		t.Fatalf("renewed with another host's certificate: %v", err)
	}
	// A certificate revoked before it is taken.
	crl2, _, err := Revoke(ca, "h1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := id.crl.offer(crl2); err != nil {
		t.Fatal(err)
	}
	if _, err := Issue(ca, dir, "h1", []netip.Addr{addr}, time.Hour); err != nil {
		t.Fatal(err)
	}
	again, _, _ := Load(dir, addr)
	if _, _, err := Revoke(ca, hex.EncodeToString(again.Serial().Bytes())); err != nil {
		t.Fatal(err)
	}
	crl3, _ := os.ReadFile(filepath.Join(ca, CRLFile))
	if _, err := id.crl.offer(crl3); err != nil {
		t.Fatal(err)
	}
	if err := id.Renew(again); !errors.Is(err, ErrRevoked) {
		t.Fatalf("renewed with a revoked certificate: %v", err)
	}
}
