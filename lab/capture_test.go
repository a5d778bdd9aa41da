//go:build integration

package lab

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// The capture tests need root and tcpdump, no daemon and no kernel ESP:
// ESP packets are forged on a raw socket.

// sendEnv makes the test binary a packet sender (see TestMain).
const sendEnv = "VXSEC_LAB_CAPTURE_SEND"

func TestMain(m *testing.M) {
	if spec := os.Getenv(sendEnv); spec != "" {
		if err := send(spec); err != nil {
			fmt.Fprintln(os.Stderr, "send:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "FAIL: the lab's integration tests need root (network namespaces); run them as root")
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// send is the helper process: "udp DST PORT N" sends N datagrams,
// "esp DST SPI N" N forged ESP packets with sequence numbers 1..N.
func send(spec string) error {
	var kind, dst string
	var arg, n int
	if _, err := fmt.Sscan(spec, &kind, &dst, &arg, &n); err != nil {
		return fmt.Errorf("%q: %w", spec, err)
	}
	ip := net.ParseIP(dst).To4()
	switch kind {
	case "udp":
		// Not connected: the port unreachables the receiver answers
		// with would make every other write fail.
		conn, err := net.ListenUDP("udp4", nil)
		if err != nil {
			return err
		}
		defer conn.Close()
		to := &net.UDPAddr{IP: ip, Port: arg}
		for i := 0; i < n; i++ {
			if _, err := conn.WriteTo([]byte("vxsec lab capture test"), to); err != nil {
				return err
			}
			time.Sleep(5 * time.Millisecond)
		}
		return nil
	case "esp":
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, ProtoESP)
		if err != nil {
			return err
		}
		defer syscall.Close(fd)
		to := &syscall.SockaddrInet4{Addr: [4]byte(ip)}
		for i := 1; i <= n; i++ {
			b := make([]byte, 8+32)
			binary.BigEndian.PutUint32(b[0:4], uint32(arg))
			binary.BigEndian.PutUint32(b[4:8], uint32(i))
			if err := syscall.Sendto(fd, b, 0, to); err != nil {
				return err
			}
			time.Sleep(5 * time.Millisecond)
		}
		return nil
	}
	return fmt.Errorf("unknown kind %q", kind)
}

// sendFrom runs the helper in namespace ns.
func sendFrom(t *testing.T, ns string, spec string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), sendEnv+"="+spec)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sending %q from %s: %v\n%s", spec, ns, err, out)
	}
}

// twoNodes is a lab with two daemonless nodes on the switch.
func twoNodes(t *testing.T) (*Lab, *Host, *Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// No host runs a daemon: any existing file will do as the binary.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	l, err := New(ctx, Config{Bin: exe, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("closing the lab: %v", err)
		}
	})
	a, err := l.AddNode(ctx, "a", netip.MustParseAddr("198.18.0.101"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.AddNode(ctx, "b", netip.MustParseAddr("198.18.0.102"))
	if err != nil {
		t.Fatal(err)
	}
	return l, a, b
}

func startCaptureT(t *testing.T, start func(context.Context, string) (*Capture, error), filter string) *Capture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	c, err := start(ctx, filter)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop() })
	return c
}

func stopT(t *testing.T, c *Capture) Packets {
	t.Helper()
	ps, err := c.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if d := c.Dropped(); d != 0 {
		t.Fatalf("the kernel dropped %d packets of the capture: counts cannot be trusted\n%s", d, c.Stderr())
	}
	return ps
}

// TestCaptureUDP: datagrams to two ports are counted exactly, once each
// (not again as they leave the switch), on the sender's port; ICMP and ARP
// stay out of a "udp" capture.
func TestCaptureUDP(t *testing.T) {
	l, a, b := twoNodes(t)
	c := startCaptureT(t, l.Capture, "udp")
	all := startCaptureT(t, l.Capture, "")
	sendFrom(t, a.NS, "udp "+b.Addr.String()+" 4800 20")
	sendFrom(t, a.NS, "udp "+b.Addr.String()+" 7946 5")
	if r, err := a.Ping(context.Background(), b.Addr.String(), "-c", "2", "-i", "0.2", "-W", "2"); err != nil || r.Received != 2 {
		t.Fatalf("ping a → b: %+v %v", r, err)
	}
	// Wait for what was sent to be read before stopping.
	if _, err := c.Wait(context.Background(), 30*time.Second, func(ps Packets) error {
		if n := ps.CountUDP(7946); n < 5 {
			return fmt.Errorf("%d datagrams to 7946 so far", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ps := stopT(t, c)
	t.Logf("%d packets:\n%s", len(ps), ps)
	if n := ps.CountUDP(4800); n != 20 {
		t.Errorf("%d datagrams to 4800 counted, want 20", n)
	}
	if n := ps.CountUDP(7946); n != 5 {
		t.Errorf("%d datagrams to 7946 counted, want 5", n)
	}
	if n := len(ps.Between(a.Addr, b.Addr)); n != 25 {
		t.Errorf("%d packets between a and b, want 25 (a udp filter keeps only UDP)", n)
	}
	port := fmt.Sprintf("p%d", a.Addr.As4()[3])
	for _, p := range ps {
		if p.Iface != port || p.Out || p.Src != a.Addr || p.Dst != b.Addr || p.Proto != ProtoUDP {
			t.Errorf("unexpected packet %v (want UDP from a, seen on a's port %s)", p, port)
		}
		if string(p.Payload) != "vxsec lab capture test" {
			t.Errorf("payload %q", p.Payload)
		}
	}

	// The unfiltered capture has the rest: ICMP both ways (echo, and the
	// port unreachables b answered the datagrams with), and ARP.
	ps = stopT(t, all)
	if n := ps.CountUDP(4800); n != 20 {
		t.Errorf("unfiltered: %d datagrams to 4800, want 20", n)
	}
	icmp := ps.Where(func(p Packet) bool { return p.Proto == ProtoICMP })
	fromB := icmp.Where(func(p Packet) bool { return p.Src == b.Addr })
	if len(icmp) < 4 || len(fromB) < 2 {
		t.Errorf("unfiltered: %d ICMP packets, %d from b; want the 2 pings and 2 replies at least", len(icmp), len(fromB))
	}
	for _, p := range fromB {
		if want := fmt.Sprintf("p%d", b.Addr.As4()[3]); p.Iface != want {
			t.Errorf("b's packet %v seen on %s, want b's port %s", p, p.Iface, want)
		}
	}
	if arp := ps.Where(func(p Packet) bool { return p.EtherType == 0x0806 }); len(arp) == 0 {
		t.Errorf("unfiltered: no ARP seen")
	}
}

// TestCaptureESP: forged ESP packets are counted per direction with their
// SPI and sequence numbers; UDP is not ESP.
func TestCaptureESP(t *testing.T) {
	l, a, b := twoNodes(t)
	c := startCaptureT(t, l.Capture, "esp or udp")
	sendFrom(t, a.NS, "esp "+b.Addr.String()+" "+strconv.Itoa(0x1234)+" 7")
	sendFrom(t, b.NS, "esp "+a.Addr.String()+" "+strconv.Itoa(0xbeef)+" 3")
	sendFrom(t, a.NS, "udp "+b.Addr.String()+" 4800 4")
	if _, err := c.Wait(context.Background(), 30*time.Second, func(ps Packets) error {
		if n := ps.CountUDP(4800); n < 4 {
			return fmt.Errorf("%d datagrams so far", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ps := stopT(t, c)
	t.Logf("%d packets:\n%s", len(ps), ps)
	ab, ba := ps.ESP(a.Addr, b.Addr), ps.ESP(b.Addr, a.Addr)
	if len(ab) != 7 || len(ba) != 3 {
		t.Fatalf("ESP a→b %d, b→a %d; want 7 and 3", len(ab), len(ba))
	}
	if n := ps.CountESP(a.Addr, b.Addr); n != 10 {
		t.Errorf("CountESP(a, b) = %d, want 10", n)
	}
	if n := len(ps.ESP(netip.Addr{}, netip.Addr{})); n != 10 {
		t.Errorf("ESP from anyone to anyone: %d, want 10", n)
	}
	for i, p := range ab {
		if p.SPI != 0x1234 || p.Seq != uint32(i+1) {
			t.Errorf("a→b packet %d: spi 0x%x seq %d, want 0x1234 and %d", i, p.SPI, p.Seq, i+1)
		}
	}
	if ba[0].SPI != 0xbeef {
		t.Errorf("b→a spi 0x%x, want 0xbeef", ba[0].SPI)
	}
	if n := ps.CountUDP(4800); n != 4 {
		t.Errorf("%d datagrams to 4800, want 4", n)
	}
}

// TestCaptureVXLAN: a VXLAN datagram's VNI and inner packet are decoded,
// and a host's own capture sees both sides of its devices.
func TestCaptureVXLAN(t *testing.T) {
	l, a, b := twoNodes(t)
	ctx := context.Background()
	for _, n := range []struct {
		h           *Host
		inner, peer string
	}{{a, "10.250.0.1/24", b.Addr.String()}, {b, "10.250.0.2/24", a.Addr.String()}} {
		for _, s := range [][]string{
			{"ip", "link", "add", "vx0", "type", "vxlan", "id", "4242", "dstport", "4800", "local", n.h.Addr.String(), "remote", n.peer},
			{"ip", "addr", "add", n.inner, "dev", "vx0"},
			{"ip", "link", "set", "vx0", "up"},
		} {
			if _, err := n.h.Exec(ctx, s...); err != nil {
				t.Fatal(err)
			}
		}
	}
	sw := startCaptureT(t, l.Capture, "udp dst port 4800")
	ha := startCaptureT(t, a.Capture, "")
	if r, err := a.Ping(ctx, "10.250.0.2", "-c", "3", "-i", "0.2", "-W", "2"); err != nil || r.Received != 3 {
		t.Fatalf("ping across the VXLAN: %+v %v", r, err)
	}
	ps := stopT(t, sw)
	var echo, replies int
	for _, p := range ps {
		vni, inner, ok := p.VXLAN()
		if !ok || vni != 4242 {
			t.Fatalf("%v: VXLAN %v, vni %d; want VXLAN with vni 4242", p, ok, vni)
		}
		if inner.Proto == ProtoICMP {
			switch {
			case inner.Src.String() == "10.250.0.1" && inner.Dst.String() == "10.250.0.2":
				echo++
			case inner.Src.String() == "10.250.0.2" && inner.Dst.String() == "10.250.0.1":
				replies++
			}
		}
	}
	if echo != 3 || replies != 3 {
		t.Errorf("inner ICMP: %d echoes, %d replies seen in VXLAN; want 3 and 3\n%s", echo, replies, ps)
	}

	// On a's side: the pings leave vx0 (inner) and eth0 (as VXLAN); the
	// replies come in on both.
	ps = stopT(t, ha)
	count := func(iface string, out bool, f func(Packet) bool) int {
		return len(ps.Where(func(p Packet) bool { return p.Iface == iface && p.Out == out && f(p) }))
	}
	icmp := func(p Packet) bool { return p.Proto == ProtoICMP }
	vx := func(p Packet) bool { return p.Proto == ProtoUDP && p.DstPort == 4800 }
	for _, c := range []struct {
		iface string
		out   bool
		f     func(Packet) bool
		what  string
	}{
		{"vx0", true, icmp, "echoes out of vx0"},
		{"vx0", false, icmp, "replies into vx0"},
		{"eth0", true, vx, "VXLAN out of eth0"},
		{"eth0", false, vx, "VXLAN into eth0"},
	} {
		if n := count(c.iface, c.out, c.f); n < 3 {
			t.Errorf("a's capture: %d %s, want 3 at least\n%s", n, c.what, ps)
		}
	}
}

// TestCaptureBadFilter: a filter tcpdump refuses is an error, at once.
func TestCaptureBadFilter(t *testing.T) {
	l, _, _ := twoNodes(t)
	c, err := l.Capture(context.Background(), "udp port banana")
	if err == nil {
		c.Stop()
		t.Fatal("a bad filter was accepted")
	}
	t.Logf("refused: %v", err)
}
