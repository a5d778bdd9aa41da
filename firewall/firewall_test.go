package firewall

import (
	"net/netip"
	"testing"
)

func TestSameAddrs(t *testing.T) {
	a := netip.MustParseAddr("198.18.0.1")
	b := netip.MustParseAddr("198.18.0.2")
	v6 := netip.MustParseAddr("2001:db8::1")
	cases := []struct {
		name string
		x, y []netip.Addr
		want bool
	}{
		{"both-empty", nil, []netip.Addr{}, true},
		{"any-order", []netip.Addr{a, b, v6}, []netip.Addr{v6, b, a}, true},
		{"one-missing", []netip.Addr{a, b}, []netip.Addr{a}, false},
		{"another-address", []netip.Addr{a, b}, []netip.Addr{a, v6}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := sameAddrs(tc.x, tc.y); got != tc.want {
				t.Fatalf("sameAddrs(%v, %v) = %v, want %v", tc.x, tc.y, got, tc.want)
			}
		})
	}
}
