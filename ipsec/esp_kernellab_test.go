//go:build kernellab

// These tests need a kernel with ESP and AES-GCM: they run inside the
// kernel lab (scripts/kernel-lab.sh), as the test runner's kernel-lab tier.

package ipsec

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inTmplMismatch reads XfrmInTmplMismatch, the count of packets an inbound
// policy refused for not having come through a matching SA, in namespace ns.
func inTmplMismatch(t *testing.T, ns string) int {
	t.Helper()
	for _, line := range strings.Split(sh(t, "ip", "netns", "exec", ns, "cat", "/proc/net/xfrm_stat"), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "XfrmInTmplMismatch" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatal("no XfrmInTmplMismatch in /proc/net/xfrm_stat")
	return 0
}

func ping(ns, dst string) bool {
	return exec.Command("ip", "netns", "exec", ns, "ping", "-c", "2", "-i", "0.2", "-W", "1", dst).Run() == nil
}

// TestESPDataPath carries VXLAN on the encrypted port between two hosts in
// ESP with vxsec's SAs and policies, and proves it fails closed.
func TestESPDataPath(t *testing.T) {
	if err := Probe(); err != nil {
		t.Fatalf("the kernel lab's kernel must have ESP and GCM: %v", err)
	}
	const port = 4801
	hosts := map[string]netip.Addr{"espa": netip.MustParseAddr("198.19.0.1"), "espb": netip.MustParseAddr("198.19.0.2")}
	overlay := map[string]string{"espa": "10.99.0.1/24", "espb": "10.99.0.2/24"}
	for ns := range hosts {
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	sh(t, "ip", "-n", "espa", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", "espb")
	handles := map[string]*netlink.Handle{}
	for ns, addr := range hosts {
		sh(t, "ip", "-n", ns, "addr", "add", addr.String()+"/24", "dev", "eth0")
		sh(t, "ip", "-n", ns, "link", "set", "eth0", "up")
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
		nsh, err := netns.GetFromName(ns)
		if err != nil {
			t.Fatal(err)
		}
		h, err := netlink.NewHandleAt(nsh)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.Close)
		handles[ns] = h
	}
	peerOf := map[string]string{"espa": "espb", "espb": "espa"}
	for ns := range hosts {
		other := hosts[peerOf[ns]]
		sh(t, "ip", "-n", ns, "link", "add", "vx", "type", "vxlan", "id", "9", "local", hosts[ns].String(),
			"remote", other.String(), "dstport", strconv.Itoa(port), "nolearning")
		sh(t, "ip", "-n", ns, "addr", "add", overlay[ns], "dev", "vx")
		sh(t, "ip", "-n", ns, "link", "set", "vx", "up")
	}
	// Without any policy VXLAN flows in cleartext: the control.
	if !ping("espa", "10.99.0.2") {
		t.Fatal("control: cleartext VXLAN between the namespaces does not work")
	}

	keys := map[string]*KeyPair{}
	for ns := range hosts {
		keys[ns] = pair(t, 1)
	}
	spi := map[string]uint32{"espa": 0x1000a, "espb": 0x1000b} // the receiver's choice
	xf := map[string]*Xfrm{}
	for ns, local := range hosts {
		x := NewXfrm(handles[ns], local, port)
		xf[ns] = x
		peerNS := peerOf[ns]
		peer := Peer{Host: hosts[peerNS], Epoch: keys[peerNS].Epoch, Public: keys[peerNS].Public()}
		out, err := SAKey(keys[ns], local, peer, true, spi[peerNS])
		if err != nil {
			t.Fatal(err)
		}
		in, err := SAKey(keys[ns], local, peer, false, spi[ns])
		if err != nil {
			t.Fatal(err)
		}
		if err := x.EnsureGuard(); err != nil {
			t.Fatal(err)
		}
		if err := x.AddSA(SA{Src: local, Dst: hosts[peerNS], SPI: spi[peerNS], Reqid: Reqid(1), Key: out}); err != nil {
			t.Fatal(err)
		}
		if err := x.AddSA(SA{Src: hosts[peerNS], Dst: local, SPI: spi[ns], Reqid: Reqid(2), Key: in}); err != nil {
			t.Fatal(err)
		}
		if err := x.SetPeer(hosts[peerNS], Reqid(1)); err != nil {
			t.Fatal(err)
		}
	}
	if !ping("espa", "10.99.0.2") {
		t.Fatalf("VXLAN in ESP does not pass:\n%s", sh(t, "ip", "-n", "espa", "-s", "xfrm", "state"))
	}
	states, _, err := xf["espa"].Owned()
	if err != nil {
		t.Fatal(err)
	}
	var encrypted uint64
	for _, s := range states {
		if s.Src.Equal(hosts["espa"].AsSlice()) {
			encrypted += s.Statistics.Packets
		}
		icv := 0
		if s.Aead != nil {
			icv = s.Aead.ICVLen
		}
		t.Logf("SA %s→%s spi %#x: esn=%v replay-window=%d aead=%v icv=%d", s.Src, s.Dst, s.Spi, s.ESN, s.ReplayWindow, s.Aead != nil, icv)
		if s.Aead == nil || icv != ICVBits {
			t.Errorf("SA %s→%s: want rfc4106(gcm(aes)) with a %d-bit ICV, got icv %d", s.Src, s.Dst, ICVBits, icv)
		}
	}
	// The kernel's own account of anti-replay: ESN with the window vxsec set.
	listing := sh(t, "ip", "-n", "espa", "-d", "xfrm", "state")
	t.Logf("ip xfrm state (A):\n%s", listing)
	if !strings.Contains(listing, "flag esn") || !strings.Contains(listing, fmt.Sprintf("replay_window %d", ReplayWindow)) {
		t.Errorf("SAs lack ESN with a %d-packet replay window:\n%s", ReplayWindow, listing)
	}
	if encrypted == 0 {
		t.Fatalf("the outbound SA carried nothing:\n%s", sh(t, "ip", "-n", "espa", "-s", "xfrm", "state"))
	}

	// Cleartext from a member's own address: host A drops its policies and
	// sends VXLAN in the clear; B's inbound policy refuses it.
	before := inTmplMismatch(t, "espb")
	if err := xf["espa"].RemoveAll(); err != nil {
		t.Fatal(err)
	}
	if ping("espa", "10.99.0.2") {
		t.Fatal("cleartext VXLAN to the encrypted port was accepted")
	}
	if after := inTmplMismatch(t, "espb"); after <= before {
		t.Fatalf("XfrmInTmplMismatch did not rise (%d → %d): the drop was not the inbound policy's", before, after)
	}

	// Fail closed outbound: B keeps its guard and policy but loses its SA:
	// nothing leaves B in the clear toward the encrypted port.
	if err := xf["espb"].DelSA(hosts["espb"], hosts["espa"], spi["espa"]); err != nil {
		t.Fatal(err)
	}
	sh(t, "ip", "-n", "espa", "link", "set", "eth0", "promisc", "on")
	cap := exec.Command("ip", "netns", "exec", "espa", "timeout", "3", "tcpdump", "-c", "1", "-n", "-i", "eth0", fmt.Sprintf("udp dst port %d and src host %s", port, hosts["espb"]))
	capOut := make(chan string, 1)
	go func() { out, _ := cap.CombinedOutput(); capOut <- string(out) }()
	if ping("espb", "10.99.0.1") {
		t.Fatal("B reached A without an SA")
	}
	if out := <-capOut; strings.Contains(out, "1 packet captured") {
		t.Fatalf("cleartext VXLAN left B without an SA:\n%s", out)
	}

	for ns := range hosts {
		if err := xf[ns].RemoveAll(); err != nil {
			t.Fatal(err)
		}
		st, pol, err := xf[ns].Owned()
		if err != nil || len(st)+len(pol) != 0 {
			t.Fatalf("%s: vxsec's xfrm state left: %v %v %v", ns, st, pol, err)
		}
	}
}
