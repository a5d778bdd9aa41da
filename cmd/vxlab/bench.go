package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/vxsec/vxsec/internal/benchdata"
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
	// results is where each benchmark writes its raw figures as JSON
	// (package benchdata); empty writes none.
	results string
	// hostsSweep, when set, runs the scale benchmark once per host count.
	hostsSweep []int
	// simHosts are the host counts of the simulation, simPace the time
	// between two endpoints of one host there.
	simHosts []int
	simPace  time.Duration
}

// benchLogLevel is the daemons' log level in benchmarks: the default, as
// a real host runs them (the lab's tests log at debug).
const benchLogLevel = "info"

func benchFlags(f *flag.FlagSet) *benchOpts {
	o := &benchOpts{}
	f.StringVar(&o.only, "only", "convergence,scale,sim,throughput", "which benchmarks to run, comma-separated (encryption needs an ESP kernel: the kernel lab)")
	f.IntVar(&o.endpoints, "endpoints", 100, "convergence: endpoints to time (3 hosts)")
	f.IntVar(&o.hosts, "hosts", 50, "scale: hosts")
	f.IntVar(&o.perHost, "per-host", 20, "scale: endpoints per host (at most 60)")
	f.IntVar(&o.runs, "runs", 5, "throughput: runs of each side, alternating")
	f.IntVar(&o.seconds, "seconds", 5, "throughput: seconds per iperf3 run")
	f.DurationVar(&o.pollPeriod, "poll", 50*time.Millisecond, "scale: how often every host's status is polled")
	f.BoolVar(&o.strict, "strict", false, "exit non-zero when a figure misses its goal (not only when a benchmark fails)")
	f.StringVar(&o.results, "results", "", "write each benchmark's raw figures as JSON into this directory (make bench: build/bench), for vxlab report")
	f.Func("hosts-sweep", "scale: run once per host count, comma-separated (10,50,100), each with -per-host endpoints per host, instead of once at -hosts", func(s string) error {
		hosts, err := parseSweep(s)
		o.hostsSweep = hosts
		return err
	})
	o.simHosts = []int{10, 50, 100, 200}
	f.Func("sim-hosts", "sim: the host counts to simulate, comma-separated (default 10,50,100,200)", func(s string) error {
		hosts, err := parseSweep(s)
		o.simHosts = hosts
		return err
	})
	f.DurationVar(&o.simPace, "sim-pace", 100*time.Millisecond, "sim: time between two endpoints of one host")
	return o
}

func runBench(ctx context.Context, w io.Writer, bin string, o benchOpts) error {
	fmt.Fprintf(w, "vxsec cluster benchmarks (vxlab bench), %s, %d CPUs, vxsec binary %s\n", time.Now().Format(time.RFC3339), runtime.NumCPU(), bin)
	version := "unknown"
	if v, err := exec.Command(bin, "version").Output(); err == nil {
		fmt.Fprintf(w, "vxsec version %s", v)
		version = strings.TrimSpace(string(v))
	}
	var missed, written []string
	for _, name := range strings.Split(o.only, ",") {
		var err error
		var goalMissed string
		// record is what the benchmark measured, for -results.
		var record any
		name = strings.TrimSpace(name)
		meta := benchdata.NewMeta(name, version)
		switch name {
		case benchdata.ConvergenceName:
			rec := &benchdata.Convergence{Meta: meta}
			goalMissed, err = benchConvergence(ctx, w, bin, o, rec)
			record = rec
		case benchdata.ScaleName:
			var rec benchdata.Scale
			rec, goalMissed, err = benchScaleRuns(ctx, w, bin, o)
			rec.Meta = meta
			record = rec
		case benchdata.ThroughputName:
			rec := &benchdata.Throughput{Meta: meta}
			goalMissed, err = benchThroughput(ctx, w, bin, o, rec)
			record = rec
		case benchdata.EncryptionName:
			rec := &benchdata.Encryption{Meta: meta}
			goalMissed, err = benchEncryption(ctx, w, bin, o, rec)
			record = rec
		case benchdata.SimName:
			rec := &benchdata.Sim{Meta: meta}
			goalMissed, err = benchSim(ctx, w, o, rec)
			record = rec
		case "":
			continue
		default:
			return fmt.Errorf("unknown benchmark %q (convergence, scale, throughput, encryption, sim)", name)
		}
		if err != nil {
			// A sweep's finished runs are kept: a long sweep that fails at
			// its largest host count still has its smaller ones to show.
			err = fmt.Errorf("%s: %w", name, err)
			if sc, ok := record.(benchdata.Scale); ok && len(sc.Runs) > 0 && o.results != "" {
				werr := benchdata.Write(o.results, name, sc)
				if werr == nil {
					fmt.Fprintf(w, "the %d finished scale runs: %s\n", len(sc.Runs), filepath.Join(o.results, name+".json"))
				}
				err = errors.Join(err, werr)
			}
			return err
		}
		if o.results != "" {
			if err := benchdata.Write(o.results, name, record); err != nil {
				return err
			}
			written = append(written, filepath.Join(o.results, name+".json"))
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
	if len(written) > 0 {
		fmt.Fprintf(w, "raw figures (vxlab report renders them): %s\n", strings.Join(written, " "))
	}
	return nil
}

// pair is a client and a server namespace for iperf3.
type pair struct {
	name           string
	client, server string // namespaces
	serverIP       string
	cleanup        func()
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
