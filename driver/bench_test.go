package driver

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vxsec/vxsec/announce"
)

// BenchmarkRemoteChange is what a receiving host's driver does for one
// remote endpoint change, by the number of hosts in the cluster, each with
// 20 endpoints on one network as in the scale benchmark (`make bench` runs
// it; the figures are in docs/performance.md):
//   - arrival: the changed host's new table (SetRemote), which touches that
//     host's claims only, so its cost must not grow with the cluster;
//   - plan: a pass's plan of the network's entries (peersLocked), which
//     covers every entry and grows with them; applyPeers spaces passes
//     (four times the last one's duration), so in a burst one pass serves
//     many changes.
//
// The kernel's share of a pass (the netlink diff) is not here: the fake
// kernel would not measure it.
func BenchmarkRemoteChange(b *testing.B) {
	const perHost, vni = 20, 700
	for _, hosts := range []int{10, 50, 100, 200} {
		h := newHarness(b)
		if err := createNetOpts("", "bench", map[string]string{OptVNI: fmt.Sprint(vni)}, "10.0.0.0/8").do(h); err != nil {
			b.Fatal(err)
		}
		tables := make([]announce.Table, hosts)
		for i := range tables {
			tables[i] = benchTable(i, 1, vni, perHost, 0)
			h.d.SetRemote(tables[i])
		}
		n := h.d.nets["bench"]
		b.Run(fmt.Sprintf("hosts=%d/arrival", hosts), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				host := i % hosts
				t := &tables[host]
				// One endpoint leaves and another takes its place: one
				// change, a new version.
				*t = benchTable(host, t.Version.Seq+1, vni, perHost, int(t.Version.Seq))
				h.d.SetRemote(*t)
			}
		})
		b.Run(fmt.Sprintf("hosts=%d/plan", hosts), func(b *testing.B) {
			entries := 0
			for i := 0; i < b.N; i++ {
				h.d.mu.Lock()
				entries = len(h.d.peersLocked(n))
				h.d.mu.Unlock()
			}
			b.ReportMetric(float64(entries), "entries")
		})
	}
}

// benchTable is host i's table at version seq: perHost endpoints, the
// first of them numbered from shift so that each version differs from
// the last by one endpoint.
func benchTable(i int, seq uint64, vni uint32, perHost, shift int) announce.Table {
	host := netip.AddrFrom4([4]byte{198, 18, byte(i / 250), byte(1 + i%250)})
	created := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	t := announce.Table{Host: host, Version: announce.Version{Epoch: 1, Seq: seq},
		Networks: []announce.Network{{ID: "bench", VNI: vni, Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Created: created}}}
	for j := range perHost {
		k := (shift + j) % 250
		t.Endpoints = append(t.Endpoints, announce.Endpoint{VNI: vni,
			IP:  netip.AddrFrom4([4]byte{10, byte(i / 250), byte(1 + i%250), byte(1 + k)}),
			MAC: net.HardwareAddr{2, 0, byte(i / 250), byte(1 + i%250), 0, byte(1 + k)}, Created: created})
	}
	return t
}
