package metrics

import (
	"io"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vxsec/vxsec/driver"
	"github.com/vxsec/vxsec/ipsec"
)

var (
	self  = netip.MustParseAddr("198.18.0.1")
	peerA = netip.MustParseAddr("198.18.0.2")
	peerB = netip.MustParseAddr("198.18.0.3")
	now   = time.Unix(1_800_000_000, 0)
)

// TestCollector: what a scrape makes of a snapshot. Each case gives the
// snapshot and the exposition lines it must contain and must not.
func TestCollector(t *testing.T) {
	active := &ipsec.Status{
		Active: true, Epochs: []uint64{uint64(now.Add(-90 * time.Second).UnixNano())}, Rotations: 3, LastRotation: now.Add(-90 * time.Second),
		Peers: []ipsec.PeerStatus{
			{Host: peerA, SPI: 0x100, Encap: "udp", InEncap: "esp", Since: now.Add(-30 * time.Second), Rekeys: 4},
			{Host: peerB}, // no key yet
		},
	}
	for _, tc := range []struct {
		name      string
		snap      Snapshot
		want, not []string
	}{
		{
			name: "plain",
			snap: Snapshot{Self: self, Members: map[string]int{"alive": 2, "failed": 1}, Networks: 2, LocalEndpoints: 3, RemoteEndpoints: 5,
				Drops: map[string]uint64{"non-member": 24}, Xfrm: map[string]uint64{"XfrmInNoStates": 7},
				Driver: driver.Counts{Reconciles: 9, TablesTaken: 4, PeerPasses: 2, ApplyLag: 1500 * time.Millisecond}},
			want: []string{
				`vxsec_cluster_members{state="alive"} 2`, `vxsec_cluster_members{state="failed"} 1`,
				`vxsec_networks 2`, `vxsec_endpoints{where="local"} 3`, `vxsec_endpoints{where="remote"} 5`,
				`vxsec_lock_drops_total{lock="non-member"} 24`, `vxsec_xfrm_errors_total{counter="XfrmInNoStates"} 7`,
				`vxsec_reconcile_runs_total 9`, `vxsec_tables_taken_total 4`, `vxsec_peer_passes_total 2`,
				`vxsec_table_apply_lag_seconds 1.5`, `vxsec_ipsec_active 0`,
			},
			not: []string{"vxsec_ipsec_epoch_age_seconds", "vxsec_ipsec_sa_bytes_total"},
		},
		{
			name: "encrypted",
			snap: Snapshot{Self: self, IPsec: active, Now: now, SAs: []ipsec.SAStats{
				{Src: self, Dst: peerA, SPI: 0x100, Bytes: 1000, Packets: 10},
				{Src: self, Dst: peerA, SPI: 0x0ff, Bytes: 500, Packets: 5}, // the previous, draining
				{Src: peerA, Dst: self, SPI: 0x200, Bytes: 2000, Packets: 20, Replay: 1, IntegrityFailed: 2},
			}},
			want: []string{
				`vxsec_ipsec_active 1`, `vxsec_ipsec_epoch_age_seconds 90`, `vxsec_ipsec_rotations_total 3`,
				`vxsec_ipsec_peer_key_age_seconds{peer="198.18.0.2"} 30`, `vxsec_ipsec_peer_rekeys_total{peer="198.18.0.2"} 4`,
				`vxsec_ipsec_peer_encapsulation{direction="out",encap="udp",peer="198.18.0.2"} 1`,
				`vxsec_ipsec_peer_encapsulation{direction="in",encap="esp",peer="198.18.0.2"} 1`,
				`vxsec_ipsec_sa_bytes_total{direction="out",peer="198.18.0.2"} 1500`,
				`vxsec_ipsec_sa_packets_total{direction="in",peer="198.18.0.2"} 20`,
				`vxsec_ipsec_sa_replay_failures_total{peer="198.18.0.2"} 1`,
				`vxsec_ipsec_sa_integrity_failures_total{peer="198.18.0.2"} 2`,
				`vxsec_ipsec_sa_out_seq{peer="198.18.0.2"} 10`,
				`vxsec_ipsec_peer_rekeys_total{peer="198.18.0.3"} 0`,
			},
			not: []string{`vxsec_ipsec_peer_key_age_seconds{peer="198.18.0.3"}`, `encap="",`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New(func() Snapshot { return tc.snap }, false)
			if err != nil {
				t.Fatal(err)
			}
			body := expose(t, m)
			for _, w := range tc.want {
				if !strings.Contains(body, w+"\n") {
					t.Errorf("missing %q", w)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(body, n) {
					t.Errorf("has %q", n)
				}
			}
			if t.Failed() {
				t.Logf("exposition:\n%s", body)
			}
		})
	}
}

// TestObserve: API calls count by method, errors apart.
func TestObserve(t *testing.T) {
	m, err := New(func() Snapshot { return Snapshot{} }, false)
	if err != nil {
		t.Fatal(err)
	}
	m.Observe("NetworkDriver.Join", 3*time.Millisecond, false)
	m.Observe("NetworkDriver.Join", 40*time.Millisecond, true)
	if n := testutil.CollectAndCount(m.apiCalls); n != 1 {
		t.Errorf("%d series of API calls, want 1", n)
	}
	body := expose(t, m)
	for _, w := range []string{`vxsec_api_call_duration_seconds_count{method="NetworkDriver.Join"} 2`,
		`vxsec_api_call_duration_seconds_bucket{method="NetworkDriver.Join",le="0.005"} 1`,
		`vxsec_api_call_errors_total{method="NetworkDriver.Join"} 1`} {
		if !strings.Contains(body, w+"\n") {
			t.Errorf("missing %q in:\n%s", w, body)
		}
	}
}

func expose(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}
