//go:build integration

package vip

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/vxsec/vxsec/internal/testutil"
)

// A segment of three namespaces on one bridge: a client and two tasks.
var (
	clientAddr = netip.MustParseAddr("10.77.0.10")
	vipAddr    = netip.MustParseAddr("10.77.0.2")
	backends   = map[string]netip.Addr{"vipt-b1": netip.MustParseAddr("10.77.0.21"), "vipt-b2": netip.MustParseAddr("10.77.0.22")}
)

const port = 8080

// segment makes the namespaces and the bridge, and removes them at the end.
func segment(t *testing.T) {
	t.Helper()
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	names := map[string]netip.Addr{"vipt-c": clientAddr}
	for n, a := range backends {
		names[n] = a
	}
	ip("netns", "add", "vipt-sw")
	t.Cleanup(func() { exec.Command("ip", "netns", "del", "vipt-sw").Run() })
	ip("-n", "vipt-sw", "link", "add", "br0", "type", "bridge")
	ip("-n", "vipt-sw", "link", "set", "br0", "up")
	for n, a := range names {
		ip("netns", "add", n)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", n).Run() })
		ip("-n", n, "link", "add", "eth0", "type", "veth", "peer", "name", "p-"+n, "netns", "vipt-sw")
		ip("-n", "vipt-sw", "link", "set", "p-"+n, "master", "br0", "up")
		ip("-n", n, "addr", "add", a.String()+"/24", "dev", "eth0")
		ip("-n", n, "link", "set", "eth0", "up")
		ip("-n", n, "link", "set", "lo", "up")
	}
}

// serve answers, in namespace ns, every TCP connection and UDP datagram on
// port with "NAME PEER-ADDRESS".
func serve(t *testing.T, ns string) {
	t.Helper()
	var tl net.Listener
	var ul net.PacketConn
	testutil.InNamedNetns(t, ns, func() {
		var err error
		if tl, err = net.Listen("tcp4", fmt.Sprintf(":%d", port)); err != nil {
			t.Fatal(err)
		}
		if ul, err = net.ListenPacket("udp4", fmt.Sprintf(":%d", port)); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { tl.Close(); ul.Close() })
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s %s\n", ns, c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := ul.ReadFrom(buf)
			if err != nil {
				return
			}
			ul.WriteTo([]byte(fmt.Sprintf("%s %s\n", ns, from.(*net.UDPAddr).IP)), from)
		}
	}()
}

// ask connects from the client namespace to the VIP over proto n times and
// counts the answers by "NAME PEER"; failures are counted under "".
func ask(t *testing.T, proto string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	testutil.InNamedNetns(t, "vipt-c", func() {
		for range n {
			c, err := net.DialTimeout(proto, netip.AddrPortFrom(vipAddr, port).String(), 300*time.Millisecond)
			if err != nil {
				got[""]++
				continue
			}
			c.SetDeadline(time.Now().Add(500 * time.Millisecond))
			if proto == "udp4" {
				c.Write([]byte("hi"))
			}
			line, err := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if err != nil {
				got[""]++
				continue
			}
			got[strings.TrimSpace(line)]++
		}
	})
	return got
}

func program(t *testing.T, services []Service) {
	t.Helper()
	ns, err := netns.GetFromName("vipt-c")
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := Program(int(ns), services); err != nil {
		t.Fatal(err)
	}
}

// TestProgram: the VIP answers nothing until the client's namespace is
// programmed (the control: what a vxsec network did before this package);
// then TCP and UDP connections to it reach both tasks, about evenly, with
// the client's own address as their source; a rewrite with one backend
// sends everything there; an empty program removes the table and the VIP
// answers nothing again.
func TestProgram(t *testing.T) {
	segment(t)
	for ns := range backends {
		serve(t, ns)
	}
	const n = 200
	if got := ask(t, "tcp4", 5); got[""] != 5 {
		t.Fatalf("control: the VIP answered before any program: %v", got)
	}
	t.Logf("control: 5 of 5 TCP connections to the VIP failed before the program")
	svc := Service{Network: "n1", Name: "web", VIP: vipAddr, Backends: []netip.Addr{backends["vipt-b1"], backends["vipt-b2"]}}
	program(t, []Service{svc})
	for _, proto := range []string{"tcp4", "udp4"} {
		got := ask(t, proto, n)
		t.Logf("%s: %v", proto, got)
		for ns := range backends {
			k := ns + " " + clientAddr.String()
			// Each task's share is binomial(200, 1/2): below 60 has a
			// probability under 1e-8.
			if got[k] < 60 {
				t.Errorf("%s: task %s answered %d of %d with the client's address, want about half: %v", proto, ns, got[k], n, got)
			}
		}
		if got[""] != 0 {
			t.Errorf("%s: %d of %d failed", proto, got[""], n)
		}
	}
	// Scaled down to one task: everything goes there (new connections;
	// conntrack keeps old ones where they were).
	svc.Backends = []netip.Addr{backends["vipt-b2"]}
	program(t, []Service{svc})
	if got := ask(t, "tcp4", 20); got["vipt-b2 "+clientAddr.String()] != 20 {
		t.Fatalf("after the scale-down: %v, want all 20 on vipt-b2", got)
	}
	program(t, nil)
	if got := ask(t, "tcp4", 5); got[""] != 5 {
		t.Fatalf("the service is gone, and its VIP still answered: %v", got)
	}
	out, _ := exec.Command("ip", "netns", "exec", "vipt-c", "nft", "list", "tables").CombinedOutput()
	if strings.Contains(string(out), TableName) {
		t.Fatalf("the table is still there: %s", out)
	}
}
