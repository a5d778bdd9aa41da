package lab

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/vxsec/vxsec/pathprobe"
)

// Packets decodes what the capture has seen so far; it may be called while
// the capture runs (a record still being written is left for the next call).
func (c *Capture) Packets() (Packets, error) {
	c.mu.Lock()
	data := bytes.Clone(c.pcap.Bytes())
	c.mu.Unlock()
	if len(data) == 0 {
		return nil, nil // nothing written yet, not even the file header
	}
	recs, err := readPcap(data)
	if err != nil {
		return nil, fmt.Errorf("lab: capture in %s: %w", c.ns, err)
	}
	ps := make(Packets, 0, len(recs))
	for _, r := range recs {
		p := decodeSLL2(r)
		p.Iface = c.ifname(p.ifindex)
		if c.onSwitch && (p.Out || p.Iface == "br0") {
			continue
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// Wait polls the capture until cond holds for the packets seen so far, ctx
// ends or timeout passes; the error is cond's last one.
func (c *Capture) Wait(ctx context.Context, timeout time.Duration, cond func(Packets) error) (Packets, error) {
	var ps Packets
	err := waitFor(ctx, timeout, func() error {
		var err error
		if ps, err = c.Packets(); err != nil {
			return err
		}
		return cond(ps)
	})
	return ps, err
}

// Dropped is the number of packets the kernel dropped because tcpdump did
// not read them in time (its "dropped by kernel", reported when it stopped;
// -1 while it runs or if it reported nothing). Counts from a capture that
// dropped anything are not to be trusted.
//
// tcpdump's "received by filter" is no measure of loss: it also counts
// packets that arrived before the filter was in place (more of them under
// TCG), which tcpdump then rightly discards.
func (c *Capture) Dropped() int {
	select {
	case <-c.exited:
	default:
		return -1
	}
	for _, line := range strings.Split(c.Stderr(), "\n") {
		if n, ok := strings.CutSuffix(strings.TrimSpace(line), " packets dropped by kernel"); ok {
			if v, err := strconv.Atoi(n); err == nil {
				return v
			}
		}
	}
	return -1
}

// Stderr is what tcpdump has said (its filter errors, its statistics).
func (c *Capture) Stderr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.TrimSpace(c.stderr.String())
}

// WriteFile saves the capture so far as a pcap file (`tcpdump -r FILE -e`).
func (c *Capture) WriteFile(path string) error {
	c.mu.Lock()
	data := bytes.Clone(c.pcap.Bytes())
	c.mu.Unlock()
	return os.WriteFile(path, data, 0o600)
}

// ifname resolves an interface index of the capture's namespace, asking
// `ip` again when a device appeared since the last time.
func (c *Capture) ifname(idx int) string {
	c.mu.Lock()
	name, ok := c.ifnames[idx]
	c.mu.Unlock()
	if ok {
		return name
	}
	out, err := output(context.Background(), "ip", "-n", c.ns, "-o", "link", "show")
	names := map[int]string{}
	if err == nil {
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			i, err := strconv.Atoi(strings.TrimSuffix(f[0], ":"))
			if err != nil {
				continue
			}
			n := strings.TrimSuffix(f[1], ":")
			if at := strings.IndexByte(n, '@'); at >= 0 {
				n = n[:at]
			}
			names[i] = n
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, n := range names {
		if c.ifnames == nil {
			c.ifnames = map[int]string{}
		}
		c.ifnames[i] = n
	}
	if name, ok := c.ifnames[idx]; ok {
		return name
	}
	return "if" + strconv.Itoa(idx) // gone since
}

// Packet is one captured packet, decoded as far as the lab cares.
type Packet struct {
	Time time.Time
	// Iface is the device it was seen on: the sender's switch port for
	// Lab.Capture, any device of the host's for Host.Capture.
	Iface string
	// Out is true for a packet the namespace sent out of Iface.
	Out bool
	// Len is the packet's length from the network header on.
	Len       int
	EtherType uint16
	// Src and Dst are the IP addresses (invalid for non-IP packets).
	Src, Dst netip.Addr
	// Proto is the IP protocol (17 UDP, 6 TCP, 1 ICMP, 50 ESP).
	Proto uint8
	// SrcPort and DstPort are UDP's or TCP's ports.
	SrcPort, DstPort uint16
	// SPI and Seq are ESP's (the low 32 bits of the sequence with ESN).
	SPI, Seq uint32
	// Payload is what the capture kept after the UDP header (after the
	// IP header for other protocols).
	Payload []byte

	ifindex int
}

// IP protocol numbers.
const (
	ProtoICMP = 1
	ProtoTCP  = 6
	ProtoUDP  = 17
	ProtoESP  = 50
)

// String is one line, as tcpdump would say it briefly.
func (p Packet) String() string {
	dir := "in"
	if p.Out {
		dir = "out"
	}
	switch {
	case p.Proto == ProtoUDP || p.Proto == ProtoTCP:
		return fmt.Sprintf("%s %s %s:%d > %s:%d proto %d len %d", p.Iface, dir, p.Src, p.SrcPort, p.Dst, p.DstPort, p.Proto, p.Len)
	case p.Proto == ProtoESP:
		return fmt.Sprintf("%s %s %s > %s ESP spi 0x%08x seq %d len %d", p.Iface, dir, p.Src, p.Dst, p.SPI, p.Seq, p.Len)
	case p.Src.IsValid():
		return fmt.Sprintf("%s %s %s > %s proto %d len %d", p.Iface, dir, p.Src, p.Dst, p.Proto, p.Len)
	}
	return fmt.Sprintf("%s %s ethertype 0x%04x len %d", p.Iface, dir, p.EtherType, p.Len)
}

// VXLAN decodes a UDP payload as VXLAN (whatever the port): the VNI and
// the inner frame, decoded as a packet of its own.
func (p Packet) VXLAN() (vni uint32, inner Packet, ok bool) {
	b := p.Payload
	if p.Proto != ProtoUDP || len(b) < 8 || b[0]&0x08 == 0 {
		return 0, Packet{}, false
	}
	vni = uint32(b[4])<<16 | uint32(b[5])<<8 | uint32(b[6])
	inner = Packet{Time: p.Time, Iface: p.Iface, Out: p.Out}
	if e := b[8:]; len(e) >= 14 {
		inner.EtherType = binary.BigEndian.Uint16(e[12:14])
		decodeL3(&inner, e[14:])
	}
	return vni, inner, true
}

// Packets is what a capture saw, in order.
type Packets []Packet

// Where keeps the packets f accepts.
func (ps Packets) Where(f func(Packet) bool) Packets {
	var out Packets
	for _, p := range ps {
		if f(p) {
			out = append(out, p)
		}
	}
	return out
}

// UDPTo keeps the UDP datagrams to port (VXLAN on vxsec's data port, 4800
// by default, or gossip on 7946), but for vxsec's path probes: they are
// no network's traffic (PathProbes keeps them).
func (ps Packets) UDPTo(port uint16) Packets {
	return ps.Where(func(p Packet) bool { return p.Proto == ProtoUDP && p.DstPort == port && !p.PathProbe() })
}

// NotPathProbe is a tcpdump filter (IPv4) that leaves out vxsec's path
// probes: VXLAN with VNI 0 (bytes 4..6 after the UDP header) and a probe's
// magic (bytes 8..11).
var NotPathProbe = fmt.Sprintf("not (udp[12:4] & 0xffffff00 = 0 and (udp[16:4] = 0x%08x or udp[16:4] = 0x%08x))",
	pathprobe.MagicSmall, pathprobe.MagicFull)

// PathProbes keeps vxsec's path probes (package pathprobe).
func (ps Packets) PathProbes() Packets { return ps.Where(Packet.PathProbe) }

// PathProbe reports whether p is one of vxsec's path probes: UDP whose
// payload is VXLAN with VNI 0 and a probe's magic.
func (p Packet) PathProbe() bool {
	if p.Proto != ProtoUDP || len(p.Payload) < pathprobe.HeaderLen || !bytes.Equal(p.Payload[:8], pathprobe.VXLANHeader()) {
		return false
	}
	m := binary.BigEndian.Uint32(p.Payload[8:12])
	return m == pathprobe.MagicSmall || m == pathprobe.MagicFull
}

// ESP keeps the ESP packets from src to dst; an invalid address matches
// any.
func (ps Packets) ESP(src, dst netip.Addr) Packets {
	return ps.Where(func(p Packet) bool {
		return p.Proto == ProtoESP && (!src.IsValid() || p.Src == src) && (!dst.IsValid() || p.Dst == dst)
	})
}

// Between keeps the IP packets between a and b, in either direction.
func (ps Packets) Between(a, b netip.Addr) Packets {
	return ps.Where(func(p Packet) bool {
		return (p.Src == a && p.Dst == b) || (p.Src == b && p.Dst == a)
	})
}

// CountUDP counts the UDP datagrams to port.
func (ps Packets) CountUDP(port uint16) int { return len(ps.UDPTo(port)) }

// CountESP counts the ESP packets between a and b, in either direction.
func (ps Packets) CountESP(a, b netip.Addr) int {
	return len(ps.ESP(a, b)) + len(ps.ESP(b, a))
}

// String lists the packets, one a line.
func (ps Packets) String() string {
	var sb strings.Builder
	for _, p := range ps {
		sb.WriteString(p.String())
		sb.WriteByte('\n')
	}
	return sb.String()
}
