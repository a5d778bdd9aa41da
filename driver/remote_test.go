package driver

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vxsec/vxsec/announce"
)

// Of endpoints claiming one address, a local one wins, then the earliest,
// then the lowest host; hosts whose network of the VNI is another network
// contribute nothing.
func TestPeersResolveAddressClaims(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	subnet := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}
	h1, h2, h3 := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3")
	ep := func(ip string, mac byte, created time.Time) announce.Endpoint {
		return announce.Endpoint{VNI: 7, IP: netip.MustParseAddr(ip), MAC: net.HardwareAddr{2, 0, 0, 0, 0, mac}, Created: created}
	}
	table := func(host netip.Addr, subnets []netip.Prefix, eps ...announce.Endpoint) announce.Table {
		return announce.Table{Host: host, Networks: []announce.Network{{ID: "n", VNI: 7, Subnets: subnets}}, Endpoints: eps}
	}
	n := &Network{ID: "n", VNI: 7, Subnets: subnet, Endpoints: map[string]*Endpoint{
		"local": {ID: "local", Address: netip.MustParsePrefix("10.1.0.9/24")},
	}}
	d := &Driver{now: time.Now, op: make(chan struct{}, 1), remote: map[netip.Addr]announce.Table{
		h1: table(h1, subnet, ep("10.1.0.2", 1, t0.Add(time.Second)), ep("10.1.0.3", 2, t0), ep("10.1.0.9", 3, t0)),
		h2: table(h2, subnet, ep("10.1.0.2", 4, t0), ep("10.1.0.3", 5, t0), ep("10.1.0.4", 6, t0)),
		h3: table(h3, []netip.Prefix{netip.MustParsePrefix("10.2.0.0/24")}, ep("10.1.0.5", 7, t0)),
	}}
	got := map[string]string{}
	for _, p := range d.peersLocked(n) {
		got[p.IP.String()] = p.Host.String() + " " + p.MAC.String()
	}
	want := map[string]string{
		"10.1.0.2": "198.18.0.2 02:00:00:00:00:04", // earlier than h1's
		"10.1.0.3": "198.18.0.1 02:00:00:00:00:02", // a tie: the lower host
		"10.1.0.4": "198.18.0.2 02:00:00:00:00:06",
		// 10.1.0.9 is local; h3's network of vni 7 has another subnet.
	}
	if len(got) != len(want) {
		t.Fatalf("peers %v, want %v", got, want)
	}
	for ip, w := range want {
		if got[ip] != w {
			t.Errorf("%s: got %q, want %q", ip, got[ip], w)
		}
	}
}
