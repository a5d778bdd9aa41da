package benchreport

import (
	"fmt"

	"github.com/vxsec/vxsec/internal/benchdata"
)

// throughputGoal is issue 16's ratio of vxsec to a hand-built VXLAN.
const throughputGoal = 0.95

func (rp *report) throughput(t *benchdata.Throughput) error {
	const title = "Throughput: vxsec against a hand-built VXLAN"
	if t == nil || len(t.Sides) == 0 {
		rp.notRun(title, "`"+rp.resultFile(benchdata.ThroughputName)+"`", "`vxlab bench -only throughput -results DIR`")
		return nil
	}
	rp.section(title)
	fmt.Fprintf(&rp.md, "Method: iperf3, one TCP stream for %d s, container to container across two hosts, through a vxsec network and "+
		"through a VXLAN built by hand the same way between the same two hosts; %d runs per side, alternating (ABBA). "+
		"The figure is the receiver's bits/s.\n\n", t.Seconds, t.Runs)
	rp.measured(t.Meta, rp.resultFile(benchdata.ThroughputName))
	rp.sidesTable(t.Sides, 1e9, "Gbit/s")
	ratio, ok := ratioOf(t.Sides, "vxsec", "hand-built")
	goal := "vxsec/hand-built ≥ 0.95"
	if ok {
		met := ratio >= throughputGoal
		fmt.Fprintf(&rp.md, "\nRatio of the medians vxsec/hand-built: **%.3f**. Goal: %s: %s.\n\n", ratio, goal, status(met))
		rp.rows = append(rp.rows, summaryRow{title, fmt.Sprintf("ratio %.3f", ratio), goal, status(met)})
	} else {
		rp.md.WriteString("\nThe results lack a side named vxsec or hand-built: no ratio.\n\n")
		rp.rows = append(rp.rows, summaryRow{title, "no ratio", goal, "unknown"})
	}
	p, err := bars("TCP throughput, medians and runs", "Gbit/s", sidesSeries(t.Sides, 1e9))
	if err != nil {
		return fmt.Errorf("throughput: %w", err)
	}
	return rp.image(p, "throughput.svg", "throughput bars")
}

func (rp *report) encryption(e *benchdata.Encryption) error {
	const title = "Encryption (kernel lab)"
	if e == nil {
		rp.notRun(title, "`"+rp.resultFile(benchdata.EncryptionName)+"`", "`make bench`, whose kernel lab runs `vxlab bench -only encryption`")
		return nil
	}
	rp.section(title)
	rp.md.WriteString("Method: in the kernel lab (Debian's kernel under qemu TCG, whose emulated CPU makes every figure slower than real " +
		"hardware: read the ratios), two hosts with an encrypted network: a ping every 10 ms across forced key rotations; " +
		"a third host's time from creating the network to its first encrypted reply; iperf3 encrypted against plain between " +
		"the same hosts, and native ESP against ESP in UDP.\n\n")
	rp.measured(e.Meta, rp.resultFile(benchdata.EncryptionName))
	rot := summarize(e.RotationS)
	lost := e.PingSent - e.PingReceived
	fmt.Fprintf(&rp.md, "| rotations | each complete in p50 / max | ping sent | received | lost | new host to its first encrypted reply |\n"+
		"| ---: | ---: | ---: | ---: | ---: | ---: |\n| %d | %s / %s | %d | %d | %d | %s |\n\n",
		rot.n, sf(rot.p50), sf(rot.max), e.PingSent, e.PingReceived, lost, sf(e.JoinS))
	met := lost == 0
	fmt.Fprintf(&rp.md, "Goal: no packet lost across rotations: %s.\n\n", status(met))
	rp.sidesTable(append(append([]benchdata.Side(nil), e.Throughput...), e.Encap...), 1e6, "Mbit/s")
	headline := fmt.Sprintf("%d lost across %d rotations", lost, rot.n)
	if r, ok := ratioOf(e.Throughput, "encrypted", "plain"); ok {
		fmt.Fprintf(&rp.md, "\nRatio of the medians encrypted/plain: **%.3f** (under TCG). ", r)
		headline += fmt.Sprintf("; encrypted/plain %.3f", r)
	}
	if r, ok := ratioOf(e.Encap, "esp-in-udp", "esp"); ok {
		fmt.Fprintf(&rp.md, "ESP in UDP / native ESP: **%.3f**.", r)
	}
	rp.md.WriteString("\n\n")
	rp.rows = append(rp.rows, summaryRow{title, headline, "0 packets lost across rotations", status(met)})
	if len(e.HandBuilt) > 0 {
		rp.md.WriteString("Against the same data path made by hand (VXLAN in ESP transport mode, `ip xfrm`, vxsec's algorithm and settings, between the same two hosts):\n\n")
		rp.sidesTable(e.HandBuilt, 1e6, "Mbit/s")
		if r, ok := ratioOf(e.HandBuilt, "vxsec-encrypted", "hand-built-esp"); ok {
			fmt.Fprintf(&rp.md, "\nRatio of the medians vxsec/hand-built: **%.3f**; goal ≥ 0.95: %s.\n\n", r, status(r >= 0.95))
			rp.rows = append(rp.rows, summaryRow{"Encrypted vs hand-built ESP", fmt.Sprintf("%.3f", r), "≥ 0.95", status(r >= 0.95)})
		}
	} else {
		rp.md.WriteString("These results hold no hand-built ESP side (issue 16's goal, ≥ 0.95 of it): not judged.\n\n")
	}
	if rt := e.Rotating; rt != nil && rt.RestBps > 0 {
		r := rt.DuringBps / rt.RestBps
		fmt.Fprintf(&rp.md, "| one TCP stream | Mbit/s | segments retransmitted | the two daemons' CPU |\n| --- | ---: | ---: | ---: |\n"+
			"| at rest | %.1f | %d | %.2f s |\n| during %d rotations | %.1f | %d | %.2f s |\n\n",
			rt.RestBps/1e6, rt.RestRetrans, rt.RestDaemonsS, rt.Rotations, rt.DuringBps/1e6, rt.DuringRetrans, rt.DuringDaemonsS)
		fmt.Fprintf(&rp.md, "Throughput during rotations / at rest: **%.3f**; goal ≥ 0.9: %s.\n\n", r, status(r >= 0.9))
		rp.rows = append(rp.rows, summaryRow{"Throughput while keys rotate", fmt.Sprintf("%.3f of at rest", r), "≥ 0.9", status(r >= 0.9)})
	}
	if len(e.Throughput)+len(e.Encap) == 0 {
		return nil
	}
	p, err := bars("Encrypted path throughput (TCG), medians and runs", "Mbit/s", sidesSeries(append(append(append([]benchdata.Side(nil), e.Throughput...), e.Encap...), e.HandBuilt...), 1e6))
	if err != nil {
		return fmt.Errorf("encryption: %w", err)
	}
	return rp.image(p, "encryption-throughput.svg", "encrypted throughput bars")
}

// sidesTable is a table of every run of every side, and its median.
func (rp *report) sidesTable(sides []benchdata.Side, unit float64, unitName string) {
	fmt.Fprintf(&rp.md, "| side | runs (%s) | median |\n| --- | --- | ---: |\n", unitName)
	for _, s := range sides {
		f := func(v float64) string { return fmt.Sprintf("%.2f", v/unit) }
		fmt.Fprintf(&rp.md, "| %s | %s | **%s** |\n", s.Name, joined(s.BitsPerSecond, f), f(median(s.BitsPerSecond)))
	}
}

func sidesSeries(sides []benchdata.Side, unit float64) []series {
	var ss []series
	for _, s := range sides {
		ss = append(ss, series{s.Name, scaled(s.BitsPerSecond, 1/unit)})
	}
	return ss
}

// ratioOf is median(a)/median(b) of the sides so named.
func ratioOf(sides []benchdata.Side, a, b string) (float64, bool) {
	var va, vb []float64
	for _, s := range sides {
		switch s.Name {
		case a:
			va = s.BitsPerSecond
		case b:
			vb = s.BitsPerSecond
		}
	}
	if len(va) == 0 || len(vb) == 0 || median(vb) == 0 {
		return 0, false
	}
	return median(va) / median(vb), true
}
