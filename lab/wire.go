package lab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// WireCapture is tcpdump writing what crosses one device to a pcap file:
// for a device outside any lab namespace (a bridge of the caller's own
// namespace), where Lab.Capture's switch does not apply. The file is read
// with ReadWire once the capture stopped.
type WireCapture struct {
	Path string

	cmd    *exec.Cmd
	exited chan struct{}
	mu     sync.Mutex
	stderr bytes.Buffer
}

// CaptureDevice starts tcpdump on dev (in namespace ns, or the caller's if
// ns is "") with a pcap filter, keeping snaplen bytes of each packet in the
// file path, and returns once it is capturing.
func CaptureDevice(ctx context.Context, ns, dev, filter string, snaplen int, path string) (*WireCapture, error) {
	args := []string{"tcpdump", "-i", dev, "-n", "-U", "-s", fmt.Sprint(snaplen), "-w", path}
	if f := strings.TrimSpace(filter); f != "" {
		args = append(args, f)
	}
	if ns != "" {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	c := &WireCapture{Path: path, exited: make(chan struct{})}
	c.cmd = exec.Command(args[0], args[1:]...)
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("lab: tcpdump on %s: %w", dev, err)
	}
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			c.mu.Lock()
			c.stderr.WriteString(sc.Text() + "\n")
			c.mu.Unlock()
			if strings.Contains(sc.Text(), "listening on") {
				once.Do(func() { close(listening) })
			}
		}
		c.cmd.Wait()
		close(c.exited)
	}()
	select {
	case <-listening:
		return c, nil
	case <-c.exited:
		return nil, fmt.Errorf("lab: tcpdump on %s exited: %s", dev, c.Stderr())
	case <-ctx.Done():
		c.Stop()
		return nil, ctx.Err()
	case <-time.After(captureStartTimeout):
		c.Stop()
		return nil, fmt.Errorf("lab: tcpdump on %s not capturing after %v: %s", dev, captureStartTimeout, c.Stderr())
	}
}

// Stop interrupts tcpdump (it then writes what it holds) and waits for it.
func (c *WireCapture) Stop() {
	c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
}

// Stderr is what tcpdump said (its counts, once stopped).
func (c *WireCapture) Stderr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stderr.String()
}

// WirePacket is an IPv4 packet of a capture, as far as the wire checks go.
type WirePacket struct {
	Src, Dst netip.Addr
	Proto    uint8
	// Len is the IP header's total length.
	Len int
	// Fragment: the packet is a fragment (more fragments, or an offset).
	Fragment bool
	DstPort  uint16 // UDP's and TCP's
}

func (p WirePacket) String() string {
	s := fmt.Sprintf("%s > %s proto %d length %d", p.Src, p.Dst, p.Proto, p.Len)
	if p.Proto == ProtoUDP || p.Proto == ProtoTCP {
		s += fmt.Sprintf(" dport %d", p.DstPort)
	}
	if p.Fragment {
		s += " fragment"
	}
	return s
}

// ReadWire decodes the IPv4 packets of a pcap file of Ethernet frames (or
// Linux cooked v1/v2 ones).
func ReadWire(path string) ([]WirePacket, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) < 24 {
		return nil, errors.New("lab: not a pcap file (short)")
	}
	var bo binary.ByteOrder
	switch binary.LittleEndian.Uint32(b) {
	case 0xa1b2c3d4, 0xa1b23c4d:
		bo = binary.LittleEndian
	case 0xd4c3b2a1, 0x4d3cb2a1:
		bo = binary.BigEndian
	default:
		return nil, errors.New("lab: not a pcap file (bad magic)")
	}
	var l2 func([]byte) (uint16, []byte)
	switch lt := bo.Uint32(b[20:24]) & 0x0fffffff; lt {
	case 1: // Ethernet, maybe with 802.1Q tags
		l2 = func(f []byte) (uint16, []byte) {
			if len(f) < 14 {
				return 0, nil
			}
			et, rest := binary.BigEndian.Uint16(f[12:14]), f[14:]
			for et == 0x8100 && len(rest) >= 4 {
				et, rest = binary.BigEndian.Uint16(rest[2:4]), rest[4:]
			}
			return et, rest
		}
	case 113: // Linux cooked v1
		l2 = func(f []byte) (uint16, []byte) {
			if len(f) < 16 {
				return 0, nil
			}
			return binary.BigEndian.Uint16(f[14:16]), f[16:]
		}
	case linktypeLinuxSLL2:
		l2 = func(f []byte) (uint16, []byte) {
			if len(f) < 20 {
				return 0, nil
			}
			return binary.BigEndian.Uint16(f[0:2]), f[20:]
		}
	default:
		return nil, fmt.Errorf("lab: pcap link type %d not decoded", lt)
	}
	var out []WirePacket
	for off := 24; off+16 <= len(b); {
		incl := int(bo.Uint32(b[off+8:]))
		if incl > 1<<20 || off+16+incl > len(b) {
			break // cut short when tcpdump stopped
		}
		et, ip := l2(b[off+16 : off+16+incl])
		off += 16 + incl
		if et != 0x0800 || len(ip) < 20 || ip[0]>>4 != 4 {
			continue
		}
		ihl := int(ip[0]&0x0f) * 4
		ff := binary.BigEndian.Uint16(ip[6:8])
		p := WirePacket{
			Src:      netip.AddrFrom4([4]byte(ip[12:16])),
			Dst:      netip.AddrFrom4([4]byte(ip[16:20])),
			Proto:    ip[9],
			Len:      int(binary.BigEndian.Uint16(ip[2:4])),
			Fragment: ff&0x2000 != 0 || ff&0x1fff != 0,
		}
		if (p.Proto == ProtoUDP || p.Proto == ProtoTCP) && ff&0x1fff == 0 && len(ip) >= ihl+4 {
			p.DstPort = binary.BigEndian.Uint16(ip[ihl+2 : ihl+4])
		}
		out = append(out, p)
	}
	return out, nil
}
