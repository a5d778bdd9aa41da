package doctor

import (
	"bytes"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

// maxAnswer is gossip.MaxAnswer, the bound the daemon encodes to (not
// imported: this package stays pure logic).
const maxAnswer = 1024 - 128

// members makes n member addresses of one family.
func members(n int, v6 bool) Addrs {
	var out Addrs
	a := netip.MustParseAddr("198.18.0.0")
	if v6 {
		a = netip.MustParseAddr("2001:db8:ffff:ffff:ffff:ffff:ffff:0")
	}
	for i := 0; i < n; i++ {
		a = a.Next()
		out = append(out, a)
	}
	return out
}

// worst is the longest answer a member with n peers sends: every list
// full, every check failing, a full clock.
func worst(n int, v6 bool) Answer {
	m := members(n, v6)
	return Answer{Clock: time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli(),
		Lacks: []string{LackESP, LackGCM, LackVXLAN, LackNftables}, SwarmUnseen: true, Encap: "auto", Encrypted: true,
		Recording: 1 << 30, MTU: 65535, Small: m, Full: append(Addrs(nil), m...), ESP: append(Addrs(nil), m...)}
}

// TestEncodeFits: whatever the cluster's size, an answer fits one serf
// query response, and what was left out to fit is counted exactly (the
// doctor then checks no path it cannot see). Up to the sizes below nothing
// is left out: 38 members over IPv4 and 11 over IPv6 with every list full
// (an encrypted cluster), the worst case whole.
func TestEncodeFits(t *testing.T) {
	cases := []struct {
		name  string
		v6    bool
		whole int
	}{
		{"ipv4", false, 38},
		{"ipv6", true, 11},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, n := range []int{0, 1, 2, tc.whole, tc.whole + 1, 100, 256, 1000} {
				a := worst(n, tc.v6)
				b, err := Encode(a, maxAnswer)
				if err != nil {
					t.Fatalf("%d members: %v", n, err)
				}
				if len(b) > maxAnswer {
					t.Fatalf("%d members: %d bytes, over %d", n, len(b), maxAnswer)
				}
				got, err := Decode(b)
				if err != nil {
					t.Fatalf("%d members: %v", n, err)
				}
				lists := [][2]Addrs{{a.Small, got.Small}, {a.Full, got.Full}, {a.ESP, got.ESP}}
				cut := 0
				for i, l := range lists {
					if len(l[1])+got.cut(i) != len(l[0]) {
						t.Errorf("%d members, list %d: %d listed and %d counted as left out, want %d", n, i, len(l[1]), got.cut(i), len(l[0]))
					}
					if !reflect.DeepEqual(l[1], l[0][:len(l[1])]) && len(l[1]) > 0 {
						t.Errorf("%d members, list %d: listed %v, not a prefix of %v", n, i, l[1], l[0])
					}
					cut += got.cut(i)
				}
				if n <= tc.whole && cut != 0 {
					t.Errorf("%d members: %d addresses left out of %d bytes; the bound promises none up to %d", n, cut, len(b), tc.whole)
				}
				if n == tc.whole+1 && cut == 0 {
					t.Logf("%d members fit whole too (%d bytes): the documented bound is conservative", n, len(b))
				}
				if got.Clock != a.Clock || got.Recording != a.Recording || !got.Encrypted || len(got.Lacks) != 4 {
					t.Errorf("%d members: the rest did not survive: %+v", n, got)
				}
			}
		})
	}
}

// TestAddrsRejectsDamage: a malformed address list is an error, never a
// panic or a wrong address.
func TestAddrsRejectsDamage(t *testing.T) {
	for _, raw := range []string{`"BQ"`, `"AwECAw"`, `"!!"`, `5`, `"BMCqAAEE"`} {
		var as Addrs
		if err := as.UnmarshalJSON([]byte(raw)); err == nil {
			t.Errorf("%s decoded as %v", raw, as)
		}
	}
	var as Addrs
	good := Addrs{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}
	b, _ := good.MarshalJSON()
	if err := as.UnmarshalJSON(b); err != nil || !reflect.DeepEqual(as, good) || !bytes.HasPrefix(b, []byte(`"`)) {
		t.Errorf("round trip: %v, %v (%s)", as, err, b)
	}
}
