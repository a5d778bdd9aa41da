//go:build integration

package integration

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vxsec/vxsec/lab"
)

// TestIPv6Underlay: hosts whose only addresses are IPv6 form a cluster and
// carry a network across it. Every container reaches every other; the FDB
// points at the hosts' IPv6 addresses and the member set holds them; the
// MTU is derived for IPv6's larger header (1500 - 70): a full-size DF packet
// crosses in one unfragmented IPv6 datagram and one byte more is refused
// by the sender; nothing on the wire is IPv4. Then the non-member lock over
// IPv6: a stranger on the underlay sending VXLAN of the network's VNI is
// dropped, after a member's traffic was counted as delivered (the control).
func TestIPv6Underlay(t *testing.T) {
	c := newCluster6(t, 3)
	const vni = 7801
	ids := createEverywhere(t, c.hosts, "v6", vni, "10.81.0.0/24")
	var cs []*lab.Container
	for i, h := range c.hosts {
		cs = append(cs, mustRun(t, h, fmt.Sprintf("c%d", i+1), ids[h], fmt.Sprintf("10.81.0.%d/24", 11+i)))
	}
	for _, h := range c.hosts {
		if !h.Addr.Is6() {
			t.Fatalf("%s has underlay address %s: want IPv6", h.Name, h.Addr)
		}
	}
	wantPlaced(t, c.hosts, cs, vni, 5*time.Second)

	wire, err := c.lab.Capture(ctxT(t), "")
	if err != nil {
		t.Fatal(err)
	}
	reachAll(t, cs)
	c1, c2 := cs[0], cs[1]
	const full = 1500 - 70 - 28 // underlay MTU - VXLAN over IPv6 - inner IPv4 and ICMP
	r, err := c1.Ping(ctxT(t), c2.IP(), "-c", "3", "-i", "0.2", "-W", "1", "-M", "do", "-s", fmt.Sprint(full))
	if err != nil || r.Received != 3 {
		t.Fatalf("%d-byte DF ping across hosts over IPv6: %+v %v", full, r, err)
	}
	over, _ := c1.Ping(ctxT(t), c2.IP(), "-c", "1", "-W", "1", "-M", "do", "-s", fmt.Sprint(full+1))
	if over.Received != 0 || !strings.Contains(over.Output, "message too long") {
		t.Fatalf("%d-byte DF ping: want a local 'message too long', got:\n%s", full+1, over.Output)
	}
	ps, err := wire.Stop()
	if err != nil {
		t.Fatal(err)
	}
	vx := ps.UDPTo(4800)
	big := vx.Where(func(p lab.Packet) bool { return p.Len == 1500 })
	v4 := ps.Where(func(p lab.Packet) bool { return p.EtherType == 0x0800 || p.EtherType == 0x0806 })
	frag := ps.Where(func(p lab.Packet) bool { return p.EtherType == 0x86dd && p.Proto == 44 })
	t.Logf("wire: %d packets, %d VXLAN over IPv6 (%d of 1500 bytes), %d IPv4 or ARP, %d IPv6 fragments", len(ps), len(vx), len(big), len(v4), len(frag))
	if len(big) < 6 {
		t.Errorf("%d VXLAN datagrams of exactly 1500 bytes on the wire, want the 3 full-size pings and their 3 replies:\n%s", len(big), vx)
	}
	if len(v4) > 0 || len(frag) > 0 {
		t.Errorf("on an IPv6-only underlay the wire carried %d IPv4/ARP packets and %d IPv6 fragments:\n%s%s", len(v4), len(frag), v4, frag)
	}
	for _, p := range vx {
		if !p.Src.Is6() || !p.Dst.Is6() {
			t.Errorf("VXLAN not over IPv6: %s", p)
		}
	}

	// The non-member lock over IPv6, with its control.
	h1, h2 := c.hosts[0], c.hosts[1]
	victim, friend := cs[0], cs[1]
	rx0, drops0 := rxPackets(t, victim), dataPortDrops(t, h1)
	if r, err := friend.Ping(ctxT(t), victim.IP(), "-c", "10", "-i", "0.05", "-W", "1"); err != nil || r.Received != 10 {
		t.Fatalf("member's ping from %s: %+v %v", h2.Name, r, err)
	}
	if rx := rxPackets(t, victim); rx-rx0 < 10 {
		t.Fatalf("victim's rx counter moved by %d for 10 member pings: the counter cannot be trusted", rx-rx0)
	}
	if d := dataPortDrops(t, h1); d != drops0 {
		t.Errorf("a member's traffic was counted as dropped: %d → %d", drops0, d)
	}
	rogue := rogueVTEP(t, c, netip.MustParseAddr("2001:2::c8"), vni, h1, victim, "10.81.0.200/24")
	injectFails(t, rogue, h1, victim)
	reachFast(t, friend, victim.IP())
}
