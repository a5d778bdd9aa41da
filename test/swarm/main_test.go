//go:build swarmlab

// Package swarm is the swarm lab (docs/swarm.md): three Docker engines, each
// in its own network namespace, forming a swarm of three managers inside one
// kernel-lab VM; a registry; the vxsec plugin pushed to it and installed from
// it everywhere with no setting but its swarm directory; then the checks of
// vxsec in a real swarm (zero-config trust, an outsider refused, a CA
// rotation, encrypted networks and services, a rolling plugin upgrade,
// leader failover, an engine restart, a node's removal, nothing left).
//
// The test binary is built on the host and runs inside the VM, started by
// scripts/swarm-lab.sh:
//
//	go test -c -tags 'nosystemd swarmlab' -o build/swarm-lab/swarm.test ./test/swarm
//	scripts/swarm-lab.sh [--run 'TestSwarmLab/services'] [--bench]
//
// TestSwarmLab runs the phases in order, each a subtest, each check of a
// phase a subtest of its own named after the check's ID (docs/swarm.md maps
// them). A phase selected alone (-test.run TestSwarmLab/<phase>) first runs
// the phases it needs, as steps of its own test. TestSwarmBench is the
// benchmark (scripts/swarm-lab.sh --bench).
//
// The same binary also turns the test2json stream into the console's lines
// (SWARM_LAB_RENDER=<file to save the stream to>, the stream on stdin) and
// counts the tests of a saved stream (SWARM_LAB_SUMMARY=<file>), so the host
// needs nothing else to read the results.
package swarm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"testing"

	"github.com/vxsec/vxsec/lab"
)

// labEnv is what scripts/swarm-lab.sh hands the guest (through the kernel
// lab's environment).
type labEnv struct {
	// art holds what the host built: plugin-v1/, plugin-v2/ (config.json
	// and rootfs/ with the static binary), version-v1, version-v2 and
	// busybox.tar (SWARM_LAB_ART).
	art string
	// logs is where the logs go (SWARM_LAB_LOGS; the VM's writable export
	// by default, which swarm-lab.sh copies to build/swarm-lab/logs).
	logs string
	// run holds the engines' sockets, pid files and logs (tmpfs).
	run string
	// deadline ends every call of the lab, leaving time to collect the
	// logs before the VM's own timeout (SWARM_LAB_DEADLINE, seconds).
	deadline time.Duration
	// hold is how long to wait before collecting logs (SWARM_LAB_HOLD).
	hold time.Duration
	// runs is the benchmark's number of runs per driver
	// (SWARM_LAB_BENCH_RUNS).
	runs int
	// bench: TestSwarmBench runs (SWARM_LAB_MODE=bench). vipBench: it
	// measures reachability by the service's name in VIP mode
	// (SWARM_LAB_BENCH_MODE=vip) instead of by address in dnsrr mode.
	vipBench bool
	bench    bool
}

var (
	env    labEnv
	rootCx context.Context
)

func TestMain(m *testing.M) {
	if p := os.Getenv("SWARM_LAB_RENDER"); p != "" {
		os.Exit(render(p))
	}
	if p := os.Getenv("SWARM_LAB_SUMMARY"); p != "" {
		os.Exit(summary(p))
	}
	for _, a := range os.Args[1:] {
		if strings.HasPrefix(a, "-test.list") {
			os.Exit(m.Run())
		}
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "FAIL: the swarm lab needs root (namespaces, engines)")
		os.Exit(1)
	}
	if os.Getenv("VXSEC_IN_KERNEL_LAB") == "" {
		fmt.Fprintln(os.Stderr, "FAIL: the swarm lab runs inside the kernel lab's VM (it starts engines and namespaces): use scripts/swarm-lab.sh")
		os.Exit(1)
	}
	env = labEnv{
		art:      os.Getenv("SWARM_LAB_ART"),
		logs:     getenv("SWARM_LAB_LOGS", "/run/kernel-lab/out/logs"),
		run:      "/run/sl",
		deadline: time.Duration(atoi(os.Getenv("SWARM_LAB_DEADLINE"), 1200)) * time.Second,
		hold:     time.Duration(atoi(os.Getenv("SWARM_LAB_HOLD"), 0)) * time.Second,
		runs:     atoi(os.Getenv("SWARM_LAB_BENCH_RUNS"), 3),
		bench:    os.Getenv("SWARM_LAB_MODE") == "bench",
		vipBench: os.Getenv("SWARM_LAB_BENCH_MODE") == "vip",
	}
	if env.art == "" {
		fmt.Fprintln(os.Stderr, "FAIL: SWARM_LAB_ART (the host-built plugins and image) is not set: use scripts/swarm-lab.sh")
		os.Exit(1)
	}
	if err := os.MkdirAll(env.logs, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), env.deadline)
	rootCx = ctx
	rc := m.Run()
	cancel()
	os.Exit(rc)
}

func getenv(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func atoi(s string, def int) int {
	if n, err := strconv.Atoi(s); err == nil {
		return n
	}
	return def
}

// render copies the test2json stream on stdin to file and prints it.
func render(file string) int {
	f, err := os.Create(file)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer f.Close()
	if err := lab.RenderTestEvents(os.Stdin, os.Stdout, f); err != nil {
		fmt.Fprintln(os.Stderr, "reading the test2json stream:", err)
		return 1
	}
	return 0
}

// summary counts the tests of a saved stream, writes results.txt beside it
// and prints the phases, what failed and the count; 0 only if every test
// passed and none was skipped.
func summary(file string) int {
	f, err := os.Open(file)
	if err != nil {
		fmt.Fprintln(os.Stderr, "SWARM-LAB RESULT: FAIL (no test2json stream:", err, ")")
		return 1
	}
	defer f.Close()
	rep, err := lab.ReadTestReport(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reading", file, ":", err)
	}
	if rf, err := os.Create(filepath.Join(filepath.Dir(file), "results.txt")); err == nil {
		rep.WriteResults(rf)
		rf.Close()
	}
	fmt.Println("==================== swarm lab summary ====================")
	rep.WriteSummary(os.Stdout, "swarm-lab", 1)
	if err == nil && rep.OK() {
		p, _, _, _ := rep.Counts()
		fmt.Printf("SWARM-LAB RESULT: PASS (%d tests passed)\n", p)
		return 0
	}
	p, fl, s, u := rep.Counts()
	fmt.Printf("SWARM-LAB RESULT: FAIL (%d failed, %d skipped, %d never ended, %d passed; the binary: %q)\n", fl, s, u, p, rep.Package)
	return 1
}
