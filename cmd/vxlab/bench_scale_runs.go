package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/vxsec/vxsec/internal/benchdata"
)

// benchScaleRuns runs the scale benchmark once at -hosts or, with
// -hosts-sweep, once per host count (the same endpoints per host), for the
// curves by host count. It returns every finished run, also when a later
// one failed, and the goals each run missed.
func benchScaleRuns(ctx context.Context, w io.Writer, bin string, o benchOpts) (benchdata.Scale, string, error) {
	rec := benchdata.Scale{PollS: o.pollPeriod.Seconds()}
	hosts := o.hostsSweep
	if len(hosts) == 0 {
		hosts = []int{o.hosts}
	}
	var missed []string
	for _, n := range hosts {
		run := o
		run.hosts = n
		var r benchdata.ScaleRun
		m, err := benchScale(ctx, w, bin, run, &r)
		if err != nil && len(o.hostsSweep) > 0 {
			return rec, "", fmt.Errorf("%d hosts: %w", n, err)
		}
		if err != nil {
			return rec, "", err
		}
		rec.Runs = append(rec.Runs, r)
		if m != "" && len(o.hostsSweep) > 0 {
			m = fmt.Sprintf("%d hosts: %s", n, m)
		}
		if m != "" {
			missed = append(missed, m)
		}
	}
	if len(o.hostsSweep) > 0 {
		fmt.Fprintf(w, "\n== scale sweep, %d endpoints per host: every host had every entry, from the first CreateEndpoint\n", o.perHost)
		for _, r := range rec.Runs {
			fmt.Fprintf(w, "   %d hosts: %.2f s (%.2f s after the last Join)\n", r.Hosts, r.ConvergedS, r.AfterLastJoinS)
		}
	}
	return rec, strings.Join(missed, "; "), nil
}
