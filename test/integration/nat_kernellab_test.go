//go:build integration && kernellab

package integration

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vxsec/vxsec/espprobe"
	"github.com/vxsec/vxsec/ipsec"
	"github.com/vxsec/vxsec/lab"
)

// TestEncryptedBehindNAT: h3 sits behind a NAT router that masquerades what
// it sends and forwards vxsec's ports to it (lab.AddHostBehindNAT), and
// advertises the router's address; h1 and h2 are on the switch, which
// passes ESP. With default settings (auto):
//   - h3's pairs run ESP in UDP both ways and say why (this host / the peer
//     is behind NAT), while h1–h2, the control, runs native ESP: auto chose
//     UDP for the NAT, not for want of ESP;
//   - containers talk both ways between h3 and each peer;
//   - the switch carries h3's encrypted traffic only as ESP in UDP between
//     the router's address and the peers' port 4802: no native ESP but the
//     probes, nothing cleartext, never h3's own address;
//   - h3 sends NAT keepalives (one 0xff byte, RFC 3948) to each peer;
//   - full-size DF pings pass both ways at the encrypted MTU;
//   - 10 rotations (h3's and a peer's) lose nothing at 100 packets/s.
func TestEncryptedBehindNAT(t *testing.T) {
	if err := ipsec.Probe(); err != nil {
		t.Fatalf("the kernel lab's kernel must have ESP and GCM: %v", err)
	}
	const udpPort = 4802
	c := newIdentityCluster(t, 2)
	h1, h2 := c.hosts[0], c.hosts[1]
	h3 := c.addHostBehindNAT(t, "h3")
	c.waitMembers(t, c.hosts, c.hosts)
	nat := h3.NAT

	const evni = 8401
	ids := map[*lab.Host]string{}
	cs := map[*lab.Host]*lab.Container{}
	for i, h := range c.hosts {
		ids[h] = "encn-" + h.Name
		mustCreateNetwork(t, h, ids[h], map[string]string{"vni": strconv.Itoa(evni), "encrypted": ""}, "10.95.0.0/24", "")
		cs[h] = mustRun(t, h, fmt.Sprintf("n%d", i+1), ids[h], fmt.Sprintf("10.95.0.%d/24", 11+i))
	}
	for _, h := range c.hosts {
		waitCounts(t, h, evni, 1, 2, 30*time.Second)
	}
	waitAllKeyed(t, c.hosts)
	// Auto mode moves h1–h2 to native ESP once each has seen the other's
	// probes; the pairs with h3 stay in UDP.
	if err := lab.WaitFor(ctxT(t), rekeyBound, func() error {
		for _, pr := range [][3]any{{h1, h2, "esp"}, {h2, h1, "esp"}, {h1, h3, "udp"}, {h3, h1, "udp"}, {h2, h3, "udp"}, {h3, h2, "udp"}} {
			from, to, want := pr[0].(*lab.Host), pr[1].(*lab.Host), pr[2].(string)
			st, err := from.Status(ctxT(t))
			if err != nil {
				return err
			}
			p, _ := st.Peer(to.Addr.String())
			if p.Encap != want {
				return fmt.Errorf("%s sends to %s in %q (%s), want %s", from.Name, to.Name, p.Encap, p.EncapWhy, want)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	waitAllKeyed(t, c.hosts)
	for _, pr := range [][3]any{{h3, h1, "this host is behind NAT"}, {h1, h3, "the peer is behind NAT"}, {h1, h2, "native ESP"}} {
		from, to, why := pr[0].(*lab.Host), pr[1].(*lab.Host), pr[2].(string)
		st, err := from.Status(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		p, _ := st.Peer(to.Addr.String())
		if !strings.Contains(p.EncapWhy, why) || !strings.Contains(p.InEncapWhy, why) {
			t.Errorf("%s's status of %s: sends in %s (%q), receives in %s (%q); want both to say %q",
				from.Name, to.Name, p.Encap, p.EncapWhy, p.InEncap, p.InEncapWhy, why)
		}
		t.Logf("%s → %s: %s (%s); %s → %s: %s (%s)", from.Name, to.Name, p.Encap, p.EncapWhy, to.Name, from.Name, p.InEncap, p.InEncapWhy)
	}

	t.Run("wire", func(t *testing.T) {
		capt, err := c.lab.Capture(ctxT(t), "")
		if err != nil {
			t.Fatal(err)
		}
		defer capt.Stop()
		for _, pr := range [][2]*lab.Host{{h1, h3}, {h3, h1}, {h2, h3}, {h3, h2}, {h1, h2}} {
			a, b := cs[pr[0]], cs[pr[1]]
			if r, err := a.Ping(ctxT(t), b.IP(), "-c", "20", "-i", "0.05", "-W", "2"); err != nil || r.Received != 20 {
				t.Fatalf("%s → %s: %+v %v", a.Name, b.Name, r, err)
			}
		}
		keepalive := func(p lab.Packet) bool {
			return p.Src == nat.Public && p.SrcPort == udpPort && p.DstPort == udpPort && len(p.Payload) == 1 && p.Payload[0] == 0xff
		}
		// Keepalives go every round of probes (espprobe.Every).
		pk := wireUntil(t, capt, func(ps lab.Packets) error {
			for _, peer := range []*lab.Host{h1, h2} {
				if n := len(ps.Where(func(p lab.Packet) bool { return keepalive(p) && p.Dst == peer.Addr })); n == 0 {
					return fmt.Errorf("no NAT keepalive from %s to %s yet", nat.Public, peer.Name)
				}
			}
			return nil
		})
		withNAT := pk.Where(func(p lab.Packet) bool { return p.Src == nat.Public || p.Dst == nat.Public })
		inUDP := withNAT.UDPTo(udpPort).Where(func(p lab.Packet) bool { return p.SrcPort == udpPort && len(p.Payload) > 8 })
		native := withNAT.Where(func(p lab.Packet) bool { return p.Proto == lab.ProtoESP && p.SPI != espprobe.SPI })
		clear := pk.UDPTo(encPort)
		private := pk.Where(func(p lab.Packet) bool { return p.Src == nat.Private || p.Dst == nat.Private })
		control := pk.Where(func(p lab.Packet) bool {
			return p.Proto == lab.ProtoESP && p.SPI != espprobe.SPI && (p.Src == h1.Addr && p.Dst == h2.Addr || p.Src == h2.Addr && p.Dst == h1.Addr)
		})
		keep := pk.Where(keepalive)
		t.Logf("on the wire: %d ESP-in-UDP datagrams between %s (h3's NAT) and its peers, %d native ESP with it (probes excluded), "+
			"%d cleartext to %d, %d packets with h3's own address, %d keepalives from it; h1–h2 (the control): %d native ESP",
			len(inUDP), nat.Public, len(native), len(clear), encPort, len(private), len(keep), len(control))
		if len(inUDP) < 160 {
			t.Errorf("%d ESP-in-UDP datagrams with h3's NAT for 4 × 20 pings and replies, want at least 160", len(inUDP))
		}
		if len(native) != 0 || len(clear) != 0 || len(private) != 0 {
			t.Errorf("want no native ESP with h3's NAT, no cleartext, never h3's own address:\n%s%s%s", native, clear, private)
		}
		if len(control) < 40 {
			t.Errorf("h1–h2 carried %d native ESP packets for 20 pings and replies: the control does not show auto choosing native ESP", len(control))
		}
	})

	t.Run("mtu-with-df", func(t *testing.T) {
		mtu := ipsec.ContainerMTU(1500, false)
		dfBothWays(t, cs[h1], cs[h3], mtu)
		t.Logf("MTU %d: full-size DF pings pass both ways between h1 and h3 (behind NAT), one byte more is refused at the sender", mtu)
	})

	t.Run("rotation-zero-loss", func(t *testing.T) {
		rotateUnderPing(t, []*lab.Host{h3, h1, h2}, cs[h3], cs[h1], 10, "across the NAT")
	})

	// The keys' metrics, scraped from h3 as Prometheus would: per peer and
	// direction, bytes on the live SAs and the encapsulation in use; the
	// rotations counted; no integrity or replay failure.
	t.Run("metrics", func(t *testing.T) {
		for _, peer := range []*lab.Host{h1, h2} {
			reachFast(t, cs[h3], cs[peer].IP())
			reachFast(t, cs[peer], cs[h3].IP())
		}
		fams := scrape(t, h3)
		for _, peer := range []*lab.Host{h1, h2} {
			for _, dir := range []string{"in", "out"} {
				l := map[string]string{"peer": peer.Addr.String(), "direction": dir}
				if v, ok := metricValue(fams, "vxsec_ipsec_sa_packets_total", l); !ok || v == 0 {
					t.Errorf("vxsec_ipsec_sa_packets_total%v = %v (present %v), want > 0", l, v, ok)
				}
				if v, ok := metricValue(fams, "vxsec_ipsec_peer_encapsulation", map[string]string{"peer": peer.Addr.String(), "direction": dir, "encap": "udp"}); !ok || v != 1 {
					t.Errorf("h3's encapsulation with %s (%s): udp %v (present %v), want 1", peer.Name, dir, v, ok)
				}
			}
			for _, name := range []string{"vxsec_ipsec_sa_integrity_failures_total", "vxsec_ipsec_sa_replay_failures_total"} {
				if v, ok := metricValue(fams, name, map[string]string{"peer": peer.Addr.String()}); !ok || v != 0 {
					t.Errorf("%s{peer=%s} = %v (present %v), want 0", name, peer.Addr, v, ok)
				}
			}
			if v, ok := metricValue(fams, "vxsec_ipsec_sa_out_seq", map[string]string{"peer": peer.Addr.String()}); !ok || v == 0 {
				t.Errorf("vxsec_ipsec_sa_out_seq{peer=%s} = %v (present %v), want > 0", peer.Addr, v, ok)
			}
		}
		rot, _ := metricValue(fams, "vxsec_ipsec_rotations_total", nil)
		if rot < 5 {
			t.Errorf("vxsec_ipsec_rotations_total = %v after h3 rotated 5 times", rot)
		}
		out, _ := metricValue(fams, "vxsec_ipsec_sa_packets_total", map[string]string{"peer": h1.Addr.String(), "direction": "out"})
		t.Logf("h3's metrics: %v rotations; %v packets out to h1 on the live SAs; encapsulation udp both ways with both peers; 0 integrity and replay failures", rot, out)
	})
}
