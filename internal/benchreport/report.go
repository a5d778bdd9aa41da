package benchreport

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gonum.org/v1/plot"

	"github.com/vxsec/vxsec/internal/benchdata"
)

// IndexName is the Markdown page Render writes.
const IndexName = "README.md"

// Info is where and from what the report itself is made.
type Info struct {
	// Commit is the tree's `git describe --always --dirty`.
	Commit  string
	Date    time.Time
	Machine benchdata.Machine
	// Note, when set, opens the report (say, that it comes from a smoke run).
	Note string
	// Sources are named in the report, so that a reader finds the raw files.
	Sources benchdata.Sources
}

// report is one rendering: the page being written and the plots saved.
type report struct {
	dir   string
	src   benchdata.Sources
	md    strings.Builder
	plots []string
	// rows of the summary at the top, one per benchmark.
	rows []summaryRow
}

type summaryRow struct {
	benchmark, headline, goal, status string
}

// Render writes the report (IndexName and its SVG plots) into dir, making
// it if needed, and returns the names of the files it wrote.
func Render(dir string, r benchdata.Results, info Info) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("report directory: %w", err)
	}
	rp := &report{dir: dir, src: info.Sources}
	var errs []error
	for _, section := range []func() error{
		func() error { return rp.convergence(r.Convergence) },
		func() error { return rp.scale(r.Scale) },
		func() error { return rp.sim(r.Sim) },
		func() error { return rp.throughput(r.Throughput) },
		func() error { return rp.docker(r.Docker) },
		func() error { return rp.encryption(r.Encryption) },
		func() error { return rp.swarm(r.Swarm) },
	} {
		errs = append(errs, section())
	}
	if err := errors.Join(errs...); err != nil {
		return rp.plots, err
	}
	page := rp.page(info)
	// 0644, not atomicfile's 0600: the page is documentation, for everyone.
	if err := os.WriteFile(filepath.Join(dir, IndexName), []byte(page), 0o644); err != nil {
		return rp.plots, fmt.Errorf("writing %s: %w", filepath.Join(dir, IndexName), err)
	}
	return append(rp.plots, IndexName), nil
}

// page puts the header and the summary in front of the sections.
func (rp *report) page(info Info) string {
	var b strings.Builder
	b.WriteString("# vxsec benchmark report\n\n")
	if info.Note != "" {
		fmt.Fprintf(&b, "> **%s**\n\n", info.Note)
	}
	fmt.Fprintf(&b, "Rendered by `vxlab report` on %s from commit `%s`, on %s. ", stamp(info.Date), info.Commit, machine(info.Machine))
	b.WriteString("Each benchmark below says when, with which vxsec and on what machine it was measured. ")
	b.WriteString("Benchmarks are not tests: nothing fails on a figure. `make bench` runs them all and renders this page; ")
	b.WriteString("`make bench-report` renders it again from the results on disk.\n\n")
	b.WriteString("| benchmark | figure | goal | status |\n| --- | --- | --- | --- |\n")
	for _, r := range rp.rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", r.benchmark, r.headline, r.goal, r.status)
	}
	b.WriteString("\n")
	b.WriteString(rp.md.String())
	return b.String()
}

func machine(m benchdata.Machine) string {
	s := fmt.Sprintf("%d CPUs", m.CPUs)
	if m.CPUModel != "" {
		s += " (" + m.CPUModel + ")"
	}
	if m.Kernel != "" {
		s += ", kernel " + m.Kernel
	}
	return s
}

// measured is the line that says where a result comes from.
func (rp *report) measured(m benchdata.Meta, file string) {
	fmt.Fprintf(&rp.md, "Measured %s with vxsec `%s` on %s. Raw figures: `%s`.\n\n",
		stamp(m.Date), m.VxsecVersion, machine(m.Machine), file)
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "at an unknown time"
	}
	return t.UTC().Format("2006-01-02 15:04 MST")
}

func (rp *report) section(title string) {
	fmt.Fprintf(&rp.md, "## %s\n\n", title)
}

// notRun lists a benchmark without results, and how to make them
// (Markdown).
func (rp *report) notRun(title, what, how string) {
	rp.section(title)
	fmt.Fprintf(&rp.md, "Not run in this report: no %s. It is made by %s.\n\n", what, how)
	rp.rows = append(rp.rows, summaryRow{benchmark: title, headline: "–", goal: "–", status: "not run in this report"})
}

// image saves p as name and links it from the page.
func (rp *report) image(p *plot.Plot, name, alt string) error {
	if err := save(p, rp.dir, name); err != nil {
		return err
	}
	rp.plots = append(rp.plots, name)
	fmt.Fprintf(&rp.md, "![%s](%s)\n\n", alt, name)
	return nil
}

func (rp *report) resultFile(name string) string {
	return filepath.Join(rp.src.Dir, name+".json")
}

// status says whether a goal is met, and by what figure when it is not.
func status(met bool) string {
	if met {
		return "met"
	}
	return "**missed**"
}

func msf(seconds float64) string { return fmt.Sprintf("%.0f ms", seconds*1000) }
func sf(seconds float64) string  { return fmt.Sprintf("%.2f s", seconds) }
func mibf(b int64) string        { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// joined lists figures for a table cell.
func joined(v []float64, f func(float64) string) string {
	var s []string
	for _, x := range v {
		s = append(s, f(x))
	}
	return strings.Join(s, ", ")
}
