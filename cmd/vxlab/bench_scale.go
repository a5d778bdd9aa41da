package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vxsec/vxsec/internal/benchdata"
	"github.com/vxsec/vxsec/lab"
)

// benchScale fills rec with the run's figures (benchScaleRuns).
func benchScale(ctx context.Context, w io.Writer, bin string, o benchOpts, rec *benchdata.ScaleRun) (string, error) {
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
	// What the cluster costs doing nothing (gossip, probes, timers): the
	// floor under the figures below. Measured before the networks are
	// made: each is a table version every other host pulls.
	idle0 := cpuTimes(c.hosts)
	idleStart := time.Now()
	time.Sleep(3 * time.Second)
	idleCPU, idleWall := sumDurations(cpuTimes(c.hosts))-sumDurations(idle0), time.Since(idleStart)
	fmt.Fprintf(w, "   idle cluster: the daemons used %.2f CPUs (%.1f ms per daemon per second)\n",
		idleCPU.Seconds()/idleWall.Seconds(), float64(idleCPU.Milliseconds())/float64(len(c.hosts))/idleWall.Seconds())
	net0 := cpuTimes(c.hosts)
	netStart := time.Now()
	for _, h := range c.hosts {
		if err := h.Client().CreateNetwork(ctx, "scale-"+h.Name, map[string]string{"vni": fmt.Sprint(vni)}, "10.44.0.0/16", ""); err != nil {
			return "", fmt.Errorf("%s: %w", h.Name, err)
		}
	}
	// The tables the networks made settle before the endpoints start.
	time.Sleep(3 * time.Second)
	netCPU := sumDurations(cpuTimes(c.hosts)) - sumDurations(net0)
	fmt.Fprintf(w, "   the network created on every host, then 3 s: the daemons used %.1f s of CPU in %s\n", netCPU.Seconds(), ms(time.Since(netStart)))
	var lastJoin time.Time
	var mu sync.Mutex
	var calls []time.Duration
	counters0, err := readCounters(ctx, c.hosts)
	if err != nil {
		return "", err
	}
	cpu0 := cpuTimes(c.hosts)
	self0 := selfCPU()
	profile(c.hosts, syscall.SIGUSR1)
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
	self1 := selfCPU()
	profile(c.hosts, syscall.SIGUSR2)
	counters1, err := readCounters(ctx, c.hosts)
	if err != nil {
		return "", err
	}
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
	fmt.Fprintf(w, "   the harness itself (API calls, polls) used %.1f s of CPU meanwhile\n", (self1 - self0).Seconds())
	var sumC hostCounters
	for i := range counters1 {
		d := counters1[i].sub(counters0[i])
		sumC.tables += d.tables
		sumC.passes += d.passes
		sumC.pullsServed += d.pullsServed
		sumC.sent += d.sent
	}
	n := float64(len(c.hosts))
	fmt.Fprintf(w, "   per host, from the first CreateEndpoint to convergence (counters): %.0f tables installed, %.0f passes over the kernel, %.0f pulls served, %.1f KiB sent on its link (%.1f MiB by all hosts)\n",
		sumC.tables/n, sumC.passes/n, sumC.pullsServed/n, sumC.sent/n/1024, sumC.sent/(1<<20))
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
	// The run's figures for -results, all at once here so that the
	// measurement above stays as it is.
	*rec = benchdata.ScaleRun{Hosts: o.hosts, PerHost: o.perHost, Endpoints: total,
		FormedS: formed.Seconds(), JoinedS: lastJoin.Sub(t0).Seconds(),
		ConvergedS: conv.Seconds(), AfterLastJoinS: max(0, t0.Add(conv).Sub(lastJoin)).Seconds(),
		CallsS: seconds(calls), CPUS: seconds(used),
		RSSIdle: benchdata.RSS{Median: idle.median, Max: idle.max, HWMMax: idle.hwmMax},
		RSSBusy: benchdata.RSS{Median: busy.median, Max: busy.max, HWMMax: busy.hwmMax}}
	for _, h := range c.hosts {
		rec.PerHostS = append(rec.PerHostS, at[h].Seconds())
	}
	wire := int64(sumC.sent)
	rec.WireBytes = &wire
	rec.IdleCPUs = idleCPU.Seconds() / idleWall.Seconds()
	rec.TablesPerHost, rec.PassesPerHost, rec.PullsPerHost = sumC.tables/n, sumC.passes/n, sumC.pullsServed/n
	var missed []string
	if conv >= 5*time.Second {
		missed = append(missed, fmt.Sprintf("convergence %s ≥ 5 s", ms(conv)))
	}
	if busy.max >= 40<<20 {
		missed = append(missed, fmt.Sprintf("RSS %s ≥ 40 MiB", mib(busy.max)))
	}
	return strings.Join(missed, ", "), nil
}

// profile starts (SIGUSR1) or ends (SIGUSR2) every daemon's CPU profile
// when the daemons are a test build told where to write them
// ($VXSEC_TEST_CPUPROFILE, cmd/vxsec/profile_testhooks.go): the window
// profiled is the one measured. A release daemon is never signalled (the
// signals would end it).
func profile(hosts []*lab.Host, sig syscall.Signal) {
	if os.Getenv("VXSEC_TEST_CPUPROFILE") == "" {
		return
	}
	for _, h := range hosts {
		if pid := h.Pid(); pid != 0 {
			syscall.Kill(pid, sig)
		}
	}
}

func sumDurations(ds []time.Duration) time.Duration {
	var s time.Duration
	for _, d := range ds {
		s += d
	}
	return s
}

type rss struct{ median, max, hwmMax int64 }

// selfCPU is the CPU time this process has used: the harness shares the
// machine with the daemons it measures.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

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

func randomID() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}
