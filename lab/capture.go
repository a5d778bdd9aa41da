package lab

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
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
