package benchreport

import (
	"fmt"
	"slices"
	"strings"

	"github.com/vxsec/vxsec/internal/benchdata"
)

// Issue 16's goals for `docker run --rm`: within 1.4 times the bridge on
// Docker 28 (stretch 1.2), never slower than Docker's overlay.
const (
	bridgeGoal   = 1.4
	overlayGoal  = 1.0
	bridgeEngine = "28"
)

// networkOrder is scripts/bench.sh's networks, in its order: tables and
// plots show them first, in it. The first three are its phase outside
// swarm, the last three its phase in swarm.
func networkOrder() []string {
	return []string{"vxsec-local", "vxsec-internal", "bridge-local", "vxsec", "overlay", "bridge"}
}

// dockerRatio is a ratio of two networks' medians the report gives, with
// the goal it is held to (0: none; it explains a share of the time).
type dockerRatio struct {
	num, den string
	goal     float64
	// goalText names the goal on the page.
	goalText string
	// engine, if set, is the only engine the goal is for.
	engine string
	// why says what the ratio shows, when it has no goal.
	why string
}

func dockerRatios() []dockerRatio {
	return []dockerRatio{
		{num: "vxsec-local", den: "bridge-local", goal: bridgeGoal, goalText: "goal ≤ 1.4, stretch 1.2", engine: bridgeEngine},
		{num: "vxsec-internal", den: "bridge-local", why: "vxsec's own share: no docker_gwbridge endpoint"},
		{num: "vxsec", den: "overlay", goal: overlayGoal, goalText: "goal ≤ 1"},
		{num: "vxsec", den: "bridge", goal: bridgeGoal, goalText: "goal ≤ 1.4, stretch 1.2", engine: bridgeEngine},
	}
}

func (rp *report) docker(ds []benchdata.DockerRuns) error {
	const title = "Container start: `docker run --rm` on vxsec, overlay and bridge"
	if len(ds) == 0 {
		rp.notRun(title, fmt.Sprintf("file matching `%s`", rp.src.DockerGlob), "`scripts/bench.sh`, one file per engine (`make bench` runs it on each)")
		return nil
	}
	rp.section(title)
	rp.md.WriteString("Method (`scripts/bench.sh`): rounds of one `docker run --rm --network X vxsec-busybox true` " +
		"on each network, in an order that rotates every round, each timed from the CLI call to its return, in two phases. " +
		"Outside swarm: a vxsec network (`vxsec-local`), the same with `--internal` (`vxsec-internal`: the engine gives the " +
		"container no docker_gwbridge endpoint) and the default bridge (`bridge-local`). On a single-node swarm: vxsec and " +
		"Docker's overlay, both attachable and swarm-scoped, and the default bridge. Percentiles are nearest-rank.\n\n")
	var ss []series
	allMet := true
	var headlines []string
	for _, d := range ds {
		by := map[string][]float64{}
		for _, r := range d.Runs {
			by[r.Network] = append(by[r.Network], r.MS)
		}
		nets := orderedNetworks(by)
		fmt.Fprintf(&rp.md, "### Docker %s\n\nRaw figures: `%s` (written %s).\n\n| network | n | median | p90 | max |\n| --- | ---: | ---: | ---: | ---: |\n", d.Engine, d.File, stamp(d.Modified))
		for _, n := range nets {
			s := summarize(by[n])
			fmt.Fprintf(&rp.md, "| %s | %d | %.0f ms | %.0f ms | %.0f ms |\n", n, s.n, s.med, s.p90, s.max)
			ss = append(ss, series{n + " " + d.Engine, by[n]})
		}
		var lines []string
		for _, q := range dockerRatios() {
			if len(by[q.num]) == 0 || len(by[q.den]) == 0 {
				continue
			}
			r := median(by[q.num]) / median(by[q.den])
			name := q.num + "/" + q.den
			headlines = append(headlines, fmt.Sprintf("%s: %s %.2f", d.Engine, name, r))
			switch {
			case q.goal == 0:
				lines = append(lines, fmt.Sprintf("%s **%.2f** (%s)", name, r, q.why))
			case q.engine != "" && d.Engine != q.engine:
				lines = append(lines, fmt.Sprintf("%s **%.2f** (the goal is Docker %s's)", name, r, q.engine))
			default:
				met := r <= q.goal
				allMet = allMet && met
				lines = append(lines, fmt.Sprintf("%s **%.2f** (%s: %s)", name, r, q.goalText, status(met)))
			}
		}
		if len(lines) > 0 {
			fmt.Fprintf(&rp.md, "\nRatios of the medians: %s.\n\n", strings.Join(lines, ", "))
		} else {
			rp.md.WriteString("\nNo ratio: a network is missing from the file.\n\n")
		}
	}
	rp.rows = append(rp.rows, summaryRow{"Container start (`docker run --rm`)", strings.Join(headlines, "; "),
		"vxsec/overlay ≤ 1; vxsec/bridge ≤ 1.4 on Docker 28, in and outside swarm", status(allMet)})
	p, err := boxes("docker run --rm, by network and engine", "ms", ss)
	if err != nil {
		return fmt.Errorf("docker runs: %w", err)
	}
	return rp.image(p, "docker-runs.svg", "docker run distributions")
}

func orderedNetworks(by map[string][]float64) []string {
	var nets []string
	for _, n := range networkOrder() {
		if _, ok := by[n]; ok {
			nets = append(nets, n)
		}
	}
	var rest []string
	for n := range by {
		if !slices.Contains(networkOrder(), n) {
			rest = append(rest, n)
		}
	}
	slices.Sort(rest)
	return append(nets, rest...)
}

func (rp *report) swarm(s *benchdata.Swarm) error {
	const title = "Swarm service convergence (swarm lab)"
	if s == nil || len(s.Runs) == 0 {
		rp.notRun(title, fmt.Sprintf("`%s`", rp.src.SwarmTSV), "`scripts/swarm-lab.sh --bench`")
		return nil
	}
	rp.section(title)
	mode := "the service's mode is not recorded (no bench.txt beside the TSV)"
	switch s.Mode {
	case "vip":
		mode = "VIP mode: each task asks the service's name over HTTP until all three tasks answered"
	case "dnsrr":
		mode = "dnsrr: each task pings every other task by address"
	}
	warm := "no warm-up run recorded (the first run of a lab pays for the node's first encrypted network and swarm's session after the plugin's install)"
	if s.WarmUp != "" {
		warm = s.WarmUp
	}
	fmt.Fprintf(&rp.md, "Method: in the swarm lab (three Docker engines in one kernel-lab VM, qemu TCG), from `docker service create --mode global` "+
		"on an encrypted network to every task reaching every other, vxsec against Docker's encrypted overlay, alternating; %s; %s. "+
		"Raw figures: `%s` (written %s).\n\n", mode, warm, s.File, stamp(s.Modified))
	by := map[string][]float64{}
	var drivers []string
	for _, r := range s.Runs {
		if _, ok := by[r.Driver]; !ok {
			drivers = append(drivers, r.Driver)
		}
		by[r.Driver] = append(by[r.Driver], r.Seconds)
	}
	slices.SortFunc(drivers, func(a, b string) int { return rank(a) - rank(b) })
	rp.md.WriteString("| driver | runs | median |\n| --- | --- | ---: |\n")
	var ss []series
	for _, d := range drivers {
		fmt.Fprintf(&rp.md, "| %s | %s | **%s** |\n", d, joined(by[d], sf), sf(median(by[d])))
		ss = append(ss, series{d, by[d]})
	}
	headline := "no ratio"
	if len(by["vxsec"]) > 0 && len(by["overlay"]) > 0 {
		r := median(by["vxsec"]) / median(by["overlay"])
		fmt.Fprintf(&rp.md, "\nRatio of the medians vxsec/overlay: **%.2f**. ", r)
		headline = fmt.Sprintf("vxsec/overlay %.2f", r)
	}
	rp.md.WriteString("No goal is set for this benchmark; under TCG compare the ratio, not the seconds.\n\n")
	rp.rows = append(rp.rows, summaryRow{title, headline, "none set", "–"})
	p, err := bars("Service create to full reachability (TCG), medians and runs", "seconds", ss)
	if err != nil {
		return fmt.Errorf("swarm: %w", err)
	}
	return rp.image(p, "swarm.svg", "swarm service convergence")
}

// rank orders vxsec first, then overlay, then the rest.
func rank(driver string) int {
	if i := slices.Index(networkOrder(), driver); i >= 0 {
		return i
	}
	return len(networkOrder())
}
