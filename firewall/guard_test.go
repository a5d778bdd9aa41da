package firewall

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vxsec/vxsec/espprobe"
	"github.com/vxsec/vxsec/internal/testutil"
	"github.com/vxsec/vxsec/pathprobe"
)

// inNewNetns runs f on a thread moved into a fresh network namespace with
// an underlay holding 198.18.0.1/24 (a veth: not every kernel has dummy).
// Needs root.
func inNewNetns(t testing.TB, f func()) {
	t.Helper()
	testutil.InNewNetns(t, func(netns.NsHandle) {
		underlay(t)
		f()
	})
}

// underlay gives the current namespace a veth pair, one end holding
// 198.18.0.1/24, and brings it and loopback up.
func underlay(t testing.TB) {
	t.Helper()
	under := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "under0"}, PeerName: "under1"}
	if err := netlink.LinkAdd(under); err != nil {
		t.Fatal(err)
	}
	addr, _ := netlink.ParseAddr("198.18.0.1/24")
	if err := netlink.AddrAdd(under, addr); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"lo", "under0", "under1"} {
		l, err := netlink.LinkByName(name)
		if err == nil {
			err = netlink.LinkSetUp(l)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// sendUDP sends one datagram from a socket of this thread's namespace and
// reports whether the kernel refused it (netfilter's drop of a local packet
// is EPERM at the sender).
func sendUDP(t *testing.T, dst string) (refused bool) {
	t.Helper()
	c, err := net.Dial("udp", dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Write([]byte("a forged VXLAN frame"))
	if errors.Is(err, syscall.EPERM) {
		return true
	}
	if err != nil {
		t.Fatalf("sending to %s: %v", dst, err)
	}
	return false
}

// TestGuardLocalInjection: with the guard in place, no socket of the host's
// namespace reaches a data port of a member or of the host itself, and each
// refusal is counted under its lock. The positive controls show the same
// socket reaching other ports and non-members, so the refusals are the
// guard's doing.
func TestGuardLocalInjection(t *testing.T) {
	inNewNetns(t, func() {
		f := New()
		member := netip.MustParseAddr("198.18.0.2")
		err := f.Apply(State{Active: true, DataPorts: []uint16{4800, 4801}, SecurePorts: []uint16{4801},
			Members: []netip.Addr{netip.MustParseAddr("198.18.0.1"), member}})
		if err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			dst     string
			refused bool
		}{
			{"198.18.0.2:4800", true},  // a member's plain data port
			{"198.18.0.2:4801", true},  // a member's encrypted data port
			{"198.18.0.1:4800", true},  // this host, by its member address
			{"127.0.0.1:4800", true},   // this host, by loopback
			{"198.18.0.2:4899", false}, // control: another port of the member
			{"198.18.0.3:4800", false}, // control: a non-member's port 4800
			{"127.0.0.1:4899", false},  // control: another local port
		}
		want := 0
		for _, tc := range cases {
			if got := sendUDP(t, tc.dst); got != tc.refused {
				t.Errorf("send to %s: refused %v, want %v", tc.dst, got, tc.refused)
			}
			if tc.refused {
				want++
			}
		}
		drops, err := f.Drops()
		if err != nil {
			t.Fatal(err)
		}
		if got := drops[LockLocalInjection]; got != uint64(want) {
			t.Errorf("%s counted %d, want %d (all drops: %v)", LockLocalInjection, got, want, drops)
		}
		for _, lock := range Locks() {
			if _, ok := drops[lock]; !ok {
				t.Errorf("lock %s has no counted rule (drops: %v)", lock, drops)
			}
		}
		// Idle again: the tables go, and so do the counts.
		if err := f.Apply(State{}); err != nil {
			t.Fatal(err)
		}
		if drops, err := f.Drops(); err != nil || len(drops) != 0 {
			t.Errorf("after the last network: drops %v, %v; want none", drops, err)
		}
		if sendUDP(t, "198.18.0.2:4800") {
			t.Error("without a vxsec network, the data port is nobody's: nothing may be refused")
		}
	})
}

// TestESPSeen: the sets of members whose native ESP arrived hold exactly
// the members that sent some (a probe, here to this host itself over
// loopback, which the input hook sees as any arrival), never a non-member,
// and nothing before anything was sent.
func TestESPSeen(t *testing.T) {
	inNewNetns(t, func() {
		f := New()
		self, stranger := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.3")
		if err := f.Apply(State{Active: true, DataPorts: []uint16{4800, 4801}, SecurePorts: []uint16{4801},
			Members: []netip.Addr{self, netip.MustParseAddr("198.18.0.2")}}); err != nil {
			t.Fatal(err)
		}
		before := time.Now()
		if seen, since, err := f.ESPSeen(); err != nil || len(seen) != 0 || since.After(before) || before.Sub(since) > time.Minute {
			t.Fatalf("before any ESP: seen %v since %v, %v; want none, since the Apply just before", seen, since, err)
		}
		l, err := netlink.LinkByName("under0")
		if err != nil {
			t.Fatal(err)
		}
		extra, _ := netlink.ParseAddr(stranger.String() + "/24")
		if err := netlink.AddrAdd(l, extra); err != nil {
			t.Fatal(err)
		}
		// The stranger first: a non-member's ESP is not recorded.
		if err := espprobe.Send(stranger, []netip.Addr{self}, 1); err != nil {
			t.Fatal(err)
		}
		if seen, _, err := f.ESPSeen(); err != nil || len(seen) != 0 {
			t.Fatalf("after a non-member's probe: seen %v, %v; want none", seen, err)
		}
		// The control: a member's probe is.
		if err := espprobe.Send(self, []netip.Addr{stranger}, 2); err != nil {
			t.Fatal(err)
		}
		if seen, _, err := f.ESPSeen(); err != nil || len(seen) != 1 || seen[0] != self {
			t.Fatalf("after a member's probe: seen %v, %v; want [%s]", seen, err, self)
		}
	})
}

// sendProbe sends one datagram shaped as a path probe (VXLAN with vni, and
// magic) from src to dst:port, with vxsec's probe mark if marked, and
// reports whether the kernel refused it.
func sendProbe(t *testing.T, src, dst netip.Addr, port int, vni uint32, magic uint32, marked bool) (refused bool) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if marked {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, pathprobe.Mark); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src.As4()}); err != nil {
		t.Fatal(err)
	}
	p := pathprobe.Payload(magic, 64)
	p[4], p[5], p[6] = byte(vni>>16), byte(vni>>8), byte(vni)
	err = unix.Sendto(fd, p, 0, &unix.SockaddrInet4{Addr: dst.As4(), Port: port})
	if errors.Is(err, syscall.EPERM) {
		return true
	}
	if err != nil {
		t.Fatalf("sending to %s:%d: %v", dst, port, err)
	}
	return false
}

// TestPathSeen: the receiver's record of path probes holds exactly the
// members whose probes arrived (small and full apart), and the sender's
// local-injection lock lets out only a datagram that carries vxsec's probe
// mark and VNI 0: the same datagram unmarked, or marked with a network's
// VNI, is refused and counted. The probes go to this host itself over
// loopback, which the output and input hooks see as any other send and
// arrival.
func TestPathSeen(t *testing.T) {
	inNewNetns(t, func() {
		f := New()
		self, stranger := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.3")
		if err := f.Apply(State{Active: true, DataPorts: []uint16{4800, 4801}, SecurePorts: []uint16{4801},
			Members: []netip.Addr{self, netip.MustParseAddr("198.18.0.2")}}); err != nil {
			t.Fatal(err)
		}
		rec, err := f.PathSeen()
		if err != nil || !rec.Recording || len(rec.Small)+len(rec.Full) != 0 {
			t.Fatalf("before any probe: %+v, %v; want recording, nothing seen", rec, err)
		}
		l, err := netlink.LinkByName("under0")
		if err != nil {
			t.Fatal(err)
		}
		extra, _ := netlink.ParseAddr(stranger.String() + "/24")
		if err := netlink.AddrAdd(l, extra); err != nil {
			t.Fatal(err)
		}
		drops := func() uint64 {
			d, err := f.Drops()
			if err != nil {
				t.Fatal(err)
			}
			return d[LockLocalInjection]
		}
		cases := []struct {
			name      string
			src       netip.Addr
			port      int
			vni       uint32
			magic     uint32
			marked    bool
			refused   bool
			wantSmall []netip.Addr
			wantFull  []netip.Addr
		}{
			{"unmarked-probe", self, 4800, 0, pathprobe.MagicSmall, false, true, nil, nil},
			{"marked-with-a-network-vni", self, 4800, 7, pathprobe.MagicSmall, true, true, nil, nil},
			{"marked-to-the-encrypted-port", self, 4801, 0, pathprobe.MagicSmall, true, true, nil, nil},
			{"marked-unknown-magic", self, 4800, 0, 0x12345678, true, true, nil, nil},
			{"stranger-probe", stranger, 4800, 0, pathprobe.MagicSmall, true, false, nil, nil},
			{"member-small-probe", self, 4800, 0, pathprobe.MagicSmall, true, false, []netip.Addr{self}, nil},
			{"member-full-probe", self, 4800, 0, pathprobe.MagicFull, true, false, []netip.Addr{self}, []netip.Addr{self}},
		}
		for _, tc := range cases {
			before := drops()
			if got := sendProbe(t, tc.src, self, tc.port, tc.vni, tc.magic, tc.marked); got != tc.refused {
				t.Errorf("%s: refused %v, want %v", tc.name, got, tc.refused)
			}
			want := before
			if tc.refused {
				want++
			}
			if got := drops(); got != want {
				t.Errorf("%s: %s counted %d, want %d", tc.name, LockLocalInjection, got, want)
			}
			rec, err := f.PathSeen()
			if err != nil {
				t.Fatal(err)
			}
			if !sameAddrs(rec.Small, tc.wantSmall) || !sameAddrs(rec.Full, tc.wantFull) {
				t.Errorf("%s: recorded small %v, full %v; want %v, %v", tc.name, rec.Small, rec.Full, tc.wantSmall, tc.wantFull)
			}
		}
		if err := f.Apply(State{}); err != nil {
			t.Fatal(err)
		}
		if rec, err := f.PathSeen(); err != nil || rec.Recording {
			t.Errorf("after the last network: %+v, %v; want no record", rec, err)
		}
	})
}
