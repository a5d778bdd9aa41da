package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vxsec/vxsec/lab"
)

// benchHandBuiltESP measures an encrypted vxsec network against the same
// data path made by hand (VXLAN in ESP transport mode, ip xfrm) between the
// same two host namespaces, and an encrypted network's throughput while
// its keys rotate against its throughput at rest.
func benchHandBuiltESP(ctx context.Context, w io.Writer, c *cluster, e1, e2 *lab.Container, evni int, o benchOpts) (string, error) {
	const baseVNI, basePort = 1402, 4803
	h1, h2 := c.hosts[0], c.hosts[1]
	mtu, err := h1.Exec(ctx, "cat", fmt.Sprintf("/sys/class/net/vxsec-%d/mtu", evni))
	if err != nil {
		return "", err
	}
	fmt.Fprintf(w, `   hand-built ESP method: between the same two host namespaces, a VXLAN device made with ip link
   (id %d, dstport %d, the MTU of vxsec's encrypted device), static FDB and neighbour entries,
   a macvlan into a container namespace, and ESP transport mode for its UDP port made with ip xfrm:
   rfc4106(gcm(aes)), 256-bit keys, 128-bit ICV, ESN, replay window 128, one SA each way (what
   vxsec installs). iperf3 -t %d -O 1 (one TCP stream), container h1 → container h2 on each,
   %d runs each, alternating (ABBA). The ratio is median(vxsec) / median(hand-built).
`, baseVNI, basePort, o.seconds, o.runs)
	base := twin{vni: baseVNI, port: basePort, mtu: strings.TrimSpace(mtu), esp: true, ends: [2]twinEnd{
		{h1, c.Name() + "-he1", "10.49.0.1", "02:00:0a:31:00:01"},
		{h2, c.Name() + "-he2", "10.49.0.2", "02:00:0a:31:00:02"},
	}}
	cleanup, err := base.build(ctx)
	if err != nil {
		return "", err
	}
	defer cleanup()
	// The twin's packets are ESP on the wire: its SAs count them.
	before, _ := h1.Exec(ctx, "ip", "-s", "xfrm", "state", "get", "src", h1.Addr.String(), "dst", h2.Addr.String(), "proto", "esp", "spi", "0x7e570001")
	sides := []pair{
		{name: "vxsec", client: e1.NS, server: e2.NS, serverIP: e2.IP()},
		base.pair("hand-built"),
	}
	results, err := iperfABBA(ctx, w, sides, o, mbits)
	if err != nil {
		return "", err
	}
	after, _ := h1.Exec(ctx, "ip", "-s", "xfrm", "state", "get", "src", h1.Addr.String(), "dst", h2.Addr.String(), "proto", "esp", "spi", "0x7e570001")
	if sent := saBytes(after) - saBytes(before); sent <= 0 {
		return "", fmt.Errorf("the hand-built SA h1 → h2 carried nothing: the twin did not run in ESP\n%s", after)
	}
	mv, mb := median(results["vxsec"]), median(results["hand-built"])
	ratio := mv / mb
	fmt.Fprintf(w, "   hand-built ESP result: vxsec median %.1f Mbit/s, hand-built ESP median %.1f Mbit/s, ratio %.3f (goal ≥ 0.95)\n", mv/1e6, mb/1e6, ratio)
	var missed []string
	if ratio < 0.95 {
		missed = append(missed, fmt.Sprintf("encrypted/hand-built ESP %.3f < 0.95", ratio))
	}

	// Throughput while the keys rotate, against at rest.
	const rotations = 10
	fmt.Fprintf(w, `   rotation throughput method: one TCP stream (iperf3, 1 s intervals) container h1 → container h2
   on the encrypted network; at rest for 10 s, then while %d forced rotations run back to back
   (vxsec rotate on h1 and h2 alternately, each awaited until both send with the new epoch and
   the old one is erased). Each figure is the mean of the intervals that ended inside the window.
`, rotations)
	p := sides[0]
	rest, err := iperfWindow(ctx, p, func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Second):
			return nil
		}
	})
	if err != nil {
		return "", fmt.Errorf("at rest: %w", err)
	}
	var took time.Duration
	during, err := iperfWindow(ctx, p, func(ctx context.Context) error {
		start := time.Now()
		defer func() { took = time.Since(start) }()
		for i := 0; i < rotations; i++ {
			h := c.hosts[i%2]
			if err := h.Client().Call(ctx, "VxSec.Rotate", struct{}{}, nil); err != nil {
				return err
			}
			if err := lab.WaitKeyed(ctx, c.hosts[:2], 60*time.Second); err != nil {
				return fmt.Errorf("rotation %d: %w", i+1, err)
			}
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("during rotations: %w", err)
	}
	r := during / rest
	fmt.Fprintf(w, "   rotation throughput result: at rest %.1f Mbit/s, during %d rotations (%s) %.1f Mbit/s, ratio %.3f (goal ≥ 0.9)\n",
		rest/1e6, rotations, ms(took), during/1e6, r)
	if r < 0.9 {
		missed = append(missed, fmt.Sprintf("throughput during rotations %.3f of at rest < 0.9", r))
	}
	return strings.Join(missed, ", "), nil
}

// saBytes reads the bytes an SA carried from `ip -s xfrm state`.
func saBytes(out string) int64 {
	m := regexp.MustCompile(`(\d+)\(bytes\)`).FindStringSubmatch(out)
	if m == nil {
		return 0
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

// intervalLine is iperf3's per-second report on the client, in Mbit/s
// (-f m); the closing sender and receiver lines are left out.
var intervalLine = regexp.MustCompile(`sec\s+[\d.]+\s+\w?Bytes\s+([\d.]+)\s+Mbits/sec`)

// iperfWindow runs one TCP stream from p's client for as long as it takes,
// starts act after 3 s, and returns the mean bits/s of the 1 s intervals
// that ended inside act's run (at least two).
func iperfWindow(ctx context.Context, p pair, act func(context.Context) error) (float64, error) {
	srv := exec.CommandContext(ctx, "ip", "netns", "exec", p.server, "iperf3", "-s", "-1", "-p", "5202")
	if err := srv.Start(); err != nil {
		return 0, err
	}
	defer func() {
		srv.Process.Kill()
		srv.Wait()
	}()
	time.Sleep(300 * time.Millisecond)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cli := exec.CommandContext(cctx, "ip", "netns", "exec", p.client, "iperf3", "-c", p.serverIP, "-p", "5202", "-t", "600", "-i", "1", "-f", "m", "--forceflush")
	out, err := cli.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cli.Start(); err != nil {
		return 0, err
	}
	type sample struct {
		at  time.Time
		bps float64
	}
	var mu sync.Mutex
	var samples []sample
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if strings.Contains(line, "sender") || strings.Contains(line, "receiver") {
				continue
			}
			if m := intervalLine.FindStringSubmatch(line); m != nil {
				v, _ := strconv.ParseFloat(m[1], 64)
				mu.Lock()
				samples = append(samples, sample{time.Now(), v * 1e6})
				mu.Unlock()
			}
		}
	}()
	stop := func() {
		cancel()
		<-read
		cli.Wait()
	}
	select {
	case <-ctx.Done():
		stop()
		return 0, ctx.Err()
	case <-time.After(3 * time.Second):
	}
	from := time.Now()
	actErr := act(ctx)
	to := time.Now()
	// The interval that ends just after the window still holds a second
	// of it at most; wait for it, then stop.
	time.Sleep(1500 * time.Millisecond)
	stop()
	if actErr != nil {
		return 0, actErr
	}
	mu.Lock()
	defer mu.Unlock()
	var sum float64
	var n int
	for _, s := range samples {
		// A line reports the second before it: it lies inside the
		// window if that second does.
		if s.at.Add(-time.Second).After(from) && !s.at.After(to.Add(200*time.Millisecond)) {
			sum += s.bps
			n++
		}
	}
	if n < 2 {
		return 0, fmt.Errorf("only %d iperf3 intervals inside a window of %s (%d reported in all)", n, ms(to.Sub(from)), len(samples))
	}
	return sum / float64(n), nil
}
