//go:build integration

package integration

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vxsec/vxsec/lab"
)

// TestHostBehindNAT: a host behind a NAT router (lab.AddHostBehindNAT: the
// router masquerades what it sends and forwards vxsec's ports to it) runs
// with its advertise address set to the router's, joins the cluster and
// carries a plain network both ways. The control first: from the switch
// the host's own address is unreachable, so nothing below could have
// gone around the NAT. Then: its status names both addresses; the peers
// know it only by the router's (members, member sets, FDB); every
// container reaches every other; and on the switch its VXLAN comes from
// and goes to the router's address only.
func TestHostBehindNAT(t *testing.T) {
	c := newCluster(t, 2)
	h1 := c.hosts[0]
	h3 := c.addHostBehindNAT(t, "h3")
	c.waitMembers(t, c.hosts, c.hosts)
	nat := h3.NAT

	// The control: the host's own address is not on the switch.
	if out, err := h1.Exec(ctxT(t), "ping", "-c", "2", "-i", "0.2", "-W", "1", nat.Private.String()); err == nil {
		t.Fatalf("h1 reached h3's own address %s across the NAT: the lab's NAT does not hide it:\n%s", nat.Private, out)
	}
	st, err := h3.Status(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.Node != nat.Public.String() || st.Local != nat.Private.String() {
		t.Fatalf("h3's status: node %q, local %q; want the router's %s and its own %s", st.Node, st.Local, nat.Public, nat.Private)
	}
	if log, _ := os.ReadFile(h3.LogPath); !strings.Contains(string(log), "behind NAT") {
		t.Errorf("h3's log does not say it is behind NAT:\n%s", h3.LogTail(30))
	}
	t.Logf("h3 behind NAT: advertises %s, its own address %s (unreachable from the switch)", st.Node, st.Local)

	const vni = 7901
	ids := createEverywhere(t, c.hosts, "nat", vni, "10.83.0.0/24")
	var cs []*lab.Container
	for i, h := range c.hosts {
		cs = append(cs, mustRun(t, h, fmt.Sprintf("c%d", i+1), ids[h], fmt.Sprintf("10.83.0.%d/24", 11+i)))
	}
	wantPlaced(t, c.hosts, cs, vni, 10*time.Second)
	wire, err := c.lab.Capture(ctxT(t), "")
	if err != nil {
		t.Fatal(err)
	}
	reachAll(t, cs)
	ps, err := wire.Stop()
	if err != nil {
		t.Fatal(err)
	}
	vx := ps.UDPTo(4800)
	fromNAT := vx.Where(func(p lab.Packet) bool { return p.Src == nat.Public })
	toNAT := vx.Where(func(p lab.Packet) bool { return p.Dst == nat.Public })
	private := ps.Where(func(p lab.Packet) bool { return p.Src == nat.Private || p.Dst == nat.Private })
	t.Logf("wire: %d VXLAN datagrams, %d from the router's address and %d to it; %d packets with h3's own address",
		len(vx), len(fromNAT), len(toNAT), len(private))
	if len(fromNAT) < 4 || len(toNAT) < 4 {
		t.Errorf("h3's VXLAN on the switch: %d from %s and %d to it, want its 4 pings' each way:\n%s", len(fromNAT), nat.Public, len(toNAT), vx)
	}
	if len(private) != 0 {
		t.Errorf("h3's own address %s appeared on the switch:\n%s", nat.Private, private)
	}
}
