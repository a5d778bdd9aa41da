package driver

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vxsec/vxsec/announce"
)

// TestAttackClaims: of endpoints claiming one address or one MAC in a network,
// the one this host saw first holds it, whatever the senders' clocks say;
// a local endpoint holds its own against every remote claim; the holder
// keeps it across this host's restart; a released address goes to the
// next claim in line. Each attack has its positive control: the attacker
// (h3, whose clock says 1970) is otherwise a working member.
func TestAttackClaims(t *testing.T) {
	h2, h3 := netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3")
	subnet := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}
	mac := func(b byte) net.HardwareAddr { return net.HardwareAddr{2, 0, 0, 0, 0, b} }
	honest := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	epoch := time.Unix(0, 0).UTC()
	type claimed struct {
		ip  string
		mac byte
	}
	var seq uint64
	table := func(host netip.Addr, created time.Time, eps ...claimed) announce.Table {
		seq++
		tb := announce.Table{Host: host, Version: announce.Version{Epoch: 1, Seq: seq},
			Networks: []announce.Network{{ID: "n1", VNI: 7, Subnets: subnet, Created: created}}}
		for _, e := range eps {
			tb.Endpoints = append(tb.Endpoints, announce.Endpoint{VNI: 7, IP: netip.MustParseAddr(e.ip), MAC: mac(e.mac), Created: created})
		}
		return tb
	}

	h := newHarness(t)
	if err := h.d.CreateNetwork(ctxb(), CreateNetworkRequest{ID: "n1", Options: map[string]string{OptVNI: "7"},
		IPv4: []IPAMData{{Pool: "10.1.0.0/24"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.d.CreateEndpoint(ctxb(), CreateEndpointRequest{NetworkID: "n1", EndpointID: "local",
		Address: "10.1.0.9/24", MAC: mac(9).String()}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.d.Join(ctxb(), "n1", "local", "/var/run/docker/netns/local"); err != nil {
		t.Fatal(err)
	}
	publish := func(tb announce.Table) {
		t.Helper()
		h.clock.Advance(time.Second)
		h.d.SetRemote(tb)
		h.peersPass()
	}
	// peers is the network's entries as "ip mac via host".
	peers := func() []string {
		var out []string
		for _, d := range h.k.view().devices {
			for _, p := range d.peers {
				out = append(out, p.IP.String()+" "+p.MAC.String()+" via "+p.Host.String())
			}
		}
		slices.Sort(out)
		return out
	}
	want := func(what string, w ...string) {
		t.Helper()
		if got := peers(); !slices.Equal(got, w) {
			t.Fatalf("%s:\n got  %q\n want %q", what, got, w)
		}
	}

	// h2 holds 10.1.0.2 first; h3 then claims it, stamped 1970, and also
	// claims 10.1.0.4, which nobody holds (the positive control).
	publish(table(h2, honest, claimed{"10.1.0.2", 2}))
	publish(table(h3, epoch, claimed{"10.1.0.2", 0x32}, claimed{"10.1.0.4", 0x34}))
	want("an earlier-stamped later claim on a held address",
		"10.1.0.2 02:00:00:00:00:02 via 198.18.0.2", "10.1.0.4 02:00:00:00:00:34 via 198.18.0.3")

	// h3 claims h2's MAC under another address, and this host's own
	// address and MAC.
	publish(table(h3, epoch, claimed{"10.1.0.2", 0x32}, claimed{"10.1.0.4", 0x34}, claimed{"10.1.0.5", 2},
		claimed{"10.1.0.9", 0x39}, claimed{"10.1.0.6", 9}))
	want("a held MAC under another address, and the local endpoint's address and MAC",
		"10.1.0.2 02:00:00:00:00:02 via 198.18.0.2", "10.1.0.4 02:00:00:00:00:34 via 198.18.0.3")

	// Creating a local endpoint on an address or MAC a remote holds is
	// refused; the local endpoint that held its address first is not
	// displaced, on a join after the later claim.
	for _, c := range []struct{ addr, mac, wantErr string }{
		{"10.1.0.2/24", "", "address 10.1.0.2 is already used"},
		{"10.1.0.7/24", mac(0x34).String(), "MAC 02:00:00:00:00:34 is already used"},
	} {
		_, err := h.d.CreateEndpoint(ctxb(), CreateEndpointRequest{NetworkID: "n1", EndpointID: "new", Address: c.addr, MAC: c.mac})
		if err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Fatalf("local endpoint %s %s: err %v, want %q", c.addr, c.mac, err, c.wantErr)
		}
	}
	if err := h.d.Leave(ctxb(), "n1", "local"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.d.Join(ctxb(), "n1", "local", "/var/run/docker/netns/local"); err != nil {
		t.Fatalf("the local endpoint, first on its address, refused its join after a later remote claim: %v", err)
	}

	// The holder releases 10.1.0.2: the next claim in line gets it.
	publish(table(h2, honest))
	want("the holder released its address",
		"10.1.0.2 02:00:00:00:00:32 via 198.18.0.3", "10.1.0.4 02:00:00:00:00:34 via 198.18.0.3",
		"10.1.0.5 02:00:00:00:00:02 via 198.18.0.3")

	// This host restarts; h2 claims 10.1.0.2 again, and its table is the
	// first to arrive: the holder in the kernel stays the holder.
	if err := h.restart(); err != nil {
		t.Fatal(err)
	}
	publish(table(h2, epoch, claimed{"10.1.0.2", 2}))
	publish(table(h3, epoch, claimed{"10.1.0.2", 0x32}, claimed{"10.1.0.4", 0x34}))
	want("after a restart, a claim that arrives before the holder's",
		"10.1.0.2 02:00:00:00:00:32 via 198.18.0.3", "10.1.0.4 02:00:00:00:00:34 via 198.18.0.3")

	// Two claims this host first saw at one instant: the lower host.
	h.d.SetRemote(table(h3, honest, claimed{"10.1.0.8", 0x38}))
	h.d.SetRemote(table(h2, honest, claimed{"10.1.0.8", 0x28}))
	h.peersPass()
	if got := peers(); !slices.Contains(got, "10.1.0.8 02:00:00:00:00:28 via 198.18.0.2") {
		t.Fatalf("a tie: got %q, want 10.1.0.8 via the lower host", got)
	}
}

// TestOtherFamilyNotInstalled: a table from a host whose underlay address
// is IPv6, given to an IPv4 host, installs nothing; the same endpoints from
// an IPv4 host (the control) are installed.
func TestOtherFamilyNotInstalled(t *testing.T) {
	h := newHarness(t)
	if err := h.d.CreateNetwork(ctxb(), CreateNetworkRequest{ID: "n1", Options: map[string]string{OptVNI: "7"},
		IPv4: []IPAMData{{Pool: "10.1.0.0/24"}}}); err != nil {
		t.Fatal(err)
	}
	table := func(host string, seq uint64) announce.Table {
		return announce.Table{Host: netip.MustParseAddr(host), Version: announce.Version{Epoch: 1, Seq: seq},
			Networks:  []announce.Network{{ID: "n1", VNI: 7, Subnets: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}}},
			Endpoints: []announce.Endpoint{{VNI: 7, IP: netip.MustParseAddr("10.1.0.2"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}}}}
	}
	peers := func() int {
		n := 0
		for _, d := range h.k.view().devices {
			n += len(d.peers)
		}
		return n
	}
	for _, tc := range []struct {
		host string
		want int
	}{{"2001:2::2", 0}, {"198.18.0.2", 1}} {
		h.d.SetRemote(table(tc.host, 1))
		h.peersPass()
		if got := peers(); got != tc.want {
			t.Errorf("after a table of %s: %d remote entries, want %d", tc.host, got, tc.want)
		}
	}
}
