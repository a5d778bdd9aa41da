package lab

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Forgery is a VXLAN datagram made by hand: what a member's VXLAN device
// would send to deliver an ICMP echo request to a container.
type Forgery struct {
	VNI            uint32
	SrcMAC, DstMAC net.HardwareAddr
	SrcIP, DstIP   netip.Addr
}

// Payload is the UDP payload: VXLAN header, Ethernet, IPv4, ICMP echo.
func (f Forgery) Payload() []byte {
	icmp := []byte{8, 0, 0, 0, 0x76, 0x78, 0, 1}
	icmp = append(icmp, []byte("vxsec forged frame")...)
	binary.BigEndian.PutUint16(icmp[2:], checksum(icmp))
	ip := make([]byte, 20, 20+len(icmp))
	ip[0], ip[8], ip[9] = 0x45, 64, syscall.IPPROTO_ICMP
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(icmp)))
	copy(ip[12:16], f.SrcIP.AsSlice())
	copy(ip[16:20], f.DstIP.AsSlice())
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	ip = append(ip, icmp...)
	out := []byte{0x08, 0, 0, 0}
	out = binary.BigEndian.AppendUint32(out, f.VNI<<8)
	out = append(out, f.DstMAC...)
	out = append(out, f.SrcMAC...)
	out = append(out, 0x08, 0x00)
	return append(out, ip...)
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// How an injector writes its datagrams.
const (
	// InjectUDP is an ordinary UDP socket: what any user may open.
	InjectUDP = "udp"
	// InjectRaw is a raw IPv4 socket writing whole packets (IP_HDRINCL),
	// with Src as the source address: what CAP_NET_RAW allows, in a
	// host-network container or, forging a member's address, in any
	// container.
	InjectRaw = "raw"
)

// Injection is one injector's run.
type Injection struct {
	// NS is the namespace it runs in; UID the user it runs as (0: root).
	NS  string
	UID int
	// Mode is InjectUDP or InjectRaw; Src the source of a raw packet.
	Mode string
	Src  netip.Addr
	Dst  netip.AddrPort
	// Count datagrams of Payload are sent.
	Count   int
	Payload []byte
}

// InjectResult counts what the sender's kernel took and refused (a local
// netfilter drop refuses the send with EPERM).
type InjectResult struct{ Sent, Refused int }

const injectEnv = "VXSEC_LAB_INJECT"

// Inject runs the injection: a copy of this program (a test binary whose
// TestMain calls InjectorMain) started in the namespace as the user.
func Inject(ctx context.Context, in Injection) (InjectResult, error) {
	self, err := runnableCopy()
	if err != nil {
		return InjectResult{}, err
	}
	args := []string{"netns", "exec", in.NS}
	if in.UID != 0 {
		u := strconv.Itoa(in.UID)
		args = append(args, "setpriv", "--reuid="+u, "--regid="+u, "--clear-groups")
	}
	args = append(args, self)
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Env = append(os.Environ(), injectEnv+"="+strings.Join([]string{in.Mode, in.Src.String(), in.Dst.String(),
		strconv.Itoa(in.Count), hex.EncodeToString(in.Payload)}, ","))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return InjectResult{}, fmt.Errorf("lab: injector in %s as uid %d: %w: %s", in.NS, in.UID, err, out)
	}
	var r InjectResult
	if _, err := fmt.Sscanf(strings.TrimSpace(string(out)), "sent %d refused %d", &r.Sent, &r.Refused); err != nil {
		return r, fmt.Errorf("lab: injector said %q: %w", out, err)
	}
	return r, nil
}

// runnableCopy copies this program where any user may run it: a test
// binary lives in a directory only root may enter.
func runnableCopy() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("lab: %w", err)
	}
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("vxsec-injector-%d", os.Getpid()))
	dst := filepath.Join(dir, "injector")
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("lab: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", fmt.Errorf("lab: %w", err)
	}
	src, err := os.Open(exe)
	if err != nil {
		return "", fmt.Errorf("lab: %w", err)
	}
	defer src.Close()
	tmp := dst + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return "", fmt.Errorf("lab: %w", err)
	}
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		return "", fmt.Errorf("lab: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("lab: %w", err)
	}
	return dst, os.Rename(tmp, dst)
}

// InjectorMain runs the injector when this process was started as one by
// Inject, and exits; otherwise it returns at once. A test binary's TestMain
// calls it first.
func InjectorMain() {
	spec, ok := os.LookupEnv(injectEnv)
	if !ok {
		return
	}
	r, err := runInjector(spec)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("sent %d refused %d\n", r.Sent, r.Refused)
	os.Exit(0)
}

func runInjector(spec string) (InjectResult, error) {
	var r InjectResult
	f := strings.Split(spec, ",")
	if len(f) != 5 {
		return r, fmt.Errorf("injector: bad spec %q", spec)
	}
	dst, err := netip.ParseAddrPort(f[2])
	if err != nil {
		return r, err
	}
	count, err := strconv.Atoi(f[3])
	if err != nil {
		return r, err
	}
	payload, err := hex.DecodeString(f[4])
	if err != nil {
		return r, err
	}
	var send func() error
	switch f[0] {
	case InjectUDP:
		// Unconnected: the peer's port-unreachable answers to the
		// control must not fail the next send.
		network := "udp4"
		if dst.Addr().Is6() {
			network = "udp6"
		}
		c, err := net.ListenUDP(network, nil)
		if err != nil {
			return r, err
		}
		defer c.Close()
		send = func() error { _, err := c.WriteToUDPAddrPort(payload, dst); return err }
	case InjectRaw:
		src, err := netip.ParseAddr(f[1])
		if err != nil {
			return r, err
		}
		// IPPROTO_RAW implies that the packet carries its own IP header,
		// for IPv6 too (IPV6_HDRINCL).
		var (
			family int
			pkt    []byte
			sa     syscall.Sockaddr
		)
		if dst.Addr().Is6() {
			family, pkt, sa = syscall.AF_INET6, rawUDP6(src, dst, payload), &syscall.SockaddrInet6{Addr: dst.Addr().As16()}
		} else {
			family, pkt, sa = syscall.AF_INET, rawUDP(src, dst, payload), &syscall.SockaddrInet4{Addr: dst.Addr().As4()}
		}
		fd, err := syscall.Socket(family, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
		if err != nil {
			return r, fmt.Errorf("raw socket: %w", err)
		}
		defer syscall.Close(fd)
		send = func() error { return syscall.Sendto(fd, pkt, 0, sa) }
	default:
		return r, fmt.Errorf("injector: mode %q", f[0])
	}
	for range count {
		switch err := send(); {
		case err == nil:
			r.Sent++
		case err == syscall.EPERM || strings.Contains(err.Error(), "operation not permitted"):
			r.Refused++
		default:
			return r, err
		}
	}
	return r, nil
}

// rawUDP is a whole IPv4/UDP packet (no UDP checksum, which IPv4 allows).
func rawUDP(src netip.Addr, dst netip.AddrPort, payload []byte) []byte {
	udp := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	udp = append(udp, payload...)
	ip := make([]byte, 20, 20+len(udp))
	ip[0], ip[8], ip[9] = 0x45, 64, syscall.IPPROTO_UDP
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	copy(ip[12:16], src.AsSlice())
	a4 := dst.Addr().As4()
	copy(ip[16:20], a4[:])
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	return append(ip, udp...)
}

// rawUDP6 is a whole IPv6/UDP packet, with the UDP checksum IPv6 requires.
func rawUDP6(src netip.Addr, dst netip.AddrPort, payload []byte) []byte {
	udp := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	udp = append(udp, payload...)
	s16, d16 := src.As16(), dst.Addr().As16()
	pseudo := make([]byte, 0, 40+len(udp))
	pseudo = append(append(pseudo, s16[:]...), d16[:]...)
	pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(udp)))
	pseudo = append(pseudo, 0, 0, 0, syscall.IPPROTO_UDP)
	sum := checksum(append(pseudo, udp...))
	if sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], sum)
	ip := make([]byte, 40, 40+len(udp))
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(udp)))
	ip[6], ip[7] = syscall.IPPROTO_UDP, 64
	copy(ip[8:24], s16[:])
	copy(ip[24:40], d16[:])
	return append(ip, udp...)
}

// AddTenant makes a namespace behind h as a container of another Docker
// network is: a veth into h, the private address 172.31.<h's index>.2, and
// h masquerading what it sends (docker0's way). Like AddNode's, it runs no
// daemon; the lab removes it on Close.
func (h *Host) AddTenant(ctx context.Context) (*Host, error) {
	i := h.Index()
	addr, gw, family, forward := netip.AddrFrom4([4]byte{172, 31, byte(i), 2}), fmt.Sprintf("172.31.%d.1", i), "ip", "net.ipv4.ip_forward=1"
	if h.Addr.Is6() {
		// The IPv6 lab's tenant: a unique local address, masqueraded the
		// same way (NAT66), as Docker does for an IPv6 bridge network.
		addr, gw, family, forward = netip.MustParseAddr(fmt.Sprintf("fd31:%x::2", i)), fmt.Sprintf("fd31:%x::1", i), "ip6", "net.ipv6.conf.all.forwarding=1"
	}
	t := &Host{lab: h.lab, Name: h.Name + "-tenant", NS: h.NS + "-tenant", Addr: addr}
	h.lab.mu.Lock()
	h.lab.nodes = append(h.lab.nodes, t)
	h.lab.mu.Unlock()
	bits := 24
	if addr.Is6() {
		bits = 64
	}
	prefix := netip.PrefixFrom(addr, bits)
	steps := [][]string{
		{"ip", "netns", "add", t.NS},
		{"ip", "-n", h.NS, "link", "add", "tnt0", "type", "veth", "peer", "name", "eth0", "netns", t.NS},
		addrAdd(h.NS, netip.PrefixFrom(netip.MustParseAddr(gw), bits), "tnt0"),
		{"ip", "-n", h.NS, "link", "set", "tnt0", "up"},
		addrAdd(t.NS, prefix, "eth0"),
		{"ip", "-n", t.NS, "link", "set", "eth0", "up"},
		{"ip", "-n", t.NS, "link", "set", "lo", "up"},
		{"ip", "-n", t.NS, "route", "add", "default", "via", gw},
		{"ip", "netns", "exec", h.NS, "sysctl", "-qw", forward},
		{"ip", "netns", "exec", h.NS, "nft", fmt.Sprintf("add table %[1]s tenantnat; "+
			"add chain %[1]s tenantnat post { type nat hook postrouting priority 100; }; "+
			"add rule %[1]s tenantnat post %[1]s saddr %[2]s oifname eth0 masquerade", family, prefix.Masked())},
	}
	for _, s := range steps {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return nil, err
		}
	}
	return t, nil
}
