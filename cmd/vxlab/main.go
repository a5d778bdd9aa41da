package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

const usage = `usage: vxlab [-bin ./bin/vxsec] <command> [flags]

commands:
  demo    a 3-host vxsec cluster on this machine: one network, pings across hosts,
          a host dying and returning, narrated, then torn down
  bench   cluster benchmarks: convergence (Join to first reply), scale (hosts ×
          endpoints, RSS per daemon), data path (iperf3, vxsec vs hand-built VXLAN)
  report  render the benchmarks' results (vxlab bench -results, scripts/bench.sh,
          the swarm lab) as Markdown with SVG plots; needs neither root nor a lab

"vxlab <command> -h" lists a command's flags.
`

func main() {
	top := flag.NewFlagSet("vxlab", flag.ExitOnError)
	top.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	bin := top.String("bin", "./bin/vxsec", "the vxsec binary every lab host runs")
	top.Parse(os.Args[1:])
	if top.NArg() == 0 {
		top.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	cmd, args := top.Arg(0), top.Args()[1:]
	fs := flag.NewFlagSet("vxlab "+cmd, flag.ExitOnError)
	fs.StringVar(bin, "bin", *bin, "the vxsec binary every lab host runs")
	fs.BoolVar(&keepLogs, "keep-logs", false, "keep the lab directory (daemon logs) even on success")
	var run func() error
	// Only the lab's commands need root and the vxsec binary.
	needsLab := true
	switch cmd {
	case "demo":
		run = func() error { return runDemo(ctx, os.Stdout, *bin, keepLogs) }
	case "bench":
		o := benchFlags(fs)
		run = func() error { return runBench(ctx, os.Stdout, *bin, *o) }
	case "report":
		o := reportFlags(fs)
		run = func() error { return runReport(os.Stdout, *o) }
		needsLab = false
	default:
		fmt.Fprintf(os.Stderr, "vxlab: unknown command %q\n\n", cmd)
		top.Usage()
		os.Exit(2)
	}
	fs.Parse(args)
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "vxlab %s: unexpected arguments %q\n", cmd, fs.Args())
		os.Exit(2)
	}
	var err error
	if needsLab {
		err = prepare(bin)
	}
	if err == nil {
		err = run()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vxlab: FAIL:", err)
		os.Exit(1)
	}
}

// prepare checks for root and makes the binary's path absolute.
func prepare(bin *string) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (it makes network namespaces)")
	}
	abs, err := filepath.Abs(*bin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(abs); err != nil {
		return fmt.Errorf("vxsec binary: %w (run `make build` first, or pass -bin)", err)
	}
	*bin = abs
	return nil
}
