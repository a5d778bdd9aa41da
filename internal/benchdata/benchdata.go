package benchdata

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Names of the benchmarks `vxlab bench` runs; each writes <name>.json.
const (
	ConvergenceName = "convergence"
	ScaleName       = "scale"
	ThroughputName  = "throughput"
	EncryptionName  = "encryption"
	SimName         = "sim"
)

// Meta says what measured a result, when and where.
type Meta struct {
	Benchmark    string    `json:"benchmark"`
	Date         time.Time `json:"date"`
	VxsecVersion string    `json:"vxsec_version"`
	Machine      Machine   `json:"machine"`
}

// Machine is the machine a benchmark ran on.
type Machine struct {
	CPUs     int    `json:"cpus"`
	CPUModel string `json:"cpu_model,omitempty"`
	Kernel   string `json:"kernel,omitempty"`
}

// ThisMachine describes the machine the caller runs on; what it cannot
// read stays empty, since a report without the CPU's model is still a report.
func ThisMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// NewMeta is the Meta of a benchmark measured now on this machine.
func NewMeta(benchmark, vxsecVersion string) Meta {
	return Meta{Benchmark: benchmark, Date: time.Now().UTC(), VxsecVersion: vxsecVersion, Machine: ThisMachine()}
}

// Convergence is Join on one host to the first reply from a container on
// another, for every endpoint timed.
type Convergence struct {
	Meta
	Hosts     int `json:"hosts"`
	Endpoints int `json:"endpoints"`
	// JoinToReplyS is every sample, in the order measured.
	JoinToReplyS []float64 `json:"join_to_reply_s"`
	// PlumbingS is the part of each sample spent in Join and the
	// container's plumbing (Join sent → device up in the container).
	PlumbingS []float64 `json:"plumbing_s"`
}

// Sim is the simulation of the gossip layer at several host counts, in
// one process (vxlab bench -only sim).
type Sim struct {
	Meta
	PerHost int      `json:"per_host"`
	PaceS   float64  `json:"pace_s"`
	Runs    []SimRun `json:"runs"`
}

// SimRun is one simulated cluster of Hosts hosts.
type SimRun struct {
	Hosts int `json:"hosts"`
	// ConvergedS: from the first endpoint added to every host holding
	// every other host's; AfterLastS the same from the last one added.
	ConvergedS float64 `json:"converged_s"`
	AfterLastS float64 `json:"after_last_s"`
	// CPUS is the process's CPU time over that window; IdleCPUs what the
	// cluster cost before any endpoint, in CPUs.
	CPUS     float64 `json:"cpu_s"`
	IdleCPUs float64 `json:"idle_cpus"`
	// TablesPerHost and PullsPerHost: tables installed and pulls served,
	// per host, over the window; LoopbackBytes what the loopback carried.
	TablesPerHost float64 `json:"tables_per_host"`
	PullsPerHost  float64 `json:"pulls_per_host"`
	LoopbackBytes int64   `json:"loopback_bytes"`
	// DeltasPerHost: of the tables installed, those made from a delta
	// rather than pulled.
	DeltasPerHost float64 `json:"deltas_per_host,omitempty"`
}

// Scale is one or more runs of the scale benchmark (several with a sweep of
// host counts).
type Scale struct {
	Meta
	PollS float64    `json:"poll_s"`
	Runs  []ScaleRun `json:"runs"`
}

// ScaleRun is one cluster of Hosts hosts making PerHost endpoints each.
type ScaleRun struct {
	Hosts     int `json:"hosts"`
	PerHost   int `json:"per_host"`
	Endpoints int `json:"endpoints"`
	// FormedS: from the daemons' start to every host seeing every member.
	FormedS float64 `json:"formed_s"`
	// JoinedS: from the first CreateEndpoint to the last Join's answer.
	JoinedS float64 `json:"joined_s"`
	// PerHostS: when each host had every remote entry, from the first
	// CreateEndpoint, in host order (h1, h2, …).
	PerHostS []float64 `json:"per_host_s"`
	// ConvergedS is the slowest host's; AfterLastJoinS the same from the
	// last Join's answer (0 if every host had everything before it).
	ConvergedS     float64 `json:"converged_s"`
	AfterLastJoinS float64 `json:"after_last_join_s"`
	// CallsS: every CreateEndpoint+Join pair's latency.
	CallsS []float64 `json:"calls_s"`
	// CPUS: each daemon's CPU time from the first CreateEndpoint to
	// convergence, in host order.
	CPUS []float64 `json:"cpu_s"`
	// WireBytes is every byte the hosts' underlay links sent over the same
	// window; null in results from before it was measured.
	WireBytes *int64 `json:"wire_bytes"`
	// IdleCPUs is what the idle cluster's daemons used, in CPUs, before
	// any endpoint: the floor under CPUS.
	IdleCPUs float64 `json:"idle_cpus"`
	// Per host over the window, from the daemons' metrics: tables
	// installed, passes over the kernel, table pulls served.
	TablesPerHost float64 `json:"tables_per_host"`
	PassesPerHost float64 `json:"passes_per_host"`
	PullsPerHost  float64 `json:"pulls_per_host"`
	RSSIdle       RSS     `json:"rss_idle"`
	RSSBusy       RSS     `json:"rss_busy"`
}

// RSS is the daemons' resident memory, in bytes.
type RSS struct {
	Median int64 `json:"median"`
	Max    int64 `json:"max"`
	HWMMax int64 `json:"hwm_max"`
}

// Side is one side of a throughput comparison: the receiver's bits/s of
// every run, in run order.
type Side struct {
	Name          string    `json:"name"`
	BitsPerSecond []float64 `json:"bits_per_second"`
}

// Throughput is TCP throughput through vxsec against a hand-built VXLAN.
type Throughput struct {
	Meta
	Seconds int    `json:"seconds"`
	Runs    int    `json:"runs"`
	Sides   []Side `json:"sides"`
}

// Encryption is the encrypted path's benchmark (kernel lab).
type Encryption struct {
	Meta
	Seconds int `json:"seconds"`
	Runs    int `json:"runs"`
	// RotationS: how long each forced rotation took to complete.
	RotationS    []float64 `json:"rotation_s"`
	PingSent     int       `json:"ping_sent"`
	PingReceived int       `json:"ping_received"`
	// JoinS: a new host's network create to its first encrypted reply.
	JoinS float64 `json:"join_s"`
	// Throughput: encrypted against plain; Encap: native ESP against ESP
	// in UDP.
	Throughput []Side `json:"throughput"`
	Encap      []Side `json:"encap"`
	// HandBuilt: the encrypted network ("vxsec-encrypted") against VXLAN
	// in ESP made by hand between the same hosts ("hand-built-esp").
	HandBuilt []Side `json:"hand_built,omitempty"`
	// Rotating: one TCP stream at rest and while keys rotate.
	Rotating *Rotating `json:"rotating,omitempty"`
}

// Rotating is one TCP stream's throughput at rest and while Rotations
// forced rotations ran, with the segments it retransmitted in each.
type Rotating struct {
	Rotations      int     `json:"rotations"`
	RestBps        float64 `json:"rest_bps"`
	DuringBps      float64 `json:"during_bps"`
	RestRetrans    int     `json:"rest_retrans"`
	DuringRetrans  int     `json:"during_retrans"`
	RestDaemonsS   float64 `json:"rest_daemons_cpu_s"`
	DuringDaemonsS float64 `json:"during_daemons_cpu_s"`
}

// Write writes v as dir/<name>.json, making dir if needed. It writes a
// temporary file and renames it, so that an interrupted benchmark leaves
// the previous file or the new one, never half of one. It does not fsync
// (atomicfile does): results need not outlive a crash of the machine, and
// the kernel lab writes them to a 9p export.
func Write(dir, name string, v any) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("results directory: %w", err)
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("%s results: %w", name, err)
	}
	tmp, err := os.CreateTemp(dir, ".tmp-"+name+"-")
	if err != nil {
		return fmt.Errorf("writing %s results: %w", name, err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	_, err = tmp.Write(append(b, '\n'))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(dir, name+".json"))
	}
	if err != nil {
		return fmt.Errorf("writing %s results: %w", name, err)
	}
	return nil
}

// read fills v from dir/<name>.json; it reports false when there is none.
func read(dir, name string, v any) (bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, name+".json"))
	if os.IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	d := json.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(v); err != nil {
		return false, fmt.Errorf("%s: %w", filepath.Join(dir, name+".json"), err)
	}
	return true, nil
}
