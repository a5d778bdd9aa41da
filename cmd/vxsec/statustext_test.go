package main

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vxsec/vxsec/driver"
	"github.com/vxsec/vxsec/gossip"
	"github.com/vxsec/vxsec/ipsec"
	"github.com/vxsec/vxsec/plugin"
)

// TestWriteStatus: what a person reads, warnings first. Each case gives a
// status and lines the text must hold, in order.
func TestWriteStatus(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	a, b := netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3")
	for _, tc := range []struct {
		name string
		st   daemonStatus
		want []string
		not  []string
	}{
		{
			name: "healthy",
			st: daemonStatus{Status: driver.Status{Node: "198.18.0.1", Networks: []driver.NetworkStatus{{ID: "0123456789abcdef0123", VNI: 7, Local: 1, Remote: 2}}},
				Members: []gossip.Member{{Name: "198.18.0.1", Status: "alive"}, {Name: "198.18.0.2", Status: "alive"}}},
			want: []string{"vxsec on 198.18.0.1", "Members: 2, 2 alive", "Networks: 1", "0123456789ab  7    1      2", "Drops: none"},
			not:  []string{"Warnings", "IPsec"},
		},
		{
			name: "trouble",
			st: daemonStatus{Status: driver.Status{Node: "203.0.113.7", Local: "10.0.0.2", IPsec: &ipsec.Status{Active: true, Epochs: []uint64{uint64(now.Add(-time.Hour).UnixNano())},
				Peers: []ipsec.PeerStatus{{Host: a, Encap: "udp", InEncap: "udp", Since: now.Add(-5 * time.Minute), Rekeys: 2, EncapWhy: "ESP in UDP: this host is behind NAT"}, {Host: b}}}},
				Members:  []gossip.Member{{Name: "203.0.113.7", Status: "alive"}, {Name: "198.18.0.3", Status: "failed"}},
				Drops:    map[string]uint64{"non-member": 24, "cleartext": 0},
				Refusals: []plugin.Refusal{{Time: now.Add(-time.Minute), Method: "CreateNetwork", Error: "option vni: bad"}}},
			want: []string{"vxsec on 203.0.113.7 (behind NAT: its own address is 10.0.0.2)", "Warnings:",
				"! member 198.18.0.3 is failed", "! no outbound key with 198.18.0.3", "! Docker's CreateNetwork failed 60s ago: option vni: bad",
				"Members: 2, 1 alive, 1 failed", "IPsec: active, 1 live epoch(s), newest 60m old",
				"198.18.0.2  udp    udp       5m       2       ESP in UDP: this host is behind NAT", "Drops (", "non-member 24"},
			not: []string{"cleartext 0"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sb strings.Builder
			writeStatus(&sb, tc.st, now)
			text, at := sb.String(), 0
			for _, w := range tc.want {
				i := strings.Index(text[at:], w)
				if i < 0 {
					t.Fatalf("%q missing (or out of order) in:\n%s", w, text)
				}
				at += i
			}
			for _, n := range tc.not {
				if strings.Contains(text, n) {
					t.Errorf("%q in:\n%s", n, text)
				}
			}
		})
	}
}
