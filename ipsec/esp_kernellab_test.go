//go:build kernellab

// These tests need a kernel with ESP and AES-GCM: they run inside the
// kernel lab (scripts/kernel-lab.sh), as the test runner's kernel-lab tier.

package ipsec

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vxsec/vxsec/internal/testutil"
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
		handles[ns] = nsHandle(t, ns)
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
		if err := x.AddSA(SA{Src: hosts[peerNS], Dst: local, SPI: spi[ns], Reqid: inReqid, Key: in}); err != nil {
			t.Fatal(err)
		}
		if err := x.SetPeer(hosts[peerNS], Reqid(1), inReqid); err != nil {
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

// saPackets is the packet count of the SA src→dst on spi in h's namespace,
// whoever installed it.
func saPackets(t *testing.T, h *netlink.Handle, src, dst netip.Addr, spi uint32) uint64 {
	t.Helper()
	states, err := h.XfrmStateList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range states {
		if uint32(s.Spi) == spi && s.Src.Equal(src.AsSlice()) && s.Dst.Equal(dst.AsSlice()) {
			return s.Statistics.Packets
		}
	}
	t.Fatalf("no SA %s→%s spi %#x", src, dst, spi)
	return 0
}

// TestForeignSA: two hosts run vxsec's Managers (its policies and SAs, as
// the daemon negotiates them) and encrypted VXLAN works between them. Then
// another IPsec user's SA appears between the same two addresses, on both
// sides, as Docker's overlay installs one (reqid 0xD0C4E3, its own SPI, a
// key every node of its cluster knows), and an attacker who knows that key
// sends, from A's address, VXLAN to B's encrypted port under it, carrying
// UDP to a socket on B's overlay address. B's kernel decrypts it with the
// foreign SA; vxsec's inbound policy for A must then refuse it
// (XfrmInTmplMismatch) and the socket receive none. The control: with the
// same policy unpinned (its template naming no reqid, as before the pin),
// the same packets are delivered. Repair pins it again; so does the
// upgrade (this release's Manager started on the previous one's kernel
// state), without losing a packet of A's.
func TestForeignSA(t *testing.T) {
	if err := Probe(); err != nil {
		t.Fatalf("the kernel lab's kernel must have ESP and GCM: %v", err)
	}
	const (
		port       = 4801
		n          = 20
		foreignID  = 0xD0C4E3
		foreignSPI = 0xD0C40001
		attackerIP = "10.98.0.66"
	)
	A, B := netip.MustParseAddr("198.19.1.1"), netip.MustParseAddr("198.19.1.2")
	// fsx is the attacker: on the same segment, with A's address.
	addr := map[string]netip.Addr{"fsa": A, "fsb": B, "fsx": A}
	overlay := map[string]string{"fsa": "10.98.0.1/24", "fsb": "10.98.0.2/24", "fsx": attackerIP + "/24"}
	remote := map[string]netip.Addr{"fsa": B, "fsb": A, "fsx": B}
	sh(t, "ip", "netns", "add", "fssw")
	t.Cleanup(func() { exec.Command("ip", "netns", "del", "fssw").Run() })
	sh(t, "ip", "-n", "fssw", "link", "add", "br0", "type", "bridge")
	sh(t, "ip", "-n", "fssw", "link", "set", "br0", "up")
	handles := map[string]*netlink.Handle{}
	mac := map[string]string{}
	for _, ns := range []string{"fsa", "fsb", "fsx"} {
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		sh(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
		sh(t, "ip", "-n", "fssw", "link", "add", "p"+ns, "type", "veth", "peer", "name", "eth0", "netns", ns)
		sh(t, "ip", "-n", "fssw", "link", "set", "p"+ns, "master", "br0", "up")
		sh(t, "ip", "-n", ns, "addr", "add", addr[ns].String()+"/24", "dev", "eth0")
		sh(t, "ip", "-n", ns, "link", "set", "eth0", "up")
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
		h := nsHandle(t, ns)
		handles[ns] = h
		l, err := h.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		mac[ns] = l.Attrs().HardwareAddr.String()
	}
	// Two hosts share A's address: B knows the real A's MAC, and nobody
	// needs to ask (the attacker's ARP must not steer B's replies to it).
	sh(t, "ip", "-n", "fsb", "neigh", "replace", A.String(), "lladdr", mac["fsa"], "dev", "eth0", "nud", "permanent")
	sh(t, "ip", "-n", "fsa", "neigh", "replace", B.String(), "lladdr", mac["fsb"], "dev", "eth0", "nud", "permanent")
	sh(t, "ip", "-n", "fsx", "neigh", "replace", B.String(), "lladdr", mac["fsb"], "dev", "eth0", "nud", "permanent")
	for _, ns := range []string{"fsa", "fsb", "fsx"} {
		sh(t, "ip", "-n", ns, "link", "add", "vx", "type", "vxlan", "id", "9", "local", addr[ns].String(),
			"remote", remote[ns].String(), "dstport", strconv.Itoa(port), "nolearning")
		sh(t, "ip", "-n", ns, "addr", "add", overlay[ns], "dev", "vx")
		sh(t, "ip", "-n", ns, "link", "set", "vx", "up")
	}
	vxB, err := handles["fsb"].LinkByName("vx")
	if err != nil {
		t.Fatal(err)
	}
	// The attacker's frames reach B's overlay address without ARP.
	sh(t, "ip", "-n", "fsx", "neigh", "replace", "10.98.0.2", "lladdr", vxB.Attrs().HardwareAddr.String(), "dev", "vx", "nud", "permanent")

	// vxsec on A and B, negotiated as the daemons do.
	mgr := map[string]*Manager{}
	for _, ns := range []string{"fsa", "fsb"} {
		mgr[ns] = NewManager(ManagerConfig{Local: addr[ns], Kernel: NewXfrm(handles[ns], addr[ns], port),
			Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("host", ns)})
		if err := mgr[ns].Activate(); err != nil {
			t.Fatal(err)
		}
	}
	annA, annB := mgr["fsa"].Announcement(), mgr["fsb"].Announcement()
	for i := 0; i < 4; i++ {
		var err error
		if annA, err = mgr["fsa"].Sync([]PeerInfo{{Host: B, IPsec: annB}}, true); err != nil {
			t.Fatal(err)
		}
		if annB, err = mgr["fsb"].Sync([]PeerInfo{{Host: A, IPsec: annA}}, true); err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range []string{"fsa", "fsb"} {
		if st := mgr[ns].Status(); len(st.Peers) != 1 || st.Peers[0].SPI == 0 {
			t.Fatalf("%s: the negotiation did not converge: %+v", ns, st)
		}
	}
	// Positive control: encrypted VXLAN between A and B works.
	if !ping("fsa", "10.98.0.2") {
		t.Fatalf("VXLAN in vxsec's ESP does not pass:\n%s", sh(t, "ip", "-n", "fsb", "-s", "xfrm", "state"))
	}
	inSPI := mgr["fsa"].Status().Peers[0].SPI // what A sends to B on
	if got := saPackets(t, handles["fsb"], A, B, inSPI); got == 0 {
		t.Fatal("B's inbound SA from A decrypted nothing: the ping did not go through vxsec's ESP")
	}
	t.Logf("B's policies:\n%s", sh(t, "ip", "-n", "fsb", "xfrm", "policy"))

	// The foreign SAs, on both sides, both ways (Docker's overlay's
	// parameters: rfc4106(gcm(aes)) with a 128-bit key, 64-bit ICV).
	key := []byte("sixteen byte key" + "salt")
	foreign := func(src, dst netip.Addr, spi int) *netlink.XfrmState {
		return &netlink.XfrmState{Src: net.IP(src.AsSlice()), Dst: net.IP(dst.AsSlice()), Proto: netlink.XFRM_PROTO_ESP,
			Mode: netlink.XFRM_MODE_TRANSPORT, Spi: spi, Reqid: foreignID,
			Aead: &netlink.XfrmStateAlgo{Name: "rfc4106(gcm(aes))", Key: key, ICVLen: 64}}
	}
	for _, ns := range []string{"fsa", "fsb"} {
		for _, st := range []*netlink.XfrmState{foreign(A, B, foreignSPI), foreign(B, A, foreignSPI+1)} {
			if err := handles[ns].XfrmStateAdd(st); err != nil {
				t.Fatalf("%s: the foreign SA: %v", ns, err)
			}
		}
	}
	// The attacker sends VXLAN to B's encrypted port under it.
	if err := handles["fsx"].XfrmStateAdd(foreign(A, B, foreignSPI)); err != nil {
		t.Fatal(err)
	}
	if err := handles["fsx"].XfrmPolicyAdd(&netlink.XfrmPolicy{
		Src: hostNet(A), Dst: hostNet(B), Proto: netlink.Proto(unix.IPPROTO_UDP), DstPort: port, Dir: netlink.XFRM_DIR_OUT,
		Tmpls: []netlink.XfrmPolicyTmpl{{Src: net.IP(A.AsSlice()), Dst: net.IP(B.AsSlice()), Proto: netlink.XFRM_PROTO_ESP,
			Mode: netlink.XFRM_MODE_TRANSPORT, Reqid: foreignID}},
	}); err != nil {
		t.Fatal(err)
	}
	// The receiving socket: UDP on B's overlay address, counting what
	// arrives from the attacker's.
	var received atomic.Int64
	var rx *net.UDPConn
	testutil.InNamedNetns(t, "fsb", func() {
		var err error
		if rx, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("10.98.0.2"), Port: 9999}); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { rx.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			_, from, err := rx.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if from.IP.String() == attackerIP {
				received.Add(1)
			}
		}
	}()
	var tx *net.UDPConn
	testutil.InNamedNetns(t, "fsx", func() {
		var err error
		if tx, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.ParseIP("10.98.0.2"), Port: 9999}); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { tx.Close() })

	// attack sends n datagrams from the attacker's overlay address to B's
	// socket and counts what B's kernel did with them.
	type counts struct{ sent, decrypted, refused, delivered int }
	attack := func(phase string) counts {
		t.Helper()
		sent0 := saPackets(t, handles["fsx"], A, B, foreignSPI)
		dec0 := saPackets(t, handles["fsb"], A, B, foreignSPI)
		mis0 := inTmplMismatch(t, "fsb")
		rx0 := received.Load()
		for i := 0; i < n; i++ {
			if _, err := tx.Write([]byte(fmt.Sprintf("forged frame %d (%s)", i, phase))); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(time.Second) // what is in flight arrives
		c := counts{
			sent:      int(saPackets(t, handles["fsx"], A, B, foreignSPI) - sent0),
			decrypted: int(saPackets(t, handles["fsb"], A, B, foreignSPI) - dec0),
			refused:   inTmplMismatch(t, "fsb") - mis0,
			delivered: int(received.Load() - rx0),
		}
		t.Logf("%s: the attacker sent %d ESP packets under the foreign SA; B decrypted %d with it, refused %d by template (XfrmInTmplMismatch), its socket received %d of %d",
			phase, c.sent, c.decrypted, c.refused, c.delivered, n)
		if c.sent < n || c.decrypted < n {
			t.Fatalf("%s: the attack did not reach B's foreign SA (sent %d, decrypted %d of %d):\n%s", phase, c.sent, c.decrypted, n,
				sh(t, "ip", "-n", "fsb", "-s", "xfrm", "state"))
		}
		return c
	}

	if c := attack("pinned"); c.delivered != 0 || c.refused < n {
		t.Errorf("pinned: B delivered %d of %d and refused %d: vxsec's inbound policy let the foreign SA through", c.delivered, n, c.refused)
	}

	// The control: B's inbound policy for A as it was before the pin.
	if err := handles["fsb"].XfrmPolicyUpdate(inboundPolicy(B, A, port, 0)); err != nil {
		t.Fatal(err)
	}
	if c := attack("unpinned (control)"); c.delivered != n || c.refused != 0 {
		t.Errorf("unpinned: B delivered %d of %d and refused %d; the control wants all delivered (else this test proves nothing)", c.delivered, n, c.refused)
	}

	// Repair notices the unpinned policy and pins it again.
	if err := mgr["fsb"].Repair(); err != nil {
		t.Fatal(err)
	}
	if _, err := mgr["fsb"].Sync([]PeerInfo{{Host: A, IPsec: annA}}, true); err != nil {
		t.Fatal(err)
	}
	if c := attack("pinned again by Repair"); c.delivered != 0 || c.refused < n {
		t.Errorf("after Repair: B delivered %d of %d and refused %d", c.delivered, n, c.refused)
	}
	// vxsec's own traffic never stopped.
	if !ping("fsa", "10.98.0.2") {
		t.Fatal("VXLAN in vxsec's ESP no longer passes")
	}

	// The upgrade: B's kernel as a release before the pin leaves it (the
	// inbound policy accepts any SA), and this release's Manager starting
	// on it under a 20 packets/s ping from A, which keeps sending on the
	// previous run's SAs: the policy is pinned at Activate, before B hears
	// from anyone, the attack is refused from then on, and no ping is lost.
	if err := handles["fsb"].XfrmPolicyUpdate(inboundPolicy(B, A, port, 0)); err != nil {
		t.Fatal(err)
	}
	const pings = 200
	pingOut := make(chan string, 1)
	go func() {
		out, _ := exec.Command("ip", "netns", "exec", "fsa", "ping", "-c", strconv.Itoa(pings), "-i", "0.05", "-W", "2", "10.98.0.2").CombinedOutput()
		pingOut <- string(out)
	}()
	time.Sleep(2 * time.Second)
	mgr["fsb"] = NewManager(ManagerConfig{Local: B, Kernel: NewXfrm(handles["fsb"], B, port),
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("host", "fsb, upgraded")})
	if err := mgr["fsb"].Activate(); err != nil {
		t.Fatal(err)
	}
	ks, err := NewXfrm(handles["fsb"], B, port).State()
	if err != nil {
		t.Fatal(err)
	}
	if ks.InReqid[A] != inReqid {
		t.Fatalf("right after the upgraded Manager's Activate, B's inbound policy for A requires %#x, want %#x", ks.InReqid[A], inReqid)
	}
	if c := attack("upgraded"); c.delivered != 0 || c.refused < n {
		t.Errorf("after the upgrade: B delivered %d of %d and refused %d", c.delivered, n, c.refused)
	}
	out := <-pingOut
	t.Logf("ping from A to B across the upgrade:\n%s", out)
	if !strings.Contains(out, fmt.Sprintf("%d packets transmitted, %d received", pings, pings)) {
		t.Errorf("pings lost across the upgrade")
	}
	// The upgraded B re-keys with A and drops the previous run's SAs.
	annB = mgr["fsb"].Announcement()
	for i := 0; i < 6; i++ {
		if annA, err = mgr["fsa"].Sync([]PeerInfo{{Host: B, IPsec: annB}}, true); err != nil {
			t.Fatal(err)
		}
		if annB, err = mgr["fsb"].Sync([]PeerInfo{{Host: A, IPsec: annA}}, true); err != nil {
			t.Fatal(err)
		}
	}
	if st := mgr["fsb"].Status(); st.Legacy != 0 || len(st.Peers) != 1 || st.Peers[0].SPI == 0 {
		t.Errorf("the upgraded B did not re-key with A: %+v", st)
	}
	if !ping("fsa", "10.98.0.2") {
		t.Fatal("VXLAN in vxsec's ESP does not pass after the re-key")
	}
	for _, ns := range []string{"fsa", "fsb"} {
		if err := mgr[ns].Deactivate(); err != nil {
			t.Fatal(err)
		}
	}
	// Deactivate left the foreign SAs alone.
	if got := saPackets(t, handles["fsb"], A, B, foreignSPI); got < 4*n {
		t.Errorf("the foreign SA's count at B is %d after the four attacks", got)
	}
}

// nsHandle is a netlink handle in the named namespace, closed with the test.
func nsHandle(t *testing.T, ns string) *netlink.Handle {
	t.Helper()
	nsh, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}
