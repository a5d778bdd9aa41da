package benchreport

import (
	"fmt"

	"github.com/vxsec/vxsec/internal/benchdata"
)

// convergenceGoal is issue 16's: Join to the first remote reply.
const convergenceGoalS = 1.0

func (rp *report) convergence(c *benchdata.Convergence) error {
	const title = "Convergence: Join → first reply"
	if c == nil || len(c.JoinToReplyS) == 0 {
		rp.notRun(title, "`"+rp.resultFile(benchdata.ConvergenceName)+"`", "`vxlab bench -only convergence -results DIR`")
		return nil
	}
	rp.section(title)
	fmt.Fprintf(&rp.md, "Method: a %d-host cluster; for each of %d new endpoints, a container on another host pings its address "+
		"every 10 ms before Join is sent; the figure is the first echo reply minus the time Join was sent (container plumbing, "+
		"propagation over the cluster, the remote host's entries, ARP through its proxy).\n\n", c.Hosts, c.Endpoints)
	rp.measured(c.Meta, rp.resultFile(benchdata.ConvergenceName))
	s := summarize(c.JoinToReplyS)
	pl := summarize(c.PlumbingS)
	rp.md.WriteString("| | n | min | p50 | p90 | p99 | max |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	row := func(name string, s summary) {
		fmt.Fprintf(&rp.md, "| %s | %d | %s | %s | %s | %s | %s |\n", name, s.n, msf(s.min), msf(s.p50), msf(s.p90), msf(s.p99), msf(s.max))
	}
	row("Join → first reply", s)
	if pl.n > 0 {
		row("of which Join + plumbing", pl)
	}
	met := s.p99 < convergenceGoalS
	goal := "p99 < 1 s"
	fmt.Fprintf(&rp.md, "\nGoal: %s: %s (p99 %s).\n\n", goal, status(met), msf(s.p99))
	rp.rows = append(rp.rows, summaryRow{title, fmt.Sprintf("p50 %s, p99 %s (n=%d)", msf(s.p50), msf(s.p99), s.n), goal, status(met)})
	p, err := cdf("Join → first reply from another host", "ms", []series{
		{"Join → first reply", scaled(c.JoinToReplyS, 1000)},
		{"Join + plumbing", scaled(c.PlumbingS, 1000)},
	})
	if err != nil {
		return fmt.Errorf("convergence: %w", err)
	}
	return rp.image(p, "convergence-cdf.svg", "CDF of Join to first reply")
}
