package benchreport

import (
	"fmt"

	"github.com/vxsec/vxsec/internal/benchdata"
)

// Issue 16's goals for the scale benchmark (stated for 50 hosts × 1000
// endpoints), and the RSS bound vxlab bench prints.
const (
	scaleGoalS          = 5.0
	scaleAfterJoinGoalS = 2.0
	rssGoalBytes        = 40 << 20
)

func (rp *report) scale(sc *benchdata.Scale) error {
	const title = "Scale: hosts × endpoints"
	if sc == nil || len(sc.Runs) == 0 {
		rp.notRun(title, "`"+rp.resultFile(benchdata.ScaleName)+"`", "`vxlab bench -only scale -results DIR` (with `-hosts-sweep 10,50,100` for the curves by host count)")
		return nil
	}
	rp.section(title)
	fmt.Fprintf(&rp.md, "Method: each run starts N hosts (network namespaces, each a real `vxsec daemon`), then every host at once makes "+
		"its endpoints (CreateEndpoint + Join); every host's status is polled every %s until it holds every remote endpoint. "+
		"Convergence is measured from the first CreateEndpoint and from the last Join's answer; CPU is the daemons' CPU time "+
		"over the same window; RSS is read from /proc after it.\n\n", msf(sc.PollS))
	rp.measured(sc.Meta, rp.resultFile(benchdata.ScaleName))
	rp.md.WriteString("| hosts | endpoints (per host) | all entries, from the first CreateEndpoint | per host p50 / p90 | after the last Join | CPU s (CPUs busy) | bytes on the wire | RSS max | goal < 5 s and < 2 s after the last Join, RSS < 40 MiB |\n")
	rp.md.WriteString("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	var (
		hosts, conv, p50, after, cpu []float64
		wireHosts, wire              []float64
		cdfs                         []series
		allMet                       = true
		// goalRuns and goalMet: the runs of the goal's size (50 hosts
		// × 20), which the summary judges when there are any.
		goalRuns int
		goalMet  = true
	)
	for _, r := range sc.Runs {
		s := summarize(r.PerHostS)
		var cpuSum float64
		for _, c := range r.CPUS {
			cpuSum += c
		}
		busy := 0.0
		if r.ConvergedS > 0 {
			busy = cpuSum / r.ConvergedS
		}
		bytes := "not measured"
		if r.WireBytes != nil {
			bytes = fmt.Sprintf("%.1f MiB", float64(*r.WireBytes)/(1<<20))
		}
		met := r.ConvergedS < scaleGoalS && r.AfterLastJoinS < scaleAfterJoinGoalS && r.RSSBusy.Max < rssGoalBytes
		allMet = allMet && met
		if r.Hosts == 50 && r.PerHost == 20 {
			goalRuns++
			goalMet = goalMet && met
		}
		fmt.Fprintf(&rp.md, "| %d | %d (%d) | %s | %s / %s | %s | %.1f (%.2f) | %s | %s | %s |\n",
			r.Hosts, r.Endpoints, r.PerHost, sf(r.ConvergedS), sf(s.p50), sf(s.p90), sf(r.AfterLastJoinS),
			cpuSum, busy, bytes, mibf(r.RSSBusy.Max), status(met))
		hosts = append(hosts, float64(r.Hosts))
		conv = append(conv, r.ConvergedS)
		p50 = append(p50, s.p50)
		after = append(after, r.AfterLastJoinS)
		cpu = append(cpu, cpuSum)
		if r.WireBytes != nil {
			wireHosts = append(wireHosts, float64(r.Hosts))
			wire = append(wire, float64(*r.WireBytes)/(1<<20))
		}
		cdfs = append(cdfs, series{hostsLabel(r), r.PerHostS})
	}
	rp.md.WriteString("\nThe goals are issue 16's, stated for 50 hosts × 1000 endpoints in 5 of 5 runs; runs of other sizes are judged against them for reference, and the summary judges the runs of 50 hosts × 20 when there are any.\n\n")
	if goalRuns > 0 {
		allMet = goalMet
	}
	// The summary shows the goal's size, 50 hosts, when a run has it.
	last := sc.Runs[len(sc.Runs)-1]
	for _, r := range sc.Runs {
		if r.Hosts == 50 {
			last = r
		}
	}
	rp.rows = append(rp.rows, summaryRow{title,
		fmt.Sprintf("%s: %s from the first CreateEndpoint, %s after the last Join", hostsLabel(last), sf(last.ConvergedS), sf(last.AfterLastJoinS)),
		"< 5 s, < 2 s after the last Join, RSS < 40 MiB", status(allMet)})

	p, err := cdf("When each host had every entry", "seconds from the first CreateEndpoint", cdfs)
	if err != nil {
		return fmt.Errorf("scale: %w", err)
	}
	if err := rp.image(p, "scale-cdf.svg", "CDF of per-host convergence"); err != nil {
		return err
	}
	p, err = curves("Convergence by host count", "hosts", "seconds", []curve{
		{"every host, from the first CreateEndpoint", hosts, conv},
		{"per host p50", hosts, p50},
		{"after the last Join", hosts, after},
	})
	if err != nil {
		return fmt.Errorf("scale: %w", err)
	}
	if err := rp.image(p, "scale-convergence.svg", "convergence by host count"); err != nil {
		return err
	}
	p, err = curves("Daemon CPU by host count", "hosts", "CPU seconds, all daemons", []curve{{"CPU seconds to convergence", hosts, cpu}})
	if err != nil {
		return fmt.Errorf("scale: %w", err)
	}
	if err := rp.image(p, "scale-cpu.svg", "CPU seconds by host count"); err != nil {
		return err
	}
	if len(wire) == 0 {
		rp.md.WriteString("Bytes on the wire: not measured by this benchmark yet (`wire_bytes` is null), so there is no plot of them.\n\n")
		return nil
	}
	p, err = curves("Bytes on the wire by host count", "hosts", "MiB sent, all daemons", []curve{{"bytes on the wire", wireHosts, wire}})
	if err != nil {
		return fmt.Errorf("scale: %w", err)
	}
	return rp.image(p, "scale-bytes.svg", "bytes on the wire by host count")
}

// hostsLabel names a scale run in legends.
func hostsLabel(r benchdata.ScaleRun) string {
	return fmt.Sprintf("%d hosts × %d", r.Hosts, r.PerHost)
}
