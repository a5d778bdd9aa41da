package lab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Wire captures: tcpdump in the switch's namespace (or a host's), writing
// pcap to a pipe that is decoded here, so that tests can count what really
// crossed the underlay (VXLAN datagrams, ESP, cleartext that should not be
// there) instead of trusting the daemons' own counters.

// captureSnaplen keeps the headers a test looks at: the outer IP and UDP or
// ESP headers, VXLAN's, and the inner Ethernet, IP and L4 headers.
const captureSnaplen = 256

// captureBufferKiB is the kernel's buffer for the capture: large, so that
// tcpdump falling behind on a loaded machine (or under TCG) drops nothing.
const captureBufferKiB = 32 << 10

// captureStartTimeout is how long tcpdump gets to open its socket: seconds
// on a busy machine, more under the kernel lab's TCG.
const captureStartTimeout = 60 * time.Second

// Capture is a running tcpdump. Stop it (t.Cleanup) or let its context end:
// a capture outlives the lab's namespaces otherwise.
type Capture struct {
	ns       string
	onSwitch bool // the lab's switch: only what enters through a port
	cmd      *exec.Cmd
	exited   chan struct{}

	mu      sync.Mutex
	pcap    bytes.Buffer
	stderr  bytes.Buffer
	ifnames map[int]string
	stopped bool
	waitErr error
}

// Capture starts tcpdump on every port of the lab's switch with a pcap
// filter (`udp dst port 4800`, `esp`, `host 198.18.0.1`; "" for all) and
// returns once it is capturing. It sees each frame once, as it entered the
// switch from its sender's port: Packet.Iface is that port ("p<N>", see
// Host.Port), and the frames the bridge floods or delivers to itself are not
// counted again.
func (l *Lab) Capture(ctx context.Context, filter string) (*Capture, error) {
	// inbound: each frame is seen when it enters a port and again when it
	// leaves through another; only the first counts.
	f := "inbound"
	if strings.TrimSpace(filter) != "" {
		f = "inbound and (" + filter + ")"
	}
	return startCapture(ctx, l.sw, true, f)
}

// Capture starts tcpdump on every device of the host's namespace (eth0, the
// VXLAN devices, bridges and veths vxsec makes) with a pcap filter. Unlike
// the switch's capture it keeps both directions: Packet.Out tells them apart
// and Packet.Iface names the device.
func (h *Host) Capture(ctx context.Context, filter string) (*Capture, error) {
	return startCapture(ctx, h.NS, false, filter)
}

// Capture starts tcpdump inside the container's namespace, on its one
// device, with a pcap filter: what the container itself received or sent.
func (c *Container) Capture(ctx context.Context, filter string) (*Capture, error) {
	return startCapture(ctx, c.NS, false, filter)
}

func startCapture(ctx context.Context, ns string, onSwitch bool, filter string) (*Capture, error) {
	args := []string{"netns", "exec", ns, "tcpdump", "-i", "any", "-y", "LINUX_SLL2",
		"-n", "-U", "--immediate-mode", "-s", strconv.Itoa(captureSnaplen), "-B", strconv.Itoa(captureBufferKiB), "-w", "-"}
	if f := strings.TrimSpace(filter); f != "" {
		args = append(args, f)
	}
	// Not CommandContext: Stop sends SIGINT so that tcpdump flushes and
	// reports its drops; the context is watched below.
	cmd := exec.Command("ip", args...)
	c := &Capture{ns: ns, onSwitch: onSwitch, cmd: cmd, exited: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("lab: capture: %w", err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("lab: capture: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("lab: capture in %s: %w (is tcpdump installed?)", ns, err)
	}
	listening := make(chan struct{})
	var copies sync.WaitGroup
	copies.Add(2)
	go func() {
		defer copies.Done()
		buf := make([]byte, 64<<10)
		for {
			n, err := stdout.Read(buf)
			if n > 0 {
				c.mu.Lock()
				c.pcap.Write(buf[:n])
				c.mu.Unlock()
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		defer copies.Done()
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			c.mu.Lock()
			c.stderr.WriteString(line + "\n")
			c.mu.Unlock()
			if strings.Contains(line, "listening on") {
				once.Do(func() { close(listening) })
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	go func() {
		copies.Wait() // both pipes drained before Wait closes them
		err := cmd.Wait()
		c.mu.Lock()
		c.waitErr = err
		c.mu.Unlock()
		close(c.exited)
	}()
	go func() {
		select {
		case <-ctx.Done():
			c.Stop()
		case <-c.exited:
		}
	}()

	timer := time.NewTimer(captureStartTimeout)
	defer timer.Stop()
	select {
	case <-listening:
		return c, nil
	case <-c.exited:
		return nil, fmt.Errorf("lab: tcpdump in %s exited before capturing: %v: %s", ns, c.exitErr(), c.Stderr())
	case <-ctx.Done():
		c.Stop()
		return nil, fmt.Errorf("lab: starting tcpdump in %s: %w", ns, ctx.Err())
	case <-timer.C:
		c.Stop()
		return nil, fmt.Errorf("lab: tcpdump in %s not capturing after %v: %s", ns, captureStartTimeout, c.Stderr())
	}
}

// settle waits until tcpdump has written nothing new for a while (at most
// a few seconds): on SIGINT it exits without reading what is still queued
// for it, and without counting that as dropped either.
func (c *Capture) settle() {
	const quiet, most = 300 * time.Millisecond, 3 * time.Second
	size := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.pcap.Len()
	}
	last, since, start := size(), time.Now(), time.Now()
	for time.Since(start) < most && time.Since(since) < quiet {
		select {
		case <-c.exited:
			return
		case <-time.After(50 * time.Millisecond):
		}
		if n := size(); n != last {
			last, since = n, time.Now()
		}
	}
}

func (c *Capture) exitErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.waitErr
}

// Stop ends the capture and returns every packet it saw. It first waits
// for tcpdump to have been quiet for 300 ms (at most 3 s), then sends
// SIGINT (tcpdump reports its statistics). A test that counts should
// still wait for what it expects with Wait first: a packet sent just before
// Stop may be missed. Stopping twice is harmless.
func (c *Capture) Stop() (Packets, error) {
	c.mu.Lock()
	first := !c.stopped
	c.stopped = true
	c.mu.Unlock()
	if first {
		c.settle()
		c.cmd.Process.Signal(syscall.SIGINT)
	}
	select {
	case <-c.exited:
	case <-time.After(15 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
	ps, err := c.Packets()
	if werr := c.exitErr(); werr != nil && err == nil {
		err = fmt.Errorf("lab: tcpdump in %s: %w: %s", c.ns, werr, c.Stderr())
	}
	return ps, err
}

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
// by default, or gossip on 7946).
func (ps Packets) UDPTo(port uint16) Packets {
	return ps.Where(func(p Packet) bool { return p.Proto == ProtoUDP && p.DstPort == port })
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

// pcap decoding: the classic file format (tcpdump -w), little or big
// endian, microsecond or nanosecond timestamps.

type pcapRecord struct {
	ts      time.Time
	origLen int
	data    []byte
}

const linktypeLinuxSLL2 = 276

func readPcap(b []byte) ([]pcapRecord, error) {
	if len(b) < 24 {
		return nil, nil // the header is still being written
	}
	var bo binary.ByteOrder
	nano := false
	switch binary.LittleEndian.Uint32(b) {
	case 0xa1b2c3d4:
		bo = binary.LittleEndian
	case 0xa1b23c4d:
		bo, nano = binary.LittleEndian, true
	case 0xd4c3b2a1:
		bo = binary.BigEndian
	case 0x4d3cb2a1:
		bo, nano = binary.BigEndian, true
	default:
		return nil, errors.New("not a pcap stream (bad magic)")
	}
	if lt := bo.Uint32(b[20:24]) & 0x0fffffff; lt != linktypeLinuxSLL2 {
		return nil, fmt.Errorf("link type %d, want LINUX_SLL2 (%d)", lt, linktypeLinuxSLL2)
	}
	var recs []pcapRecord
	for off := 24; off+16 <= len(b); {
		sec, frac := bo.Uint32(b[off:]), bo.Uint32(b[off+4:])
		incl, orig := int(bo.Uint32(b[off+8:])), int(bo.Uint32(b[off+12:]))
		if incl > 1<<20 {
			return recs, fmt.Errorf("corrupt record at offset %d (length %d)", off, incl)
		}
		if off+16+incl > len(b) {
			break // still being written
		}
		ns := int64(frac) * 1000
		if nano {
			ns = int64(frac)
		}
		recs = append(recs, pcapRecord{ts: time.Unix(int64(sec), ns), origLen: orig, data: b[off+16 : off+16+incl]})
		off += 16 + incl
	}
	return recs, nil
}

// decodeSLL2 decodes a Linux cooked v2 record: protocol, interface index,
// packet type, then the network header.
func decodeSLL2(r pcapRecord) Packet {
	p := Packet{Time: r.ts, Len: r.origLen - 20}
	b := r.data
	if len(b) < 20 {
		return p
	}
	p.EtherType = binary.BigEndian.Uint16(b[0:2])
	p.ifindex = int(binary.BigEndian.Uint32(b[4:8]))
	p.Out = b[10] == 4 // PACKET_OUTGOING
	decodeL3(&p, b[20:])
	return p
}

// decodeL3 fills in the IP and transport fields from a network header.
func decodeL3(p *Packet, b []byte) {
	var l4 []byte
	switch p.EtherType {
	case 0x0800:
		if len(b) < 20 || b[0]>>4 != 4 {
			return
		}
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl {
			return
		}
		p.Src = netip.AddrFrom4([4]byte(b[12:16]))
		p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
		p.Proto = b[9]
		if binary.BigEndian.Uint16(b[6:8])&0x1fff != 0 {
			return // a later fragment: no transport header
		}
		l4 = b[ihl:]
	case 0x86dd:
		if len(b) < 40 || b[0]>>4 != 6 {
			return
		}
		p.Src = netip.AddrFrom16([16]byte(b[8:24]))
		p.Dst = netip.AddrFrom16([16]byte(b[24:40]))
		p.Proto = b[6] // extension headers are not followed
		l4 = b[40:]
	default:
		return
	}
	switch p.Proto {
	case ProtoUDP, ProtoTCP:
		if len(l4) >= 4 {
			p.SrcPort = binary.BigEndian.Uint16(l4[0:2])
			p.DstPort = binary.BigEndian.Uint16(l4[2:4])
		}
		if p.Proto == ProtoUDP && len(l4) >= 8 {
			p.Payload = l4[8:]
			return
		}
	case ProtoESP:
		if len(l4) >= 8 {
			p.SPI = binary.BigEndian.Uint32(l4[0:4])
			p.Seq = binary.BigEndian.Uint32(l4[4:8])
		}
	}
	p.Payload = l4
}
