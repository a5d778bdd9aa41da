package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vxsec/vxsec/espprobe"
	"github.com/vxsec/vxsec/internal/benchdata"
	"github.com/vxsec/vxsec/lab"
)

// benchHandBuiltESP measures an encrypted vxsec network against the same
// data path made by hand (VXLAN in ESP transport mode, ip xfrm) between the
// same two host namespaces, and an encrypted network's throughput while
// its keys rotate against its throughput at rest.
func benchHandBuiltESP(ctx context.Context, w io.Writer, c *cluster, e1, e2 *lab.Container, evni int, o benchOpts, rec *benchdata.Encryption) (string, error) {
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
		{name: "vxsec-encrypted", client: e1.NS, server: e2.NS, serverIP: e2.IP()},
		base.pair("hand-built-esp"),
	}
	results, err := iperfABBA(ctx, w, sides, o, mbits)
	if err != nil {
		return "", err
	}
	after, _ := h1.Exec(ctx, "ip", "-s", "xfrm", "state", "get", "src", h1.Addr.String(), "dst", h2.Addr.String(), "proto", "esp", "spi", "0x7e570001")
	if sent := saBytes(after) - saBytes(before); sent <= 0 {
		return "", fmt.Errorf("the hand-built SA h1 → h2 carried nothing: the twin did not run in ESP\n%s", after)
	}
	rec.HandBuilt = sidesOf(sides, results)
	mv, mb := median(results["vxsec-encrypted"]), median(results["hand-built-esp"])
	ratio := mv / mb
	fmt.Fprintf(w, "   hand-built ESP result: vxsec median %.1f Mbit/s, hand-built ESP median %.1f Mbit/s, ratio %.3f (goal ≥ 0.95)\n", mv/1e6, mb/1e6, ratio)
	var missed []string
	if ratio < 0.95 {
		missed = append(missed, fmt.Sprintf("encrypted/hand-built ESP %.3f < 0.95", ratio))
	}

	// Throughput while the keys rotate, against at rest.
	const rotations, every = 10, 2 * time.Second
	fmt.Fprintf(w, `   rotation throughput method: one TCP stream (iperf3, 1 s intervals) container h1 → container h2
   on the encrypted network; at rest for 20 s, then while %d forced rotations run, one every %s
   (vxsec rotate on h1 and h2 alternately, each awaited, asking every 250 ms, until both send with
   the new epoch and the old one is erased). Each figure is the mean of the intervals that ended inside the window;
   the segments TCP retransmitted and the CPU the two daemons used in it are shown beside it, and
   the kernel's xfrm error counters that grew, with the ESP probes counted apart (the kernel counts
   each as XfrmInNoStates: SPI 1 is no SA's). Every SA's own replay and failed counts are read once a
   second (ip -s xfrm state) in both windows, and an SA whose counts grew is listed below its window.
`, rotations, every)
	p := sides[0]
	hosts := c.hosts[:2]
	if err := countProbes(ctx, hosts); err != nil {
		return "", err
	}
	rest, err := iperfWindow(ctx, p, hosts, func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(rotations) * every):
			return nil
		}
	})
	if err != nil {
		return "", fmt.Errorf("at rest: %w", err)
	}
	during, err := iperfWindow(ctx, p, hosts, func(ctx context.Context) error {
		profile(hosts, syscall.SIGUSR1)
		defer profile(hosts, syscall.SIGUSR2)
		for i := 0; i < rotations; i++ {
			next := time.Now().Add(every)
			h := c.hosts[i%2]
			if err := h.Client().Call(ctx, "VxSec.Rotate", struct{}{}, nil); err != nil {
				return err
			}
			// Asked every 250 ms, not lab.WaitKeyed's 20: each status
			// costs the daemons CPU that the emulated CPU also needs
			// for the stream (at 20 ms they took 61 % of a CPU).
			if err := lab.WaitKeyedEvery(ctx, hosts, 60*time.Second, 250*time.Millisecond); err != nil {
				return fmt.Errorf("rotation %d: %w", i+1, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Until(next)):
			}
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("during rotations: %w", err)
	}
	for _, x := range []struct {
		name string
		w    window
	}{{"at rest", rest}, {fmt.Sprintf("during %d rotations", rotations), during}} {
		xs := "none"
		if len(x.w.xfrm) > 0 {
			xs = strings.Join(x.w.xfrm, ", ")
		}
		fmt.Fprintf(w, "   %-20s %s over %d intervals (%s), %d segments retransmitted, daemons' CPU %.2f s (%.0f %% of a CPU), xfrm errors: %s\n",
			x.name, mbits(x.w.bps), x.w.intervals, ms(x.w.took), x.w.retrans, x.w.daemons.Seconds(), 100*x.w.daemons.Seconds()/x.w.took.Seconds(), xs)
		for _, sa := range x.w.sas {
			fmt.Fprintf(w, "   %-20s %s\n", "", sa)
		}
	}
	rec.Rotating = &benchdata.Rotating{Rotations: rotations, RestBps: rest.bps, DuringBps: during.bps,
		RestRetrans: rest.retrans, DuringRetrans: during.retrans,
		RestDaemonsS: rest.daemons.Seconds(), DuringDaemonsS: during.daemons.Seconds()}
	r := during.bps / rest.bps
	fmt.Fprintf(w, "   rotation throughput result: during/at rest %.3f (goal ≥ 0.9)\n", r)
	if r < 0.9 {
		missed = append(missed, fmt.Sprintf("throughput during rotations %.3f of at rest < 0.9", r))
	}
	return strings.Join(missed, ", "), nil
}

// saBytesLine is the bytes an SA carried, in `ip -s xfrm state`.
var saBytesLine = regexp.MustCompile(`(\d+)\(bytes\)`)

// saBytes reads the bytes an SA carried from `ip -s xfrm state`.
func saBytes(out string) int64 {
	m := saBytesLine.FindStringSubmatch(out)
	if m == nil {
		return 0
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

// intervalLine is iperf3's per-second report on the client, in Mbit/s
// (-f m); the closing sender and receiver lines are left out.
var intervalLine = regexp.MustCompile(`sec\s+[\d.]+\s+\w?Bytes\s+([\d.]+)\s+Mbits/sec\s+(\d+)`)

// window is what one TCP stream did while something ran: its mean bits/s
// over the 1 s intervals inside, the segments it retransmitted, and the
// CPU time the hosts' daemons used meanwhile.
type window struct {
	bps       float64
	retrans   int
	intervals int
	took      time.Duration
	daemons   time.Duration
	// xfrm are the kernel's xfrm error counters that grew on the hosts
	// over the window ("h1 XfrmInNoStates +3").
	xfrm []string
	// sas are the SAs that refused packets in the window (saWatch).
	sas []string
}

// saWatch polls every host's SAs (`ip -s xfrm state`) once a second and
// keeps, per SA, the highest replay and integrity-failure counts it read
// and when it first saw the SA. SAs come and go within a rotation
// window, and the kernel's totals (xfrm_stat) do not say which one
// refused packets: a new SA in its first packets, or an old one after
// the switch.
type saWatch struct {
	mu   sync.Mutex
	from time.Time
	sas  map[string]*saSeen // by "host spi"
	done chan struct{}
}

type saSeen struct {
	host, spi, pair  string
	first            time.Duration // since from
	replay, failed   int64
	replay0, failed0 int64 // at its first reading
	// before: the SA was there at the reading before the window, so the
	// window's counts are what grew after it (else they count from zero).
	before bool
}

// xfrmStats matches the per-SA counters in `ip -s xfrm state`.
var xfrmStats = regexp.MustCompile(`replay-window \d+ replay (\d+) failed (\d+)`)

// watchSAs reads every host's SAs once before it returns (what was
// there before the window), then once a second until ctx ends.
func watchSAs(ctx context.Context, hosts []*lab.Host) *saWatch {
	w := &saWatch{from: time.Now(), sas: map[string]*saSeen{}, done: make(chan struct{})}
	round := func(before bool) {
		for _, h := range hosts {
			if out, err := h.Exec(ctx, "ip", "-s", "xfrm", "state"); err == nil {
				w.read(h.Name, out, before)
			}
		}
	}
	round(true)
	go func() {
		defer close(w.done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			round(false)
		}
	}()
	return w
}

// read takes one host's listing: "src A dst B", then "proto esp spi
// 0x…", and, under "stats:", the counters.
func (w *saWatch) read(host, listing string, before bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var pair, spi string
	for _, line := range strings.Split(listing, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 4 && f[0] == "src" && f[2] == "dst":
			pair, spi = f[1]+"→"+f[3], ""
		case len(f) >= 4 && f[0] == "proto" && f[2] == "spi":
			spi = f[3]
		}
		m := xfrmStats.FindStringSubmatch(line)
		if m == nil || spi == "" {
			continue
		}
		replay, _ := strconv.ParseInt(m[1], 10, 64)
		failed, _ := strconv.ParseInt(m[2], 10, 64)
		k := host + " " + spi
		sa := w.sas[k]
		if sa == nil {
			sa = &saSeen{host: host, spi: spi, pair: pair, first: time.Since(w.from), replay0: replay, failed0: failed, before: before}
			w.sas[k] = sa
		}
		sa.replay, sa.failed = max(sa.replay, replay), max(sa.failed, failed)
	}
}

// refusals stops the watch and describes every SA whose counts grew
// while it watched (an SA not there before the window counts from zero).
func (w *saWatch) refusals(cancel func()) []string {
	cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, sa := range w.sas {
		r, f := sa.replay, sa.failed
		if sa.before {
			r, f = r-sa.replay0, f-sa.failed0
		}
		if r > 0 || f > 0 {
			out = append(out, fmt.Sprintf("%s SA %s (%s, first seen at +%.1f s): failed +%d, replay +%d", sa.host, sa.spi, sa.pair, sa.first.Seconds(), f, r))
		}
	}
	slices.Sort(out)
	return out
}

// errorCounts reads every host's /proc/net/xfrm_stat and its probe
// counter (probeTable; hosts without one are left out of probes), both in
// one command per host: read apart (a second apart under TCG), a probe
// arriving between the two reads was counted by the kernel in a window
// and not by the probe counter, and looked like a lost packet.
func errorCounts(ctx context.Context, hosts []*lab.Host) (xfrm, probes map[string]int64) {
	xfrm, probes = map[string]int64{}, map[string]int64{}
	for _, h := range hosts {
		raw, err := h.Exec(ctx, "sh", "-c", "cat /proc/net/xfrm_stat; echo "+probeMark+"; nft list chain inet "+probeTable+" in 2>/dev/null || true")
		if err != nil {
			continue
		}
		stat, rules, _ := strings.Cut(raw, probeMark)
		for _, line := range strings.Split(stat, "\n") {
			f := strings.Fields(line)
			if len(f) == 2 {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				xfrm[h.Name+" "+f[0]] = n
			}
		}
		if m := probeCountLine.FindStringSubmatch(rules); m != nil {
			probes[h.Name], _ = strconv.ParseInt(m[1], 10, 64)
		}
	}
	return xfrm, probes
}

// probeMark separates the two parts of errorCounts' output.
const probeMark = "--- vxbench probes ---"

// probeTable counts, on a lab host, the native ESP probes that arrive
// (espprobe.SPI): the kernel counts each as XfrmInNoStates too.
const probeTable = "vxbench"

// countProbes installs probeTable on every host (once; its counter keeps
// counting until the host goes).
func countProbes(ctx context.Context, hosts []*lab.Host) error {
	for _, h := range hosts {
		for _, args := range [][]string{
			{"nft", "add", "table", "inet", probeTable},
			{"nft", "add", "chain", "inet", probeTable, "in", "{ type filter hook input priority -400; }"},
			{"nft", "add", "rule", "inet", probeTable, "in", "meta", "l4proto", "esp", "@th,0,32", fmt.Sprint(espprobe.SPI), "counter"},
		} {
			if out, err := h.Exec(ctx, args...); err != nil {
				return fmt.Errorf("%s: %s: %w: %s", h.Name, strings.Join(args, " "), err, out)
			}
		}
	}
	return nil
}

// waitListening waits until a TCP socket listens on port in the namespace
// ns. An iperf3 server started on a loaded machine can take longer than
// any fixed pause to listen, and a client started before it fails to
// connect and reports nothing.
func waitListening(ctx context.Context, ns string, port int) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "ss", "-Hltn", fmt.Sprintf("sport = :%d", port)).Output()
		if err == nil && len(bytes.TrimSpace(out)) > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("iperf3's server in %s does not listen on port %d after 10 s (ss: %v)", ns, port, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// probeCountLine is the probe counter in `nft list chain`.
var probeCountLine = regexp.MustCompile(`counter packets (\d+)`)

// iperfWindow runs one TCP stream from p's client for as long as it takes,
// starts act after 3 s, and returns what the stream did in the 1 s
// intervals that ended inside act's run (at least two).
func iperfWindow(ctx context.Context, p pair, hosts []*lab.Host, act func(context.Context) error) (window, error) {
	srv := exec.CommandContext(ctx, "ip", "netns", "exec", p.server, "iperf3", "-s", "-1", "-p", "5202")
	if err := srv.Start(); err != nil {
		return window{}, err
	}
	defer func() {
		srv.Process.Kill()
		srv.Wait()
	}()
	if err := waitListening(ctx, p.server, 5202); err != nil {
		return window{}, err
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cli := exec.CommandContext(cctx, "ip", "netns", "exec", p.client, "iperf3", "-c", p.serverIP, "-p", "5202", "-t", "600", "-i", "1", "-f", "m", "--forceflush")
	out, err := cli.StdoutPipe()
	if err != nil {
		return window{}, err
	}
	var stderr bytes.Buffer
	cli.Stderr = &stderr
	if err := cli.Start(); err != nil {
		return window{}, err
	}
	type sample struct {
		at      time.Time
		bps     float64
		retrans int
	}
	var mu sync.Mutex
	var samples []sample
	var said []string // what else iperf3 printed, for the error
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
				r, _ := strconv.Atoi(m[2])
				mu.Lock()
				samples = append(samples, sample{time.Now(), v * 1e6, r})
				mu.Unlock()
			} else if line = strings.TrimSpace(line); line != "" {
				mu.Lock()
				said = append(said[max(0, len(said)-4):], line)
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
		return window{}, ctx.Err()
	case <-time.After(3 * time.Second):
	}
	cpu0 := sumDurations(cpuTimes(hosts))
	x0, p0 := errorCounts(ctx, hosts)
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watch := watchSAs(wctx, hosts)
	from := time.Now()
	actErr := act(ctx)
	to := time.Now()
	sas := watch.refusals(stopWatch)
	daemons := sumDurations(cpuTimes(hosts)) - cpu0
	var grew []string
	x1, p1 := errorCounts(ctx, hosts)
	for k, v := range x1 {
		if v > x0[k] {
			g := fmt.Sprintf("%s +%d", k, v-x0[k])
			// The ESP probes (SPI 1, which no SA has) are counted as
			// XfrmInNoStates by the kernel: told apart, so that what is
			// left is packets lost.
			if host, name, _ := strings.Cut(k, " "); name == "XfrmInNoStates" {
				if n, ok := p1[host]; ok {
					g += fmt.Sprintf(" (ESP probes +%d)", n-p0[host])
				}
			}
			grew = append(grew, g)
		}
	}
	slices.Sort(grew)
	// The interval that ends just after the window still holds a second
	// of it at most; wait for it, then stop.
	time.Sleep(1500 * time.Millisecond)
	stop()
	if actErr != nil {
		return window{}, actErr
	}
	mu.Lock()
	defer mu.Unlock()
	wd := window{took: to.Sub(from), daemons: daemons, xfrm: grew, sas: sas}
	var sum float64
	for _, s := range samples {
		// A line reports the second before it: it lies inside the
		// window if that second does.
		if s.at.Add(-time.Second).After(from) && !s.at.After(to.Add(200*time.Millisecond)) {
			sum += s.bps
			wd.retrans += s.retrans
			wd.intervals++
		}
	}
	if wd.intervals < 2 {
		return window{}, fmt.Errorf("only %d iperf3 intervals inside a window of %s (%d reported in all); iperf3's last other lines: %q, its stderr: %q",
			wd.intervals, ms(wd.took), len(samples), said, strings.TrimSpace(stderr.String()))
	}
	wd.bps = sum / float64(wd.intervals)
	return wd, nil
}
