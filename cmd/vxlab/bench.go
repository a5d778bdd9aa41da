package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vxsec/vxsec/lab"
)

type benchOpts struct {
	only       string
	endpoints  int
	hosts      int
	perHost    int
	runs       int
	seconds    int
	strict     bool
	pollPeriod time.Duration
}

// benchLogLevel is the daemons' log level in benchmarks: the default, as
// a real host runs them (the lab's tests log at debug).
const benchLogLevel = "info"

func benchFlags(f *flag.FlagSet) *benchOpts {
	o := &benchOpts{}
	f.StringVar(&o.only, "only", "convergence,scale,throughput", "which benchmarks to run, comma-separated (encryption needs an ESP kernel: the kernel lab)")
	f.IntVar(&o.endpoints, "endpoints", 100, "convergence: endpoints to time (3 hosts)")
	f.IntVar(&o.hosts, "hosts", 50, "scale: hosts")
	f.IntVar(&o.perHost, "per-host", 20, "scale: endpoints per host (at most 60)")
	f.IntVar(&o.runs, "runs", 5, "throughput: runs of each side, alternating")
	f.IntVar(&o.seconds, "seconds", 5, "throughput: seconds per iperf3 run")
	f.DurationVar(&o.pollPeriod, "poll", 50*time.Millisecond, "scale: how often every host's status is polled")
	f.BoolVar(&o.strict, "strict", false, "exit non-zero when a figure misses its goal (not only when a benchmark fails)")
	return o
}

func runBench(ctx context.Context, w io.Writer, bin string, o benchOpts) error {
	fmt.Fprintf(w, "vxsec cluster benchmarks (vxlab bench), %s, %d CPUs, vxsec binary %s\n", time.Now().Format(time.RFC3339), runtime.NumCPU(), bin)
	if v, err := exec.Command(bin, "version").Output(); err == nil {
		fmt.Fprintf(w, "vxsec version %s", v)
	}
	var missed []string
	for _, name := range strings.Split(o.only, ",") {
		var err error
		var goalMissed string
		switch strings.TrimSpace(name) {
		case "convergence":
			goalMissed, err = benchConvergence(ctx, w, bin, o)
		case "scale":
			goalMissed, err = benchScale(ctx, w, bin, o)
		case "throughput":
			goalMissed, err = benchThroughput(ctx, w, bin, o)
		case "encryption":
			goalMissed, err = benchEncryption(ctx, w, bin, o)
		case "":
			continue
		default:
			return fmt.Errorf("unknown benchmark %q (convergence, scale, throughput, encryption)", name)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if goalMissed != "" {
			missed = append(missed, name+": "+goalMissed)
		}
	}
	fmt.Fprintln(w)
	if len(missed) > 0 {
		fmt.Fprintf(w, "GOALS MISSED:\n  %s\n", strings.Join(missed, "\n  "))
		if o.strict {
			return fmt.Errorf("%d goal(s) missed", len(missed))
		}
	} else {
		fmt.Fprintln(w, "every goal met")
	}
	return nil
}

// ---------------------------------------------------------------- convergence

var pingReply = regexp.MustCompile(`^\[(\d+)\.(\d+)\] \d+ bytes from`)

func benchConvergence(ctx context.Context, w io.Writer, bin string, o benchOpts) (string, error) {
	const vni = 1100
	fmt.Fprintf(w, "\n== convergence: Join on host A → first reply from a container on host B (3 hosts, %d endpoints)\n", o.endpoints)
	fmt.Fprintln(w, `   method: a 3-host cluster, one network (same vni on each host); one prober container per host
   whose ARP retransmit time is 10 ms (so that a probe begun before the entry exists is not held
   up by the kernel's 1 s default). For each new endpoint i: host A = h(i mod 3), B = the next host;
   B's prober starts "ping -D -i 0.01" to the new address (stopped at its first reply), then A gets CreateEndpoint, Join
   (clock starts when Join is sent), and the device is moved into a fresh container namespace,
   renamed, addressed and brought up as dockerd does. The figure is the timestamp of the first
   echo reply minus the Join time: it includes dockerd-style plumbing after Join, cluster
   propagation, B's FDB/neighbour install, ARP through B's proxy and A's reply.`)
	c, err := newCluster(ctx, bin, 3, benchLogLevel)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if _, err := c.waitAlive(ctx, 20*time.Second); err != nil {
		return "", fmt.Errorf("cluster did not form: %w\n%s", err, c.logTails(20))
	}
	ids := map[*lab.Host]string{}
	probers := map[*lab.Host]*lab.Container{}
	for i, h := range c.hosts {
		ids[h] = "conv-" + h.Name
		if err := h.Client().CreateNetwork(ctx, ids[h], map[string]string{"vni": fmt.Sprint(vni)}, "10.43.0.0/16", ""); err != nil {
			return "", err
		}
		p, err := h.Run(ctx, "probe", ids[h], fmt.Sprintf("10.43.0.%d/16", i+1))
		if err != nil {
			return "", err
		}
		if _, err := p.Exec(ctx, "sysctl", "-qw", "net.ipv4.neigh."+p.Ifname+".retrans_time_ms=10"); err != nil {
			return "", err
		}
		probers[h] = p
	}
	if _, err := waitRemote(ctx, c.hosts, vni, func(*lab.Host) int { return 2 }, time.Now(), 20*time.Millisecond, 10*time.Second); err != nil {
		return "", fmt.Errorf("probers did not converge: %w", err)
	}
	var samples, plumbing []time.Duration
	for i := 0; i < o.endpoints; i++ {
		a := c.hosts[i%3]
		b := c.hosts[(i+1)%3]
		ip := fmt.Sprintf("10.43.%d.%d", 1+i/250, 1+i%250)
		probe, err := startProbe(ctx, probers[b].NS, ip)
		if err != nil {
			return "", err
		}
		time.Sleep(50 * time.Millisecond) // let the probe start first
		ct, err := a.Run(ctx, fmt.Sprintf("e%d", i), ids[a], ip+"/16")
		if err != nil {
			probe.stop()
			return "", err
		}
		plumbing = append(plumbing, time.Since(ct.JoinedAt))
		replyAt, out := probe.wait()
		if replyAt.IsZero() {
			return "", fmt.Errorf("endpoint %d (%s on %s): no reply from %s's prober within 10 s:\n%s\n%s", i, ip, a.Name, b.Name, out, c.logTails(20))
		}
		samples = append(samples, replyAt.Sub(ct.JoinedAt))
	}
	s := sortedCopy(samples)
	p50, p90, p99 := percentile(s, 50), percentile(s, 90), percentile(s, 99)
	fmt.Fprintf(w, "   result: n=%d  min %s  p50 %s  p90 %s  p99 %s  max %s   (goal: p99 < 1 s)\n",
		len(s), ms(s[0]), ms(p50), ms(p90), ms(p99), ms(s[len(s)-1]))
	pl := sortedCopy(plumbing)
	fmt.Fprintf(w, "   of which Join + container plumbing alone (Join sent → device up in the container): p50 %s, p99 %s\n", ms(percentile(pl, 50)), ms(percentile(pl, 99)))
	if p99 >= time.Second {
		return fmt.Sprintf("p99 %s ≥ 1 s", ms(p99)), nil
	}
	return "", nil
}

// probe is a ping running until its first reply (or 10 s).
type probe struct {
	cmd  *exec.Cmd
	done chan struct{}
	at   time.Time
	out  strings.Builder
}

// startProbe pings ip from namespace ns every 10 ms with kernel timestamps
// (-D); ping's own -c would also count "unreachable" errors, so the probe
// reads the output and stops ping itself at the first reply.
func startProbe(ctx context.Context, ns, ip string) (*probe, error) {
	p := &probe{done: make(chan struct{})}
	// Neither -c (errors count towards it) nor -w (ping ends at the first
	// error when it is given): the probe's own 10 s limit ends it.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	p.cmd = exec.CommandContext(ctx, "ip", "netns", "exec", ns, "ping", "-n", "-D", "-i", "0.01", ip)
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		cancel()
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		cancel()
		return nil, err
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			p.out.WriteString(line + "\n")
			if m := pingReply.FindStringSubmatch(line); m != nil && p.at.IsZero() {
				sec, _ := strconv.ParseInt(m[1], 10, 64)
				frac := (m[2] + "000000000")[:9]
				nsec, _ := strconv.ParseInt(frac, 10, 64)
				p.at = time.Unix(sec, nsec)
				p.cmd.Process.Kill()
			}
		}
		p.cmd.Wait()
		cancel()
	}()
	return p, nil
}

// wait returns the time of the first reply (zero if none) and the output.
func (p *probe) wait() (time.Time, string) {
	<-p.done
	return p.at, p.out.String()
}

func (p *probe) stop() {
	p.cmd.Process.Kill()
	<-p.done
}

// ---------------------------------------------------------------- scale

func benchScale(ctx context.Context, w io.Writer, bin string, o benchOpts) (string, error) {
	const vni = 1200
	total := o.hosts * o.perHost
	fmt.Fprintf(w, "\n== scale: %d hosts, %d endpoints (%d per host)\n", o.hosts, total, o.perHost)
	fmt.Fprintf(w, `   method: %d hosts start (8 at a time; VXSEC_JOIN = h1); once every host sees every member alive,
   each host creates the network (same vni) and then every host at once makes its %d endpoints
   (CreateEndpoint + Join, no container namespace). Every host's VxSec.Status is polled every %v
   until it reports %d remote endpoints. Convergence is measured from the first CreateEndpoint
   and from the last Join's answer; RSS is VmRSS (and the peak, VmHWM) of every daemon process
   read from /proc/<pid>/status afterwards.
`, o.hosts, o.perHost, o.pollPeriod, total-o.perHost)
	start := time.Now()
	c, err := newCluster(ctx, bin, o.hosts, benchLogLevel)
	if err != nil {
		return "", err
	}
	defer c.Close()
	fmt.Fprintf(w, "   %d daemons started in %s\n", o.hosts, ms(time.Since(start)))
	formed, err := c.waitAlive(ctx, 60*time.Second)
	if err != nil {
		return "", fmt.Errorf("cluster did not form: %w", err)
	}
	fmt.Fprintf(w, "   every host saw all %d members alive %s later\n", o.hosts, ms(formed))
	idle := rssStats(c.hosts)
	for _, h := range c.hosts {
		if err := h.Client().CreateNetwork(ctx, "scale-"+h.Name, map[string]string{"vni": fmt.Sprint(vni)}, "10.44.0.0/16", ""); err != nil {
			return "", fmt.Errorf("%s: %w", h.Name, err)
		}
	}
	var lastJoin time.Time
	var mu sync.Mutex
	var calls []time.Duration
	cpu0 := cpuTimes(c.hosts)
	t0 := time.Now()
	err = eachHost(c.hosts, len(c.hosts), func(h *lab.Host) error {
		cl := h.Client()
		idx := slices.Index(c.hosts, h)
		if o.perHost > 60 {
			return fmt.Errorf("at most 60 endpoints per host")
		}
		for j := 0; j < o.perHost; j++ {
			ep := randomID() // Docker's endpoint IDs are random hex
			addr := fmt.Sprintf("10.44.%d.%d/16", idx/4, 10+(idx%4)*60+j)
			start := time.Now()
			if _, err := cl.CreateEndpoint(ctx, "scale-"+h.Name, ep, addr, ""); err != nil {
				return err
			}
			if _, err := cl.Join(ctx, "scale-"+h.Name, ep, "/var/run/netns/none"); err != nil {
				return err
			}
			mu.Lock()
			calls = append(calls, time.Since(start))
			mu.Unlock()
		}
		mu.Lock()
		if now := time.Now(); now.After(lastJoin) {
			lastJoin = now
		}
		mu.Unlock()
		return nil
	})
	if err != nil {
		return "", err
	}
	at, err := waitRemote(ctx, c.hosts, vni, func(*lab.Host) int { return total - o.perHost }, t0, o.pollPeriod, 60*time.Second)
	if err != nil {
		return "", fmt.Errorf("not every host got every entry: %w", err)
	}
	cpu1 := cpuTimes(c.hosts)
	var all []time.Duration
	for _, d := range at {
		all = append(all, d)
	}
	s := sortedCopy(all)
	conv := s[len(s)-1]
	fmt.Fprintf(w, "   endpoints created and joined in %s (from the first CreateEndpoint to the last Join's answer)\n", ms(lastJoin.Sub(t0)))
	fmt.Fprintf(w, "   every host had all %d remote entries: %s after the first CreateEndpoint, %s after the last Join\n",
		total-o.perHost, ms(conv), ms(max(0, t0.Add(conv).Sub(lastJoin))))
	fmt.Fprintf(w, "   per host (from the first CreateEndpoint): p50 %s, max %s\n", ms(percentile(s, 50)), ms(conv))
	cs := sortedCopy(calls)
	fmt.Fprintf(w, "   CreateEndpoint+Join latency meanwhile: p50 %s, p99 %s, max %s\n", ms(percentile(cs, 50)), ms(percentile(cs, 99)), ms(cs[len(cs)-1]))
	var used []time.Duration
	var sum time.Duration
	for i := range cpu1 {
		used = append(used, cpu1[i]-cpu0[i])
		sum += cpu1[i] - cpu0[i]
	}
	us := sortedCopy(used)
	fmt.Fprintf(w, "   daemon CPU time from the first CreateEndpoint to convergence: %.1f s in all (%.1f CPUs busy on average), per daemon p50 %s, max %s\n",
		sum.Seconds(), sum.Seconds()/t0.Add(conv).Sub(t0).Seconds(), ms(percentile(us, 50)), ms(us[len(us)-1]))
	// The kernel agrees with the status on a few hosts.
	for _, h := range []*lab.Host{c.hosts[0], c.hosts[len(c.hosts)/2], c.hosts[len(c.hosts)-1]} {
		fdb, err := h.FDB(ctx, vni)
		if err != nil {
			return "", err
		}
		neigh, err := h.Neigh(ctx, vni)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(w, "   %s's kernel: %d FDB entries, %d neighbour entries on vxsec-%d\n", h.Name, len(fdb), len(neigh), vni)
		if len(fdb) != total-o.perHost || len(neigh) != total-o.perHost {
			return "", fmt.Errorf("%s's kernel holds %d FDB / %d neighbour entries, want %d", h.Name, len(fdb), len(neigh), total-o.perHost)
		}
	}
	busy := rssStats(c.hosts)
	fmt.Fprintf(w, "   RSS per daemon, idle cluster:      median %s, max %s (peak VmHWM max %s)\n", mib(idle.median), mib(idle.max), mib(idle.hwmMax))
	fmt.Fprintf(w, "   RSS per daemon, %d endpoints:    median %s, max %s (peak VmHWM max %s)   (goal: < 40 MiB)\n", total, mib(busy.median), mib(busy.max), mib(busy.hwmMax))
	fmt.Fprintf(w, "   result: convergence %s (goal < 5 s), RSS max %s (goal < 40 MiB)\n", ms(conv), mib(busy.max))
	var missed []string
	if conv >= 5*time.Second {
		missed = append(missed, fmt.Sprintf("convergence %s ≥ 5 s", ms(conv)))
	}
	if busy.max >= 40<<20 {
		missed = append(missed, fmt.Sprintf("RSS %s ≥ 40 MiB", mib(busy.max)))
	}
	return strings.Join(missed, ", "), nil
}

type rss struct{ median, max, hwmMax int64 }

func cpuTimes(hosts []*lab.Host) []time.Duration {
	out := make([]time.Duration, len(hosts))
	for i, h := range hosts {
		out[i], _ = h.CPUTime()
	}
	return out
}

func rssStats(hosts []*lab.Host) rss {
	var rs []int64
	var r rss
	for _, h := range hosts {
		v, hwm, err := h.RSS()
		if err != nil {
			continue
		}
		rs = append(rs, v)
		r.max = max(r.max, v)
		r.hwmMax = max(r.hwmMax, hwm)
	}
	slices.Sort(rs)
	if len(rs) > 0 {
		r.median = rs[len(rs)/2]
	}
	return r
}

// ---------------------------------------------------------------- throughput

// pair is a client and a server namespace for iperf3.
type pair struct {
	name           string
	client, server string // namespaces
	serverIP       string
	cleanup        func()
}

func benchThroughput(ctx context.Context, w io.Writer, bin string, o benchOpts) (string, error) {
	const vni, baseVNI, basePort = 1300, 1301, 4803
	fmt.Fprintf(w, "\n== data path: TCP throughput container → container across 2 hosts, vxsec vs a hand-built VXLAN\n")
	fmt.Fprintf(w, `   method: 2 hosts of one cluster. vxsec side: a network (vni %d), one container per host made
   through the remote API. Hand-built side, between the same two host namespaces: a VXLAN device
   made with ip link (id %d, dstport %d, nolearning, proxy, the same MTU as vxsec's device), a
   static FDB entry and a permanent neighbour entry for the peer container, and a bridge-mode
   macvlan on it moved into a container namespace, as vxsec does. iperf3 -t %d -O 1 (one TCP
   stream), client on host 1, server on host 2; %d runs per side, alternating (ABBA order).
   The figure is the receiver's bits/s; the ratio is median(vxsec) / median(hand-built).
`, vni, baseVNI, basePort, o.seconds, o.runs)
	if _, err := exec.LookPath("iperf3"); err != nil {
		return "", fmt.Errorf("iperf3 is missing: apt-get install iperf3")
	}
	c, err := newCluster(ctx, bin, 2, benchLogLevel)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if _, err := c.waitAlive(ctx, 20*time.Second); err != nil {
		return "", fmt.Errorf("cluster did not form: %w", err)
	}
	h1, h2 := c.hosts[0], c.hosts[1]
	for _, h := range c.hosts {
		if err := h.Client().CreateNetwork(ctx, "tp-"+h.Name, map[string]string{"vni": fmt.Sprint(vni)}, "10.45.0.0/24", ""); err != nil {
			return "", err
		}
	}
	t1, err := h1.Run(ctx, "t1", "tp-h1", "10.45.0.1/24")
	if err != nil {
		return "", err
	}
	t2, err := h2.Run(ctx, "t2", "tp-h2", "10.45.0.2/24")
	if err != nil {
		return "", err
	}
	if _, err := waitRemote(ctx, c.hosts, vni, func(*lab.Host) int { return 1 }, time.Now(), 20*time.Millisecond, 10*time.Second); err != nil {
		return "", err
	}
	if r, err := t1.Ping(ctx, t2.IP(), "-c", "1", "-w", "3"); err != nil || r.Received == 0 {
		return "", fmt.Errorf("vxsec containers do not reach each other: %v %+v", err, r)
	}

	// The hand-built twin.
	mtu, err := h1.Exec(ctx, "cat", fmt.Sprintf("/sys/class/net/vxsec-%d/mtu", vni))
	if err != nil {
		return "", err
	}
	mtu = strings.TrimSpace(mtu)
	base := []struct {
		h        *lab.Host
		ns, ip   string
		mac      string
		peerHost *lab.Host
	}{
		{h1, c.Name() + "-hb1", "10.46.0.1", "02:00:0a:2e:00:01", h2},
		{h2, c.Name() + "-hb2", "10.46.0.2", "02:00:0a:2e:00:02", h1},
	}
	defer func() {
		for _, b := range base {
			sh(context.Background(), "ip", "netns", "del", b.ns)
		}
	}()
	for i, b := range base {
		peer := base[1-i]
		for _, args := range [][]string{
			{"ip", "-n", b.h.NS, "link", "add", "hbx", "mtu", mtu, "type", "vxlan", "id", fmt.Sprint(baseVNI), "dstport", fmt.Sprint(basePort),
				"local", b.h.Addr.String(), "nolearning", "proxy"},
			{"ip", "-n", b.h.NS, "link", "set", "hbx", "addrgenmode", "none"},
			{"ip", "-n", b.h.NS, "link", "set", "hbx", "up"},
			{"bridge", "-n", b.h.NS, "fdb", "append", peer.mac, "dev", "hbx", "dst", peer.h.Addr.String(), "self", "permanent"},
			{"ip", "-n", b.h.NS, "neigh", "replace", peer.ip, "lladdr", peer.mac, "dev", "hbx", "nud", "permanent"},
			{"ip", "netns", "add", b.ns},
			{"ip", "-n", b.h.NS, "link", "add", "hbm", "link", "hbx", "mtu", mtu, "address", b.mac, "type", "macvlan", "mode", "bridge"},
			{"ip", "-n", b.h.NS, "link", "set", "hbm", "netns", b.ns},
			{"ip", "-n", b.ns, "link", "set", "hbm", "name", "eth0"},
			{"ip", "-n", b.ns, "addr", "add", b.ip + "/24", "dev", "eth0"},
			{"ip", "-n", b.ns, "link", "set", "eth0", "up"},
			{"ip", "-n", b.ns, "link", "set", "lo", "up"},
		} {
			if _, err := sh(ctx, args...); err != nil {
				return "", err
			}
		}
	}
	if out, err := sh(ctx, "ip", "netns", "exec", base[0].ns, "ping", "-c", "1", "-w", "3", base[1].ip); err != nil {
		return "", fmt.Errorf("hand-built VXLAN does not work: %w\n%s", err, out)
	}
	dv, _ := h1.Exec(ctx, "ip", "-d", "link", "show", fmt.Sprintf("vxsec-%d", vni))
	db, _ := h1.Exec(ctx, "ip", "-d", "link", "show", "hbx")
	fmt.Fprintf(w, "   vxsec's device on h1:\n%s\n   hand-built device on h1:\n%s\n", indent(dv, "     "), indent(db, "     "))

	sides := []pair{
		{name: "vxsec", client: t1.NS, server: t2.NS, serverIP: t2.IP()},
		{name: "hand-built", client: base[0].ns, server: base[1].ns, serverIP: base[1].ip},
	}
	results, err := iperfABBA(ctx, w, sides, o, gbits)
	if err != nil {
		return "", err
	}
	mv, mb := median(results["vxsec"]), median(results["hand-built"])
	ratio := mv / mb
	fmt.Fprintf(w, "   result: vxsec median %.2f Gbit/s, hand-built median %.2f Gbit/s, ratio %.3f (goal ≥ 0.95)\n", mv/1e9, mb/1e9, ratio)
	if ratio < 0.95 {
		return fmt.Sprintf("ratio %.3f < 0.95", ratio), nil
	}
	return "", nil
}

func gbits(bps float64) string { return fmt.Sprintf("%6.2f Gbit/s", bps/1e9) }
func mbits(bps float64) string { return fmt.Sprintf("%8.1f Mbit/s", bps/1e6) }

// iperfABBA measures both sides o.runs times each, alternating in ABBA
// order so that drift over the run weighs on both alike, and returns the
// receiver's bits/s of every run by side name.
func iperfABBA(ctx context.Context, w io.Writer, sides []pair, o benchOpts, format func(float64) string) (map[string][]float64, error) {
	results := map[string][]float64{}
	for r := 0; r < o.runs; r++ {
		order := []int{0, 1}
		if r%2 == 1 {
			order = []int{1, 0}
		}
		for _, i := range order {
			bps, err := iperf(ctx, sides[i], o.seconds)
			if err != nil {
				return nil, fmt.Errorf("%s run %d: %w", sides[i].name, r+1, err)
			}
			results[sides[i].name] = append(results[sides[i].name], bps)
			fmt.Fprintf(w, "   run %d %-10s %s\n", r+1, sides[i].name, format(bps))
		}
	}
	return results, nil
}

// iperf runs one iperf3 measurement and returns the receiver's bits/s.
func iperf(ctx context.Context, p pair, seconds int) (float64, error) {
	srv := exec.CommandContext(ctx, "ip", "netns", "exec", p.server, "iperf3", "-s", "-1", "-p", "5201")
	if err := srv.Start(); err != nil {
		return 0, err
	}
	defer func() {
		srv.Process.Kill()
		srv.Wait()
	}()
	var out []byte
	var err error
	for try := 0; try < 50; try++ {
		out, err = exec.CommandContext(ctx, "ip", "netns", "exec", p.client, "iperf3", "-c", p.serverIP, "-p", "5201",
			"-t", fmt.Sprint(seconds), "-O", "1", "-J").Output()
		if !strings.Contains(string(out), "unable to connect") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return 0, fmt.Errorf("iperf3: %w: %s", err, out)
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, fmt.Errorf("iperf3 output: %w", err)
	}
	if r.Error != "" {
		return 0, fmt.Errorf("iperf3: %s", r.Error)
	}
	return r.End.SumReceived.BitsPerSecond, nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func randomID() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}
