package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vxsec/vxsec/announce"
	"github.com/vxsec/vxsec/gossip"
	"github.com/vxsec/vxsec/identity"
	"github.com/vxsec/vxsec/internal/benchdata"
	"github.com/vxsec/vxsec/lab"
)

// The simulation: the control plane of N hosts in this one process, to
// host counts the lab's namespaces (a whole daemon each) cannot reach on
// this machine. Each host is vxsec's real gossip layer (gossip.Start: serf
// and memberlist on vxsec's authenticated transport, the table pulls with
// their ephemeral exchange, tables signed and verified with real host
// certificates from one cluster CA) on its own loopback address; what the
// driver would make of a table (the kernel's entries) is left out, and
// counted instead. So it measures what grows with the cluster, gossip and
// pulls, and leaves out what does not (applying entries, about 0.5 ms of a
// daemon's CPU per remote endpoint change in the lab).

const (
	simVNI  = 1200
	simPort = 17946
)

// simAddr is host i's loopback address (127/8 is the loopback's: no
// device to configure).
func simAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, 77, byte(i / 250), byte(1 + i%250)})
}

// simLocal is a host's side: its table, grown one endpoint at a time.
type simLocal struct {
	mu      sync.Mutex
	t       announce.Table
	changed chan struct{}
}

func (l *simLocal) Snapshot() announce.Table {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.t
	t.Networks = slices.Clone(l.t.Networks)
	t.Endpoints = slices.Clone(l.t.Endpoints)
	return t
}

func (l *simLocal) Changed() <-chan struct{} { return l.changed }

func (l *simLocal) add(ep announce.Endpoint) {
	l.mu.Lock()
	l.t.Endpoints = append(l.t.Endpoints, ep)
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// simSink is what a host learned: the endpoints of every other host, and
// when it first held them all.
type simSink struct {
	mu     sync.Mutex
	eps    map[netip.Addr]int
	ver    map[netip.Addr]announce.Version
	total  int
	want   int
	tables int
	done   time.Time
}

func (s *simSink) SetRemote(t announce.Table) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.ver[t.Host]; ok && !v.Less(t.Version) {
		return // an older table after a newer one (Sink)
	}
	s.ver[t.Host] = t.Version
	n := 0
	for _, ep := range t.Endpoints {
		if ep.VNI == simVNI {
			n++
		}
	}
	s.total += n - s.eps[t.Host]
	s.eps[t.Host] = n
	s.tables++
	if s.want > 0 && s.total >= s.want && s.done.IsZero() {
		s.done = time.Now()
	}
}

func (s *simSink) DropRemote(host netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total -= s.eps[host]
	delete(s.eps, host)
	delete(s.ver, host)
}

func (s *simSink) SetMembers([]netip.Addr) {}

func (s *simSink) expect(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.want, s.done, s.tables = n, time.Time{}, 0
}

func (s *simSink) state() (done time.Time, tables int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done, s.tables
}

type simHost struct {
	addr  netip.Addr
	local *simLocal
	sink  *simSink
	c     *gossip.Cluster
}

// benchSim runs the simulation once per host count.
func benchSim(ctx context.Context, w io.Writer, o benchOpts, rec *benchdata.Sim) (string, error) {
	hosts := o.simHosts
	fmt.Fprintf(w, "\n== sim: the gossip layer of %v hosts in one process, %d endpoints per host\n", hosts, o.perHost)
	fmt.Fprintf(w, `   method: every host is vxsec's gossip layer (serf and memberlist on vxsec's transport, the
   cluster secret, table pulls with their ephemeral exchange, tables signed and verified with a
   host certificate each from one CA) on its own loopback address, all in this process; the kernel
   side is left out (a table installed is counted, not applied). Once every host sees every member
   alive, every host adds its endpoints, one every %s, each a new table version as CreateEndpoint
   makes it. Convergence: every host holds every other host's endpoints. CPU is this process's;
   bytes are what the loopback device carried meanwhile (nothing else runs on it in a benchmark).
`, o.simPace)
	rec.PerHost, rec.PaceS = o.perHost, o.simPace.Seconds()
	var missed []string
	for _, n := range hosts {
		r, err := simRun(ctx, w, n, o)
		if err != nil {
			return strings.Join(missed, "; "), fmt.Errorf("%d hosts: %w", n, err)
		}
		rec.Runs = append(rec.Runs, r)
	}
	fmt.Fprintf(w, "   hosts  converged  after the last endpoint  CPU s  tables/host  deltas/host  pulls/host  loopback MiB  idle CPUs\n")
	for _, r := range rec.Runs {
		fmt.Fprintf(w, "   %5d  %8.2fs  %22.2fs  %5.1f  %11.1f  %11.1f  %10.1f  %12.1f  %9.2f\n",
			r.Hosts, r.ConvergedS, r.AfterLastS, r.CPUS, r.TablesPerHost, r.DeltasPerHost, r.PullsPerHost, float64(r.LoopbackBytes)/(1<<20), r.IdleCPUs)
	}
	return "", nil
}

func simRun(ctx context.Context, w io.Writer, n int, o benchOpts) (benchdata.SimRun, error) {
	r := benchdata.SimRun{Hosts: n}
	dir, err := os.MkdirTemp("", "vxlab-sim-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	caDir := filepath.Join(dir, "ca")
	if err := identity.InitCA(caDir, "vxlab-sim", time.Hour); err != nil {
		return r, err
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	warnings := &countingHandler{counts: map[string]int{}}
	log := slog.New(warnings)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hs := make([]*simHost, n)
	start := time.Now()
	for i := range hs {
		addr := simAddr(i)
		idDir := filepath.Join(dir, addr.String())
		if _, err := identity.Issue(caDir, idDir, "sim-"+addr.String(), []netip.Addr{addr}, time.Hour); err != nil {
			return r, err
		}
		id, ver, err := identity.Load(idDir, addr)
		if err != nil {
			return r, err
		}
		h := &simHost{addr: addr, sink: &simSink{eps: map[netip.Addr]int{}, ver: map[netip.Addr]announce.Version{}},
			local: &simLocal{changed: make(chan struct{}, 1), t: announce.Table{Host: addr, Networks: []announce.Network{{
				ID: "sim", VNI: simVNI, Subnets: []netip.Prefix{netip.MustParsePrefix("10.44.0.0/16")}, Created: start.UTC()}}}}}
		cfg := gossip.Config{Addr: addr, Port: simPort, Secret: secret, Sink: h.sink, Local: h.local, Log: log,
			Signer: id, Verifier: ver, RequireSigned: true}
		if i > 0 {
			cfg.Seeds = []string{net.JoinHostPort(simAddr(0).String(), strconv.Itoa(simPort))}
		}
		if h.c, err = gossip.Start(ctx, cfg); err != nil {
			return r, fmt.Errorf("host %d: %w", i, err)
		}
		defer h.c.Close()
		hs[i] = h
	}
	if err := lab.WaitForEvery(ctx, 180*time.Second, 100*time.Millisecond, func() error {
		for _, h := range hs {
			if m := alive(h.c); m != n {
				return fmt.Errorf("%s sees %d of %d members alive", h.addr, m, n)
			}
		}
		return nil
	}); err != nil {
		return r, err
	}
	fmt.Fprintf(w, "   %d hosts: started and every member alive everywhere in %s\n", n, ms(time.Since(start)))

	cpu0, wall0 := processCPU(), time.Now()
	time.Sleep(3 * time.Second)
	r.IdleCPUs = (processCPU() - cpu0).Seconds() / time.Since(wall0).Seconds()

	want := (n - 1) * o.perHost
	for _, h := range hs {
		h.sink.expect(want)
	}
	pulls0, deltas0 := accepted(hs, "pull"), accepted(hs, "delta")
	lo0 := loopbackBytes()
	cpu0 = processCPU()
	t0 := time.Now()
	var wg sync.WaitGroup
	for i, h := range hs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < o.perHost; j++ {
				if j > 0 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(o.simPace):
					}
				}
				ip := netip.AddrFrom4([4]byte{10, 44, byte(i / 4), byte(10 + (i%4)*60 + j)})
				h.local.add(announce.Endpoint{VNI: simVNI, IP: ip, MAC: net.HardwareAddr{2, 0, 10, 44, byte(i), byte(j)}, Created: time.Now().UTC()})
			}
		}()
	}
	wg.Wait()
	lastAdd := time.Now()
	var converged time.Time
	lastTrace := time.Now()
	err = lab.WaitForEvery(ctx, 300*time.Second, 100*time.Millisecond, func() error {
		if os.Getenv("VXLAB_SIM_TRACE") != "" && time.Since(lastTrace) >= time.Second {
			lastTrace = time.Now()
			missing, hostsBehind := 0, 0
			for _, h := range hs {
				h.sink.mu.Lock()
				if h.sink.total < h.sink.want {
					hostsBehind++
					missing += h.sink.want - h.sink.total
				}
				h.sink.mu.Unlock()
			}
			fmt.Fprintf(w, "   trace %5.1fs: %d hosts behind, %d entries missing in all\n", time.Since(t0).Seconds(), hostsBehind, missing)
		}
		behind := 0
		for _, h := range hs {
			done, _ := h.sink.state()
			if done.IsZero() {
				behind++
				continue
			}
			if done.After(converged) {
				converged = done
			}
		}
		if behind > 0 {
			return fmt.Errorf("%d of %d hosts do not hold every entry yet", behind, n)
		}
		return nil
	})
	if err != nil {
		return r, err
	}
	r.CPUS = (processCPU() - cpu0).Seconds()
	r.LoopbackBytes = loopbackBytes() - lo0
	r.ConvergedS, r.AfterLastS = converged.Sub(t0).Seconds(), max(converged.Sub(lastAdd), 0).Seconds()
	tables := 0
	for _, h := range hs {
		_, t := h.sink.state()
		tables += t
	}
	r.TablesPerHost = float64(tables) / float64(n)
	r.PullsPerHost = float64(accepted(hs, "pull")-pulls0) / float64(n)
	r.DeltasPerHost = float64(accepted(hs, "delta")-deltas0) / float64(n)
	fmt.Fprintf(w, "   %d hosts: every host held all %d remote endpoints %s after the first was added (%s after the last); CPU %.1f s\n",
		n, want, ms(converged.Sub(t0)), ms(max(converged.Sub(lastAdd), 0)), r.CPUS)
	refused := map[string]uint64{}
	for _, h := range hs {
		for k, v := range h.c.Stats().Refused {
			refused[k] += v
		}
	}
	if len(refused) > 0 {
		fmt.Fprintf(w, "   %d hosts: refused (connections by the gossip port's limits; deltas with a gap, pulled instead), by reason: %v\n", n, refused)
	}
	if ws := warnings.top(5); ws != "" {
		fmt.Fprintf(w, "   %d hosts: warnings the hosts logged (the 5 most frequent): %s\n", n, ws)
	}
	return r, nil
}

func alive(c *gossip.Cluster) int {
	m := 0
	for _, mb := range c.Members() {
		if mb.Status == "alive" {
			m++
		}
	}
	return m
}

// accepted sums a count of the hosts' gossip: "pull" (pulls served),
// "delta" (tables installed from a delta).
func accepted(hs []*simHost, what string) uint64 {
	var n uint64
	for _, h := range hs {
		n += h.c.Stats().Accepted[what]
	}
	return n
}

// processCPU is the CPU time (user and system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loopbackBytes is what the loopback device has sent.
func loopbackBytes() int64 {
	b, err := os.ReadFile("/sys/class/net/lo/statistics/tx_bytes")
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}

// countingHandler counts the messages of warnings and errors the
// simulated hosts log, and drops everything.
type countingHandler struct {
	mu     sync.Mutex
	counts map[string]int
}

func (h *countingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.counts[r.Message]++
	h.mu.Unlock()
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

func (h *countingHandler) top(n int) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	type kv struct {
		msg string
		n   int
	}
	var all []kv
	for m, c := range h.counts {
		all = append(all, kv{m, c})
	}
	slices.SortFunc(all, func(a, b kv) int { return b.n - a.n })
	var out []string
	for _, x := range all[:min(n, len(all))] {
		out = append(out, fmt.Sprintf("%q ×%d", x.msg, x.n))
	}
	return strings.Join(out, ", ")
}
