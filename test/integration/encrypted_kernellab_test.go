//go:build integration && kernellab

package integration

// Encrypted networks on a kernel with ESP and GCM: this file runs only in
// the kernel lab (scripts/kernel-lab.sh, tier kernel-lab of scripts/test.sh),
// where three lab hosts run the real daemon on real xfrm. The wire is judged
// by captures on the lab's switch, never by the daemons' own word.

import (
	be "encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vxsec/vxsec/espprobe"
	"github.com/vxsec/vxsec/firewall"
	"github.com/vxsec/vxsec/internal/testutil"
	"github.com/vxsec/vxsec/ipsec"
	"github.com/vxsec/vxsec/lab"
)

const (
	encPort   = 4801
	plainPort = 4800
	// rekeyBound is how long a rotation or a re-key may take under TCG.
	rekeyBound = 60 * time.Second
)

func TestEncrypted(t *testing.T) {
	if err := ipsec.Probe(); err != nil {
		t.Fatalf("the kernel lab's kernel must have ESP and GCM: %v", err)
	}
	// With host identities: every table, and so every X25519 key the pair
	// keys derive from, is signed by its host (docs/identity.md).
	c := newIdentityCluster(t, 3)
	h1, h2, h3 := c.hosts[0], c.hosts[1], c.hosts[2]
	const evni, pvni = 8101, 8102
	eids := map[*lab.Host]string{}
	for _, h := range c.hosts {
		eids[h] = "enc-" + h.Name
		mustCreateNetwork(t, h, eids[h], map[string]string{"vni": strconv.Itoa(evni), "encrypted": ""}, "10.90.0.0/24", "")
	}
	pids := createEverywhere(t, c.hosts, "pla", pvni, "10.91.0.0/24")
	e1 := mustRun(t, h1, "e1", eids[h1], "10.90.0.11/24")
	e2 := mustRun(t, h2, "e2", eids[h2], "10.90.0.12/24")
	e3 := mustRun(t, h3, "e3", eids[h3], "10.90.0.13/24")
	p1 := mustRun(t, h1, "p1", pids[h1], "10.91.0.11/24")
	p2 := mustRun(t, h2, "p2", pids[h2], "10.91.0.12/24")
	for _, h := range c.hosts {
		waitCounts(t, h, evni, 1, 2, 30*time.Second)
	}
	took := waitAllKeyed(t, c.hosts)
	t.Logf("every pair keyed %v after the endpoints were known", took.Round(time.Millisecond))
	t.Logf("every pair on native ESP %v later (VXSEC_ESP_ENCAP=auto: UDP until each peer's probes arrive)", waitEncap(t, c.hosts, "esp").Round(time.Millisecond))
	for _, h := range c.hosts {
		st, err := h.Status(ctxT(t))
		if err != nil || st.Identity == nil || st.Identity.Name != h.Name {
			t.Fatalf("%s runs without its identity: %+v %v", h.Name, st.Identity, err)
		}
		gs, err := h.GossipStats(ctxT(t))
		if err != nil || gs.Refused["table-identity"] != 0 {
			t.Fatalf("%s refused a signed table of the cluster: %+v %v", h.Name, gs.Refused, err)
		}
		// Every SA's key is bound to both hosts' identities (the
		// identity-bound schedule, ipsec.SAKey), not to addresses alone.
		for _, o := range c.hosts {
			if p, ok := st.Peer(o.Addr.String()); o != h && (!ok || p.Identity != o.Name) {
				t.Fatalf("%s sends to %s under keys bound to identity %q, want %q", h.Name, o.Name, p.Identity, o.Name)
			}
		}
	}
	for _, pair := range [][2]*lab.Container{{e1, e2}, {e2, e3}, {e3, e1}} {
		reachFast(t, pair[0], pair[1].IP())
	}

	t.Run("wire-only-esp", func(t *testing.T) {
		capt, err := c.lab.Capture(ctxT(t), fmt.Sprintf("esp or udp port %d or udp port %d", encPort, plainPort))
		if err != nil {
			t.Fatal(err)
		}
		defer capt.Stop()
		for _, pr := range []struct {
			from *lab.Container
			to   string
		}{{e1, e2.IP()}, {e2, e3.IP()}, {p1, p2.IP()}} {
			r, err := pr.from.Ping(ctxT(t), pr.to, "-c", "20", "-i", "0.05", "-W", "2")
			if err != nil || r.Received != 20 {
				t.Fatalf("%s → %s: %+v %v", pr.from.Name, pr.to, r, err)
			}
		}
		pk := wireUntil(t, capt, func(ps lab.Packets) error {
			if n := ps.CountESP(h1.Addr, h2.Addr); n < 40 {
				return fmt.Errorf("%d ESP packets between h1 and h2, want at least 40", n)
			}
			if n := ps.CountUDP(plainPort); n < 40 {
				return fmt.Errorf("%d VXLAN datagrams of the plain network, want at least 40", n)
			}
			return nil
		})
		if clear := pk.UDPTo(encPort); len(clear) != 0 {
			t.Fatalf("%d cleartext datagrams to the encrypted port crossed the wire:\n%s", len(clear), clear)
		}
		t.Logf("on the wire: %d ESP h1↔h2, %d ESP h2↔h3, %d plain VXLAN, 0 cleartext to %d",
			pk.CountESP(h1.Addr, h2.Addr), pk.CountESP(h2.Addr, h3.Addr), pk.CountUDP(plainPort), encPort)
	})

	t.Run("sa-parameters", func(t *testing.T) {
		out, err := h1.Exec(ctxT(t), "ip", "-d", "xfrm", "state")
		if err != nil {
			t.Fatal(err)
		}
		// Every SA: AES-GCM with the full 128-bit ICV, transport mode,
		// ESN with a 128-packet replay window.
		n := strings.Count(out, "proto esp")
		for _, want := range []string{"aead rfc4106(gcm(aes))", "mode transport", "flag esn", "replay_window 128"} {
			if got := strings.Count(out, want); got != n || n == 0 {
				t.Errorf("%d of h1's %d SAs show %q:\n%s", got, n, want, out)
			}
		}
		if got := len(regexp.MustCompile(`aead rfc4106\(gcm\(aes\)\) 0x[0-9a-f]{72} 128`).FindAllString(out, -1)); got != n {
			t.Errorf("%d of h1's %d SAs have a 256-bit key with salt and a 128-bit ICV:\n%s", got, n, out)
		}
	})

	t.Run("mtu-with-df", func(t *testing.T) {
		const mtu = 1408 // ipsec.ContainerMTU(1500, false): room for ESP in UDP
		if got := ipsec.ContainerMTU(1500, false); got != mtu {
			t.Fatalf("ContainerMTU(1500) = %d, want %d", got, mtu)
		}
		r, err := e1.Ping(ctxT(t), e2.IP(), "-c", "3", "-M", "do", "-s", strconv.Itoa(mtu-28), "-W", "2")
		if err != nil || r.Received != 3 {
			t.Fatalf("full-size DF ping at MTU %d: %+v %v", mtu, r, err)
		}
		r, _ = e1.Ping(ctxT(t), e2.IP(), "-c", "1", "-M", "do", "-s", strconv.Itoa(mtu-27), "-W", "2")
		if r.Received != 0 || !strings.Contains(r.Output, "message too long") {
			t.Fatalf("one byte over the MTU with DF must be refused at the sender:\n%s", r.Output)
		}
	})

	t.Run("cleartext-from-member-address-dropped", func(t *testing.T) {
		// A machine on the underlay forges h2's address and sends VXLAN of
		// the encrypted network to h1 in cleartext.
		rogue, err := c.lab.AddNode(ctxT(t), "rogue", netip.MustParseAddr("198.18.0.201"))
		if err != nil {
			t.Fatal(err)
		}
		// The forger must not poison h1's ARP cache with h2's address (an
		// ARP request from it would): it knows h1's MAC statically and
		// answers no ARP.
		h1MAC, err := h1.Exec(ctxT(t), "cat", "/sys/class/net/eth0/address")
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range [][]string{
			{"sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=8"},
			{"ip", "addr", "add", h2.Addr.String() + "/32", "dev", "eth0"},
			{"ip", "neigh", "replace", h1.Addr.String(), "lladdr", strings.TrimSpace(h1MAC), "dev", "eth0", "nud", "permanent"},
			{"ip", "link", "add", "vx0", "type", "vxlan", "id", strconv.Itoa(evni), "dstport", strconv.Itoa(encPort),
				"local", h2.Addr.String(), "remote", h1.Addr.String(), "nolearning"},
			{"ip", "link", "set", "vx0", "address", e2.MAC},
			{"ip", "addr", "add", "10.90.0.212/24", "dev", "vx0"},
			{"ip", "link", "set", "vx0", "up"},
			{"ip", "neigh", "replace", e1.IP(), "lladdr", e1.MAC, "dev", "vx0", "nud", "permanent"},
			{"bridge", "fdb", "append", e1.MAC, "dev", "vx0", "dst", h1.Addr.String()},
		} {
			if _, err := rogue.Exec(ctxT(t), s...); err != nil {
				t.Fatal(err)
			}
		}
		capt, err := c.lab.Capture(ctxT(t), fmt.Sprintf("udp port %d", encPort))
		if err != nil {
			t.Fatal(err)
		}
		defer capt.Stop()
		rx0, drops0, mism0 := rxPackets(t, e1), secpathDrops(t, h1), xfrmStat(t, h1, "XfrmInTmplMismatch")
		const sent = 20
		r, _ := rogue.Ping(ctxT(t), e1.IP(), "-c", strconv.Itoa(sent), "-i", "0.05", "-W", "1")
		if r.Received != 0 {
			t.Errorf("the forger got %d answers:\n%s", r.Received, r.Output)
		}
		pk, err := capt.Wait(ctxT(t), 10*time.Second, func(ps lab.Packets) error {
			if n := ps.CountUDP(encPort); n < sent {
				return fmt.Errorf("%d forged datagrams seen on the wire, want %d", n, sent)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err) // the positive control: the forgery did cross the wire
		}
		if rx := rxPackets(t, e1); rx != rx0 {
			t.Errorf("the container received %d packets during the forgery", rx-rx0)
		}
		drops, mism := secpathDrops(t, h1)-drops0, xfrmStat(t, h1, "XfrmInTmplMismatch")-mism0
		t.Logf("forged %d cleartext datagrams from h2's address (%d on the wire): h1's secpath rule dropped %d, xfrm mismatches +%d, container saw 0",
			sent, pk.CountUDP(encPort), drops, mism)
		if drops < sent {
			t.Errorf("h1's nft secpath rule dropped %d, want at least %d", drops, sent)
		}
		if _, err := rogue.Exec(ctxT(t), "ip", "link", "set", "eth0", "down"); err != nil {
			t.Fatal(err)
		}
		reachFast(t, e2, e1.IP()) // the real h2 still gets through
	})

	t.Run("segmentation", func(t *testing.T) {
		// The tenants of h1 and h2 aim hand-made VXLAN at e2 on the
		// encrypted port: before issue 10, h1's own policy encrypted an
		// unprivileged user's datagram under vxsec's SA and e2 got it.
		checkSegmentation(t, encPort, e1, e2, evni, segmentationInjectors(t, h1, h2, true))
	})

	t.Run("rotation-zero-loss", func(t *testing.T) {
		const rotations = 20
		var took time.Duration
		r, err := e1.PingAcross(ctxT(t), e2.IP(), []string{"-D", "-O", "-i", "0.01", "-W", "1"}, func() error {
			start := time.Now()
			for i := 0; i < rotations; i++ {
				h := []*lab.Host{h1, h2}[i%2]
				if err := h.Client().Call(ctxT(t), "VxSec.Rotate", struct{}{}, nil); err != nil {
					return err
				}
				waitAllKeyed(t, c.hosts)
			}
			took = time.Since(start)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%d rotations (alternating h1, h2) in %v, each waited until every pair used the new keys: ping at 100/s sent %d, received %d",
			rotations, took.Round(time.Millisecond), r.Sent, r.Received)
		if r.Sent < 100 || r.Received != r.Sent {
			t.Errorf("lost %d of %d packets across %d rotations; unanswered:\n%s", r.Sent-r.Received, r.Sent, rotations, unanswered(r.Output))
			for _, h := range []*lab.Host{h1, h2} {
				t.Logf("%s's key events:\n%s", h.Name, grepLog(t, h, "switched", "retired", "rotating", "removing", "error"))
			}
		}
	})

	t.Run("restart-rekeys-without-loss", func(t *testing.T) {
		before := spis(t, h2)
		var took time.Duration
		r, err := e1.PingAcross(ctxT(t), e2.IP(), []string{"-i", "0.01", "-W", "1"}, func() error {
			if err := h2.Restart(ctxT(t), syscall.SIGKILL); err != nil {
				return err
			}
			took = waitAllKeyed(t, c.hosts)
			testutil.Until(t, rekeyBound, "h2 drops its previous run's SAs", func() error {
				st, err := h2.Status(ctxT(t))
				if err != nil {
					return err
				}
				if st.IPsec.Legacy != 0 {
					return fmt.Errorf("%d SAs of the previous run left", st.IPsec.Legacy)
				}
				return nil
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("h2's daemon killed and restarted: re-keyed with every peer %v after it came back; ping at 100/s sent %d, received %d",
			took.Round(time.Millisecond), r.Sent, r.Received)
		if r.Received != r.Sent {
			t.Fatalf("lost %d of %d packets across a daemon restart\n%s", r.Sent-r.Received, r.Sent, tail(r.Output, 20))
		}
		// A superseded SA stays for its grace (ipsec.DefaultGrace) after
		// the switch, then goes.
		testutil.Until(t, rekeyBound, "h2 removes every SA of its previous run", func() error {
			for spi := range spis(t, h2) {
				if before[spi] {
					return fmt.Errorf("SA spi %s of the previous run is still in h2's kernel", spi)
				}
			}
			return nil
		})
	})

	t.Run("kernel-state-lost-fails-closed-then-repaired", func(t *testing.T) {
		// Somebody flushes h1's SAs and policies (xfrm guard included):
		// nothing may leave in cleartext meanwhile, and a reconcile (the
		// daemon's every 30 s, here asked for with VxSec.Reconcile so the
		// test does not wait for the period) restores encrypted traffic.
		capt, err := c.lab.Capture(ctxT(t), fmt.Sprintf("udp port %d", encPort))
		if err != nil {
			t.Fatal(err)
		}
		defer capt.Stop()
		for _, args := range [][]string{{"ip", "xfrm", "state", "flush"}, {"ip", "xfrm", "policy", "flush"}} {
			if _, err := h1.Exec(ctxT(t), args...); err != nil {
				t.Fatal(err)
			}
		}
		// With vxsec's policies gone the kernel would send the network's
		// VXLAN in the clear: the firewall's postrouting rule (`rt ipsec
		// missing`) must stop it on h1, until the reconcile restores them.
		drops0 := ruleDrops(t, h1, "rt ipsec missing")
		t.Cleanup(func() {
			if t.Failed() {
				for _, h := range []*lab.Host{h1, h2} {
					t.Logf("%s's IPsec and reconcile events:\n%s", h.Name, grepLog(t, h, "missing", "reinstall", "switched", "reconcile", "level=ERROR", "level=WARN msg=\"[^[]"))
				}
				out, _ := h1.Exec(ctxT(t), "ip", "xfrm", "policy")
				t.Logf("h1's policies:\n%s", out)
				out, _ = h1.Exec(ctxT(t), "ip", "xfrm", "state")
				t.Logf("h1's states:\n%s", out)
			}
		})
		ping := func() error {
			r, err := e1.Ping(ctxT(t), e2.IP(), "-c", "1", "-W", "1")
			if err != nil {
				return err
			}
			if r.Received == 0 {
				return fmt.Errorf("no reply yet")
			}
			return nil
		}
		// The positive control first: cleartext was offered, and the
		// firewall stopped it.
		testutil.Until(t, 30*time.Second, "h1's firewall stops the cleartext the flush put at risk", func() error {
			if ping() == nil {
				return nil // the policies are back (a periodic reconcile): counted below
			}
			if ruleDrops(t, h1, "rt ipsec missing") == drops0 {
				return fmt.Errorf("nothing dropped yet")
			}
			return nil
		})
		if err := h1.Client().Call(ctxT(t), "VxSec.Reconcile", struct{}{}, nil); err != nil {
			t.Fatal(err)
		}
		took := testutil.Until(t, 60*time.Second, "e1 reaches e2 again after the reconcile", ping)
		pk, err := capt.Stop()
		if err != nil {
			t.Fatal(err)
		}
		drops := ruleDrops(t, h1, "rt ipsec missing") - drops0
		t.Logf("after flushing h1's xfrm state and policies: encrypted traffic back %v after the reconcile was asked for; h1's firewall stopped %d cleartext datagrams; %d reached the wire",
			took.Round(time.Millisecond), drops, pk.CountUDP(encPort))
		if n := pk.CountUDP(encPort); n != 0 {
			t.Errorf("%d cleartext datagrams to %d left h1 while its policies were flushed:\n%s", n, encPort, pk.UDPTo(encPort))
		}
		if drops == 0 {
			t.Errorf("h1's postrouting rule dropped nothing: the flush did not put cleartext at risk, so this test proved nothing")
		}
		waitAllKeyed(t, c.hosts)
	})

	t.Run("dead-host-forgotten", func(t *testing.T) {
		h3.Kill()
		if err := h3.SetUnderlay(ctxT(t), false); err != nil {
			t.Fatal(err)
		}
		took := testutil.Until(t, 90*time.Second, "h1 and h2 remove every SA and policy of h3", func() error {
			for _, h := range []*lab.Host{h1, h2} {
				for _, what := range []string{"state", "policy"} {
					out, err := h.Exec(ctxT(t), "ip", "xfrm", what)
					if err != nil {
						return err
					}
					if strings.Contains(out, h3.Addr.String()) {
						return fmt.Errorf("%s still has xfrm %s of h3", h.Name, what)
					}
				}
			}
			return nil
		})
		t.Logf("h3's SAs and policies gone from h1 and h2 %v after it died", took.Round(time.Millisecond))
		reachFast(t, e1, e2.IP())
	})

	t.Run("delete-leaves-nothing", func(t *testing.T) {
		for _, h := range []*lab.Host{h1, h2} {
			for _, ctr := range []*lab.Container{e1, e2, p1, p2} {
				if ctr.Host == h {
					if err := ctr.Remove(ctxT(t)); err != nil {
						t.Fatal(err)
					}
				}
			}
			for _, id := range []string{eids[h], pids[h]} {
				if err := h.Client().DeleteNetwork(ctxT(t), id); err != nil {
					t.Fatal(err)
				}
			}
			for _, what := range []string{"state", "policy"} {
				out, err := h.Exec(ctxT(t), "ip", "xfrm", what)
				if err != nil {
					t.Fatal(err)
				}
				if strings.TrimSpace(out) != "" {
					t.Errorf("%s: xfrm %s left after deleting every network:\n%s", h.Name, what, out)
				}
			}
			if out, _ := h.Exec(ctxT(t), "nft", "list", "tables"); strings.Contains(out, "vxsec") {
				t.Errorf("%s: nft tables left: %s", h.Name, out)
			}
		}
	})
}

// waitAllKeyed waits until every pair of running hosts is keyed on the
// newest epochs (lab.WaitKeyed) and returns how long that took.
func waitAllKeyed(t *testing.T, hosts []*lab.Host) time.Duration {
	t.Helper()
	start := time.Now()
	if err := lab.WaitKeyed(ctxT(t), hosts, rekeyBound); err != nil {
		t.Fatalf("every pair keyed on the newest epochs: %v", err)
	}
	return time.Since(start)
}

// rotateUnderPing rotates the first two hosts' keys n times, alternately,
// each awaited until every pair uses the new epochs, under a 100/s ping
// from a to b, and fails the test for any packet lost.
func rotateUnderPing(t *testing.T, hosts []*lab.Host, a, b *lab.Container, n int, what string) {
	t.Helper()
	r, err := a.PingAcross(ctxT(t), b.IP(), []string{"-D", "-O", "-i", "0.01", "-W", "1"}, func() error {
		for i := 0; i < n; i++ {
			if err := hosts[i%2].Client().Call(ctxT(t), "VxSec.Rotate", struct{}{}, nil); err != nil {
				return err
			}
			waitAllKeyed(t, hosts)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d rotations %s: ping at 100/s sent %d, received %d", n, what, r.Sent, r.Received)
	if r.Sent < 100 || r.Received != r.Sent {
		t.Errorf("lost %d of %d packets across %d rotations; unanswered:\n%s", r.Sent-r.Received, r.Sent, n, unanswered(r.Output))
	}
}

// dfBothWays sends full-size DF pings at mtu each way between a and b,
// which must pass, and one byte more, which the sender must refuse.
func dfBothWays(t *testing.T, a, b *lab.Container, mtu int) {
	t.Helper()
	for _, pr := range [][2]*lab.Container{{a, b}, {b, a}} {
		r, err := pr[0].Ping(ctxT(t), pr[1].IP(), "-c", "3", "-M", "do", "-s", strconv.Itoa(mtu-28), "-W", "2")
		if err != nil || r.Received != 3 {
			t.Fatalf("%s → %s: full-size DF ping at MTU %d: %+v %v", pr[0].Name, pr[1].Name, mtu, r, err)
		}
		r, _ = pr[0].Ping(ctxT(t), pr[1].IP(), "-c", "1", "-M", "do", "-s", strconv.Itoa(mtu-27), "-W", "2")
		if r.Received != 0 || !strings.Contains(r.Output, "message too long") {
			t.Fatalf("%s: one byte over the MTU with DF must be refused at the sender:\n%s", pr[0].Name, r.Output)
		}
	}
}

// wireUntil waits until what capt saw meets cond, stops it, and returns
// the packets; a capture that dropped packets fails the test (its counts
// could not be trusted).
func wireUntil(t *testing.T, capt *lab.Capture, cond func(lab.Packets) error) lab.Packets {
	t.Helper()
	pk, err := capt.Wait(ctxT(t), 10*time.Second, cond)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := capt.Stop(); err != nil {
		t.Fatal(err)
	}
	if d := capt.Dropped(); d != 0 {
		t.Fatalf("the capture dropped %d packets: its counts cannot be trusted", d)
	}
	return pk
}

// waitEncap waits until every pair of running hosts sends with the
// encapsulation want on the newest epochs, and returns how long it took.
func waitEncap(t *testing.T, hosts []*lab.Host, want string) time.Duration {
	t.Helper()
	start := time.Now()
	if err := lab.WaitEncap(ctxT(t), hosts, want, rekeyBound); err != nil {
		t.Fatalf("every pair on %s: %v", want, err)
	}
	return time.Since(start)
}

// secpathDrops is the counter of the host's rule dropping cleartext that
// arrives on the encrypted port.
func secpathDrops(t *testing.T, h *lab.Host) int {
	t.Helper()
	return ruleDrops(t, h, "meta ipsec missing")
}

// ruleDrops is the counter of the host's rule on the encrypted port whose
// text contains match.
func ruleDrops(t *testing.T, h *lab.Host, match string) int {
	t.Helper()
	table := nftTable(t, h)
	for _, line := range strings.Split(table, "\n") {
		if strings.Contains(line, strconv.Itoa(encPort)) && strings.Contains(line, match) {
			if m := nftCounter.FindStringSubmatch(line); m != nil {
				n, _ := strconv.Atoi(m[1])
				return n
			}
		}
	}
	t.Fatalf("%s: no counted rule %q for %d:\n%s", h.Name, match, encPort, table)
	return 0
}

// xfrmStat reads one counter of the host's /proc/net/xfrm_stat.
func xfrmStat(t *testing.T, h *lab.Host, name string) int {
	t.Helper()
	out, err := h.Exec(ctxT(t), "cat", "/proc/net/xfrm_stat")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == name {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatalf("%s: no %s in xfrm_stat:\n%s", h.Name, name, out)
	return 0
}

var xfrmSPI = regexp.MustCompile(`spi (0x[0-9a-f]+)`)

// spis is the set of SPIs of the host's SAs.
func spis(t *testing.T, h *lab.Host) map[string]bool {
	t.Helper()
	out, err := h.Exec(ctxT(t), "ip", "xfrm", "state")
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	for _, m := range xfrmSPI.FindAllStringSubmatch(out, -1) {
		set[m[1]] = true
	}
	if len(set) == 0 {
		t.Fatalf("%s has no SA at all:\n%s", h.Name, out)
	}
	return set
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// unanswered lists the lines `ping -D -O` printed for requests without a
// reply, with their timestamps.
func unanswered(out string) string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "no answer yet") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// grepLog returns the lines of h's daemon log that contain any of words.
func grepLog(t *testing.T, h *lab.Host, words ...string) string {
	t.Helper()
	data, err := os.ReadFile(h.LogPath)
	if err != nil {
		return err.Error()
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				lines = append(lines, l)
				break
			}
		}
	}
	return strings.Join(lines, "\n")
}

// TestEncryptedIPv6: an encrypted network across hosts whose only
// addresses are IPv6. The wire carries its VXLAN only as ESP over IPv6
// (nothing IPv4, nothing fragmented, nothing cleartext to the encrypted
// port) while a plain network beside it stays plain; the MTU is derived
// for ESP over IPv6 and DF-tested both ways; the tenants' injections of
// TestEncrypted meet the same locks over IPv6; rotations lose nothing.
// Last, one host asks for ESP in UDP, which then carries the pair over
// IPv6 at the same MTU.
func TestEncryptedIPv6(t *testing.T) {
	if err := ipsec.Probe(); err != nil {
		t.Fatalf("the kernel lab's kernel must have ESP and GCM: %v", err)
	}
	c := newIdentityCluster6(t, 2)
	h1, h2 := c.hosts[0], c.hosts[1]
	const evni, pvni = 8201, 8202
	eids := map[*lab.Host]string{}
	for _, h := range c.hosts {
		eids[h] = "enc6-" + h.Name
		mustCreateNetwork(t, h, eids[h], map[string]string{"vni": strconv.Itoa(evni), "encrypted": ""}, "10.92.0.0/24", "")
	}
	pids := createEverywhere(t, c.hosts, "pla6", pvni, "10.93.0.0/24")
	e1 := mustRun(t, h1, "e1", eids[h1], "10.92.0.11/24")
	e2 := mustRun(t, h2, "e2", eids[h2], "10.92.0.12/24")
	p1 := mustRun(t, h1, "p1", pids[h1], "10.93.0.11/24")
	p2 := mustRun(t, h2, "p2", pids[h2], "10.93.0.12/24")
	for _, h := range c.hosts {
		waitCounts(t, h, evni, 1, 1, 30*time.Second)
	}
	took := waitAllKeyed(t, c.hosts)
	t.Logf("the pair %s ↔ %s keyed %v after the endpoints were known, on native ESP %v later", h1.Addr, h2.Addr,
		took.Round(time.Millisecond), waitEncap(t, c.hosts, "esp").Round(time.Millisecond))
	reachFast(t, e1, e2.IP())
	reachFast(t, e2, e1.IP())

	t.Run("wire-only-esp-over-ipv6", func(t *testing.T) {
		capt, err := c.lab.Capture(ctxT(t), "")
		if err != nil {
			t.Fatal(err)
		}
		defer capt.Stop()
		for _, pr := range [][2]*lab.Container{{e1, e2}, {e2, e1}, {p1, p2}} {
			if r, err := pr[0].Ping(ctxT(t), pr[1].IP(), "-c", "20", "-i", "0.05", "-W", "2"); err != nil || r.Received != 20 {
				t.Fatalf("%s → %s: %+v %v", pr[0].Name, pr[1].Name, r, err)
			}
		}
		pk := wireUntil(t, capt, func(ps lab.Packets) error {
			if n := ps.CountESP(h1.Addr, h2.Addr); n < 80 {
				return fmt.Errorf("%d ESP packets between h1 and h2, want at least 80", n)
			}
			if n := ps.CountUDP(plainPort); n < 40 {
				return fmt.Errorf("%d VXLAN datagrams of the plain network, want at least 40", n)
			}
			return nil
		})
		esp := pk.Where(func(p lab.Packet) bool { return p.Proto == lab.ProtoESP })
		v4 := pk.Where(func(p lab.Packet) bool { return p.EtherType == 0x0800 || p.EtherType == 0x0806 })
		frag := pk.Where(func(p lab.Packet) bool { return p.EtherType == 0x86dd && p.Proto == 44 })
		if clear := pk.UDPTo(encPort); len(clear) != 0 {
			t.Errorf("%d cleartext datagrams to the encrypted port crossed the wire:\n%s", len(clear), clear)
		}
		if len(v4) != 0 || len(frag) != 0 {
			t.Errorf("%d IPv4/ARP packets and %d IPv6 fragments on an IPv6-only underlay:\n%s%s", len(v4), len(frag), v4, frag)
		}
		for _, p := range esp {
			if !p.Src.Is6() {
				t.Fatalf("ESP not over IPv6: %s", p)
			}
		}
		t.Logf("on the wire: %d ESP over IPv6 h1↔h2, %d plain VXLAN over IPv6, 0 cleartext to %d, 0 IPv4, 0 fragments",
			len(esp), pk.CountUDP(plainPort), encPort)
	})

	t.Run("mtu-with-df", func(t *testing.T) {
		const mtu = 1388 // 1500 - IPv6 40 - UDP 8 - ESP 8 - IV 8 - ICV 16, to 4 bytes - trailer 2 - VXLAN 30
		if got := ipsec.ContainerMTU(1500, true); got != mtu {
			t.Fatalf("ContainerMTU(1500, IPv6) = %d, want %d", got, mtu)
		}
		dfBothWays(t, e1, e2, mtu)
	})

	t.Run("segmentation", func(t *testing.T) {
		checkSegmentation(t, encPort, e1, e2, evni, segmentationInjectors(t, h1, h2, true))
	})

	t.Run("rotation-zero-loss", func(t *testing.T) {
		rotateUnderPing(t, c.hosts, e1, e2, 6, "over IPv6")
	})

	t.Run("esp-in-udp-over-ipv6", func(t *testing.T) {
		h1.Env = append(h1.Env, "VXSEC_ESP_ENCAP=udp")
		if err := h1.Restart(ctxT(t), syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		waitEncap(t, c.hosts, "udp")
		capt, err := c.lab.Capture(ctxT(t), "")
		if err != nil {
			t.Fatal(err)
		}
		defer capt.Stop()
		for _, pr := range [][2]*lab.Container{{e1, e2}, {e2, e1}} {
			if r, err := pr[0].Ping(ctxT(t), pr[1].IP(), "-c", "20", "-i", "0.05", "-W", "2"); err != nil || r.Received != 20 {
				t.Fatalf("%s → %s in ESP in UDP over IPv6: %+v %v", pr[0].Name, pr[1].Name, r, err)
			}
		}
		pk := wireUntil(t, capt, func(ps lab.Packets) error {
			if n := len(ps.UDPTo(4802).Where(func(p lab.Packet) bool { return p.Src.Is6() })); n < 80 {
				return fmt.Errorf("%d datagrams to 4802 over IPv6, want at least 80", n)
			}
			return nil
		})
		esp := pk.Where(func(p lab.Packet) bool { return p.Proto == lab.ProtoESP && p.SPI != espprobe.SPI })
		if clear := pk.UDPTo(encPort); len(esp) != 0 || len(clear) != 0 {
			t.Errorf("with ESP in UDP over IPv6: %d native ESP packets (not probes) and %d cleartext to %d on the wire:\n%s%s", len(esp), len(clear), encPort, esp, clear)
		}
		dfBothWays(t, e1, e2, ipsec.ContainerMTU(1500, true))
		t.Logf("ESP in UDP over IPv6: %d datagrams to 4802, 0 native ESP, 0 cleartext; MTU %d DF-tested both ways",
			len(pk.UDPTo(4802)), ipsec.ContainerMTU(1500, true))
	})

	// auto's probes over IPv6: the switch drops IPv6's ESP, h1 is back on
	// auto, and each host, no longer hearing the other's probes, receives
	// from it in UDP (the drop counted: the probes were sent and lost).
	t.Run("auto-where-ipv6-drops-esp", func(t *testing.T) {
		espDrops, _ := switchDropsESP(t, c.lab)
		h1.Env = append(h1.Env, "VXSEC_ESP_ENCAP=auto")
		if err := h1.Restart(ctxT(t), syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := lab.WaitFor(ctxT(t), rekeyBound, func() error {
			for _, pr := range [][2]*lab.Host{{h1, h2}, {h2, h1}} {
				st, err := pr[0].Status(ctxT(t))
				if err != nil {
					return err
				}
				if p, _ := st.Peer(pr[1].Addr.String()); p.InEncap != "udp" || !strings.Contains(p.InEncapWhy, "no native ESP from the peer") {
					return fmt.Errorf("%s receives from %s in %q (%s)", pr[0].Name, pr[1].Name, p.InEncap, p.InEncapWhy)
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		waitEncap(t, c.hosts, "udp")
		for _, pr := range [][2]*lab.Container{{e1, e2}, {e2, e1}} {
			if r, err := pr[0].Ping(ctxT(t), pr[1].IP(), "-c", "10", "-i", "0.05", "-W", "2"); err != nil || r.Received != 10 {
				t.Fatalf("%s → %s in ESP in UDP over IPv6, chosen by auto: %+v %v", pr[0].Name, pr[1].Name, r, err)
			}
		}
		if d := espDrops(); d == 0 {
			t.Errorf("the switch dropped no IPv6 ESP: the probes did not meet the drop")
		} else {
			t.Logf("auto over IPv6 with ESP dropped: both directions in ESP in UDP %v after h1's restart, for want of the peer's probes (%d ESP packets dropped by the switch); 10 pings each way answered",
				time.Since(start).Round(time.Second), d)
		}
	})
}

// switchDropsESP makes the lab's switch drop IP protocol 50, as cloud
// firewalls and NAT gateways do, and returns a reader of its drop count
// and a switch that lets ESP through (false) or drops it again (true).
func switchDropsESP(t *testing.T, l *lab.Lab) (drops func() int, setDrop func(bool)) {
	t.Helper()
	rules := "add table bridge noesp; add chain bridge noesp pass { type filter hook forward priority 0; }; " +
		"add rule bridge noesp pass ip protocol esp counter drop; add rule bridge noesp pass ip6 nexthdr esp counter drop"
	if out, err := exec.Command("ip", "netns", "exec", l.Switch(), "nft", rules).CombinedOutput(); err != nil {
		t.Fatalf("the switch's ESP drop: %v: %s", err, out)
	}
	drops = func() int {
		out, err := exec.Command("ip", "netns", "exec", l.Switch(), "nft", "list", "table", "bridge", "noesp").CombinedOutput()
		if err != nil {
			t.Fatalf("nft list table bridge noesp: %v: %s", err, out)
		}
		n := 0
		for _, m := range nftCounter.FindAllStringSubmatch(string(out), -1) {
			v, _ := strconv.Atoi(m[1])
			n += v
		}
		return n
	}
	setDrop = func(drop bool) {
		t.Helper()
		policy := "accept"
		if drop {
			policy = "drop"
		}
		// The rules stay (and count); only their verdict changes.
		cmd := fmt.Sprintf("flush chain bridge noesp pass; add rule bridge noesp pass ip protocol esp counter %[1]s; add rule bridge noesp pass ip6 nexthdr esp counter %[1]s", policy)
		if out, err := exec.Command("ip", "netns", "exec", l.Switch(), "nft", cmd).CombinedOutput(); err != nil {
			t.Fatalf("the switch's ESP rule to %s: %v: %s", policy, err, out)
		}
	}
	return drops, setDrop
}

// TestEncryptedESPInUDP: the lab's switch drops IP protocol 50. With
// native ESP forced (VXSEC_ESP_ENCAP=esp, the control) the encrypted
// network's keys are agreed but nothing crosses, and the switch counts the
// drops. With the default (auto) each host receives in UDP from a peer
// whose native ESP it does not see, so the network carries everything both
// ways as ESP in UDP to port 4802 (nothing of protocol 50, nothing
// cleartext), the MTU fits it (DF both ways), rotations lose nothing, and a
// stranger's datagrams to 4802 meet the member lock. When the switch lets
// ESP through again the pair moves to native ESP without losing a packet
// at 100/s, and back to UDP when it drops it again. Last, one host set to
// udp carries its pairs in UDP although ESP passes.
func TestEncryptedESPInUDP(t *testing.T) {
	if err := ipsec.Probe(); err != nil {
		t.Fatalf("the kernel lab's kernel must have ESP and GCM: %v", err)
	}
	const udpPort = 4802
	c := newIdentityCluster(t, 2)
	h1, h2 := c.hosts[0], c.hosts[1]
	espDrops, setDrop := switchDropsESP(t, c.lab)
	const evni = 8301
	eids := map[*lab.Host]string{}
	for _, h := range c.hosts {
		eids[h] = "encu-" + h.Name
		mustCreateNetwork(t, h, eids[h], map[string]string{"vni": strconv.Itoa(evni), "encrypted": ""}, "10.94.0.0/24", "")
	}
	e1 := mustRun(t, h1, "e1", eids[h1], "10.94.0.11/24")
	e2 := mustRun(t, h2, "e2", eids[h2], "10.94.0.12/24")
	for _, h := range c.hosts {
		waitCounts(t, h, evni, 1, 1, 30*time.Second)
	}
	restartWith := func(env ...string) {
		t.Helper()
		for _, h := range c.hosts {
			h.Env = append(h.Env, env...)
			if err := h.Restart(ctxT(t), syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
		}
		waitAllKeyed(t, c.hosts)
	}

	// The control: native ESP forced meets the switch's drop.
	restartWith("VXSEC_ESP_ENCAP=esp")
	d0 := espDrops()
	if r, _ := e1.Ping(ctxT(t), e2.IP(), "-c", "5", "-i", "0.2", "-W", "1"); r.Received != 0 {
		t.Fatalf("with native ESP through a switch that drops protocol 50, %d pings were answered: the drop does not work", r.Received)
	}
	if d := espDrops() - d0; d < 5 {
		t.Fatalf("the switch dropped %d ESP packets of 5 pings: the control shows nothing", d)
	}
	t.Logf("control (VXSEC_ESP_ENCAP=esp): native ESP through the switch: 0 of 5 pings answered, %d ESP packets dropped by the switch", espDrops()-d0)

	// The default.
	restartWith("VXSEC_ESP_ENCAP=auto")
	waitEncap(t, c.hosts, "udp")
	reachFast(t, e1, e2.IP())
	reachFast(t, e2, e1.IP())
	for _, pr := range [][2]*lab.Host{{h1, h2}, {h2, h1}} {
		st, err := pr[0].Status(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		p, _ := st.Peer(pr[1].Addr.String())
		if p.InEncap != "udp" || !strings.Contains(p.InEncapWhy, "no native ESP from the peer") {
			t.Fatalf("%s receives from %s in %q (%q), want udp for want of native ESP", pr[0].Name, pr[1].Name, p.InEncap, p.InEncapWhy)
		}
		t.Logf("%s receives from %s in %s (%s)", pr[0].Name, pr[1].Name, p.InEncap, p.InEncapWhy)
	}

	t.Run("wire-only-esp-in-udp", func(t *testing.T) {
		capt, err := c.lab.Capture(ctxT(t), "")
		if err != nil {
			t.Fatal(err)
		}
		defer capt.Stop()
		d0 := espDrops()
		for _, pr := range [][2]*lab.Container{{e1, e2}, {e2, e1}} {
			if r, err := pr[0].Ping(ctxT(t), pr[1].IP(), "-c", "20", "-i", "0.05", "-W", "2"); err != nil || r.Received != 20 {
				t.Fatalf("%s → %s: %+v %v", pr[0].Name, pr[1].Name, r, err)
			}
		}
		pk := wireUntil(t, capt, func(ps lab.Packets) error {
			if n := len(ps.UDPTo(udpPort).Where(func(p lab.Packet) bool { return p.SrcPort == udpPort })); n < 80 {
				return fmt.Errorf("%d datagrams from port %d to port %d, want at least 80", n, udpPort, udpPort)
			}
			return nil
		})
		// The probes (SPI 1, package espprobe) are native ESP by design:
		// they are how each host learns that protocol 50 is dropped.
		esp := pk.Where(func(p lab.Packet) bool { return p.Proto == lab.ProtoESP && p.SPI != espprobe.SPI })
		probes := pk.Where(func(p lab.Packet) bool { return p.Proto == lab.ProtoESP && p.SPI == espprobe.SPI })
		clear := pk.UDPTo(encPort)
		udp := pk.UDPTo(udpPort)
		// What travels in UDP to 4802 is ESP: a non-zero SPI first.
		notESP := udp.Where(func(p lab.Packet) bool { return len(p.Payload) < 8 || be.BigEndian.Uint32(p.Payload) == 0 })
		if len(esp) != 0 || len(clear) != 0 || len(notESP) != 0 {
			t.Errorf("on the wire: %d native ESP, %d cleartext to %d, %d datagrams to %d that are no ESP; want none:\n%s%s%s",
				len(esp), len(clear), encPort, len(notESP), udpPort, esp, clear, notESP)
		}
		t.Logf("on the wire: %d ESP-in-UDP datagrams to %d, 0 native ESP but %d probes (SPI %d, dropped by the switch: %d), 0 cleartext to %d",
			len(udp), udpPort, len(probes), espprobe.SPI, espDrops()-d0, encPort)
	})

	t.Run("mtu-with-df", func(t *testing.T) {
		mtu := ipsec.ContainerMTU(1500, false)
		dfBothWays(t, e1, e2, mtu)
		t.Logf("MTU %d: full-size DF pings pass both ways in ESP in UDP, one byte more is refused at the sender", mtu)
	})

	t.Run("rotation-zero-loss", func(t *testing.T) {
		rotateUnderPing(t, c.hosts, e1, e2, 20, "in ESP in UDP")
	})

	t.Run("stranger-to-udp-port", func(t *testing.T) {
		rogue, err := c.lab.AddNode(ctxT(t), "rogue", netip.MustParseAddr("198.18.0.202"))
		if err != nil {
			t.Fatal(err)
		}
		capt, err := h1.Capture(ctxT(t), fmt.Sprintf("udp dst port %d", controlPort))
		if err != nil {
			t.Fatal(err)
		}
		payload := []byte{0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1, 1, 2, 3, 4}
		send := func(port uint16) {
			t.Helper()
			if _, err := lab.Inject(ctxT(t), lab.Injection{NS: rogue.NS, Mode: lab.InjectUDP, Dst: netip.AddrPortFrom(h1.Addr, port), Count: 20, Payload: payload}); err != nil {
				t.Fatal(err)
			}
		}
		send(controlPort)
		if _, err := capt.Wait(ctxT(t), 10*time.Second, func(ps lab.Packets) error {
			if n := ps.CountUDP(controlPort); n < 20 {
				return fmt.Errorf("%d of 20 reached h1", n)
			}
			return nil
		}); err != nil {
			t.Fatalf("positive control (the stranger's datagrams to another port of h1): %v", err)
		}
		capt.Stop()
		d0 := drops(t, h1, firewall.LockNonMember)
		send(udpPort)
		var dropped uint64
		if err := lab.WaitFor(ctxT(t), 10*time.Second, func() error {
			if dropped = drops(t, h1, firewall.LockNonMember) - d0; dropped < 20 {
				return fmt.Errorf("%d dropped", dropped)
			}
			return nil
		}); err != nil {
			t.Errorf("h1's %q lock counted %d of a stranger's 20 datagrams to port %d: %v", firewall.LockNonMember, dropped, udpPort, err)
		}
		t.Logf("a stranger's 20 datagrams to %d: %d dropped under %q (its 20 to port %d arrived)", udpPort, dropped, firewall.LockNonMember, controlPort)
		reachFast(t, e2, e1.IP())
	})

	t.Run("path-opens-native-without-loss", func(t *testing.T) {
		var took time.Duration
		r, err := e1.PingAcross(ctxT(t), e2.IP(), []string{"-D", "-O", "-i", "0.01", "-W", "1"}, func() error {
			start := time.Now()
			setDrop(false)
			waitEncap(t, c.hosts, "esp")
			took = time.Since(start)
			time.Sleep(time.Second)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("the switch lets ESP through: every pair on native ESP %v later; ping at 100/s sent %d, received %d", took.Round(time.Millisecond), r.Sent, r.Received)
		if r.Sent < 100 || r.Received != r.Sent {
			t.Errorf("lost %d of %d packets moving from ESP in UDP to native ESP; unanswered:\n%s", r.Sent-r.Received, r.Sent, unanswered(r.Output))
		}
	})

	t.Run("path-closes-back-to-udp", func(t *testing.T) {
		var took time.Duration
		r, err := e1.PingAcross(ctxT(t), e2.IP(), []string{"-D", "-O", "-i", "0.01", "-W", "1"}, func() error {
			start := time.Now()
			setDrop(true)
			waitEncap(t, c.hosts, "udp")
			took = time.Since(start)
			time.Sleep(time.Second)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// Loss here is the path's doing: nothing crosses until the
		// receivers notice (firewall.ESPSeenFor) and re-key in UDP.
		t.Logf("the switch drops ESP again: every pair back on ESP in UDP %v later; ping at 100/s sent %d, received %d (lost %d while undetected)",
			took.Round(time.Millisecond), r.Sent, r.Received, r.Sent-r.Received)
		reachFast(t, e1, e2.IP())
		reachFast(t, e2, e1.IP())
	})

	t.Run("udp-asked-although-esp-passes", func(t *testing.T) {
		setDrop(false)
		h1.Env = append(h1.Env, "VXSEC_ESP_ENCAP=udp")
		if err := h1.Restart(ctxT(t), syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		waitEncap(t, c.hosts, "udp")
		for _, pr := range []struct {
			h, o *lab.Host
			why  string
		}{{h1, h2, "this host asks"}, {h2, h1, "the peer asks"}} {
			st, err := pr.h.Status(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			p, _ := st.Peer(pr.o.Addr.String())
			if p.Encap != "udp" || !strings.Contains(p.EncapWhy, pr.why) {
				t.Fatalf("%s's status of %s: encapsulation %q (%q), want udp because %s", pr.h.Name, pr.o.Name, p.Encap, p.EncapWhy, pr.why)
			}
			t.Logf("%s → %s: %s (%s)", pr.h.Name, pr.o.Name, p.Encap, p.EncapWhy)
		}
		reachFast(t, e1, e2.IP())
		reachFast(t, e2, e1.IP())
	})
}
