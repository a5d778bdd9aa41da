package main

import (
	"flag"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/vxsec/vxsec/internal/benchdata"
	"github.com/vxsec/vxsec/internal/benchreport"
)

type reportOpts struct {
	src  benchdata.Sources
	out  string
	note string
}

func reportFlags(f *flag.FlagSet) *reportOpts {
	o := &reportOpts{}
	f.StringVar(&o.src.Dir, "results", "build/bench", "vxlab bench's results directory (its -results)")
	f.StringVar(&o.src.DockerGlob, "docker", "build/bench-docker-*.tsv", "scripts/bench.sh's docker run timings, one file per engine")
	f.StringVar(&o.src.SwarmTSV, "swarm", "build/bench/swarm-bench.tsv", "the swarm lab's benchmark (scripts/swarm-lab.sh --bench copies it there from build/swarm-lab/logs/bench.tsv)")
	f.StringVar(&o.out, "out", "docs/bench", "where the report (README.md and SVG plots) is written")
	f.StringVar(&o.note, "note", "", "a line opening the report, such as what kind of run it comes from")
	return o
}

// runReport renders every result found; one it cannot read fails the
// report, which would otherwise look complete without it.
func runReport(w io.Writer, o reportOpts) error {
	r, err := benchdata.Load(o.src)
	if err != nil {
		return fmt.Errorf("reading the results: %w", err)
	}
	info := benchreport.Info{Commit: commit(), Date: time.Now().UTC(), Machine: benchdata.ThisMachine(), Note: o.note, Sources: o.src}
	files, err := benchreport.Render(o.out, r, info)
	if err != nil {
		return fmt.Errorf("rendering the report: %w", err)
	}
	fmt.Fprintf(w, "benchmark report: %s (%d plots)\n", filepath.Join(o.out, benchreport.IndexName), len(files)-1)
	return nil
}

// commit names the tree the report is made from, as `make build` names
// its binaries.
func commit() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return "unknown (not a git checkout)"
	}
	return strings.TrimSpace(string(out))
}
