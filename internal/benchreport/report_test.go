package benchreport

import (
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vxsec/vxsec/internal/benchdata"
)

// sources points at the sample results in testdata/<name>, laid out as
// `make bench` lays them out under build/.
func sources(name string) benchdata.Sources {
	dir := filepath.Join("testdata", name)
	return benchdata.Sources{
		Dir:        filepath.Join(dir, "bench"),
		DockerGlob: filepath.Join(dir, "bench-docker-*.tsv"),
		SwarmTSV:   filepath.Join(dir, "swarm", "bench.tsv"),
	}
}

func TestRender(t *testing.T) {
	full, err := benchdata.Load(sources("full"))
	if err != nil {
		t.Fatal(err)
	}
	// Results with some benchmarks gone: the page must say so of each.
	partial := full
	partial.Scale, partial.Sim, partial.Encryption, partial.Swarm, partial.Docker = nil, nil, nil, nil, nil
	noWire := full
	sc := *full.Scale
	sc.Runs = slices.Clone(sc.Runs)
	for i := range sc.Runs {
		sc.Runs[i].WireBytes = nil
	}
	noWire.Scale = &sc
	// The summary judges the goal's size (50 hosts): a 100-host run that
	// misses is shown missed in its row, not in the summary; a 50-host
	// run that misses is missed in both.
	bigMissed, goalMissed := full, full
	for _, c := range []struct {
		res   *benchdata.Results
		hosts int
	}{{&bigMissed, 100}, {&goalMissed, 50}} {
		s := *full.Scale
		s.Runs = slices.Clone(s.Runs)
		for i := range s.Runs {
			if s.Runs[i].Hosts == c.hosts {
				s.Runs[i].ConvergedS = 39.3
			}
		}
		c.res.Scale = &s
	}

	allPlots := []string{"convergence-cdf.svg", "scale-cdf.svg", "scale-convergence.svg", "scale-cpu.svg", "scale-bytes.svg", "sim-convergence.svg", "sim-cost.svg",
		"throughput.svg", "docker-runs.svg", "encryption-throughput.svg", "swarm.svg"}
	for _, tc := range []struct {
		name    string
		results benchdata.Results
		plots   []string
		// present and absent are section titles (as the page names them).
		present, absent []string
		// also must appear on the page.
		also []string
	}{
		{
			name:    "every benchmark",
			results: full,
			plots:   allPlots,
			present: []string{"Convergence", "Scale", "Scale, simulated", "Throughput", "Container start", "Encryption", "Swarm service convergence"},
			also: []string{"| 200 | 41.00 s |", "Docker 20.10", "Docker 28", "bench-docker-28.tsv", "vxsec/overlay", "vxsec-internal/bridge-local", "dnsrr",
				"| 10 | 200 (20) |", "| 100 | 2000 (20) |", "ratio", "Sample CPU", "commit `abc1234`", "SMOKE RUN",
				"vxsec/hand-built: **0.961**", "during rotations / at rest: **0.948**", "| during 10 rotations | 55.0 | 3 |"},
		},
		{
			name:    "half of them",
			results: partial,
			plots:   []string{"convergence-cdf.svg", "throughput.svg"},
			present: []string{"Convergence", "Throughput"},
			absent:  []string{"Scale", "Scale, simulated", "Container start", "Encryption", "Swarm service convergence"},
		},
		{
			name:    "nothing",
			results: benchdata.Results{},
			absent:  []string{"Convergence", "Scale", "Scale, simulated", "Throughput", "Container start", "Encryption", "Swarm service convergence"},
		},
		{
			name:    "scale: 100 hosts missed, 50 met",
			results: bigMissed,
			plots:   allPlots,
			also:    []string{"| Scale: hosts × endpoints | 50 hosts × 20: 2.44 s from the first CreateEndpoint, 0.78 s after the last Join | < 5 s, < 2 s after the last Join, RSS < 40 MiB | met |", "| 100 | 2000 (20) | 39.30 s"},
		},
		{
			name:    "scale: 50 hosts missed",
			results: goalMissed,
			plots:   allPlots,
			also:    []string{"| Scale: hosts × endpoints | 50 hosts × 20: 39.30 s from the first CreateEndpoint, 0.78 s after the last Join | < 5 s, < 2 s after the last Join, RSS < 40 MiB | **missed** |"},
		},
		{
			name:    "scale without bytes on the wire",
			results: noWire,
			plots:   slices.DeleteFunc(slices.Clone(allPlots), func(s string) bool { return s == "scale-bytes.svg" }),
			also:    []string{"not measured"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			info := Info{Commit: "abc1234", Date: time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC),
				Machine: benchdata.Machine{CPUs: 2, CPUModel: "Sample CPU"}, Note: "SMOKE RUN", Sources: sources("full")}
			written, err := Render(dir, tc.results, info)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range tc.plots {
				if !slices.Contains(written, p) {
					t.Errorf("%s not reported as written (wrote %v)", p, written)
				}
				checkSVG(t, filepath.Join(dir, p))
			}
			for _, p := range allPlots {
				if slices.Contains(tc.plots, p) {
					continue
				}
				if _, err := os.Stat(filepath.Join(dir, p)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s written for a benchmark without results (stat: %v)", p, err)
				}
			}
			b, err := os.ReadFile(filepath.Join(dir, IndexName))
			if err != nil {
				t.Fatal(err)
			}
			page := string(b)
			for _, p := range tc.plots {
				if !strings.Contains(page, "]("+p+")") {
					t.Errorf("the page does not link %s", p)
				}
			}
			for _, title := range tc.present {
				sec := sectionOf(t, page, title)
				if strings.Contains(sec, "Not run in this report") {
					t.Errorf("section %q says not run although it has results:\n%s", title, sec)
				}
				if !strings.Contains(sec, "| ---") {
					t.Errorf("section %q has no table:\n%s", title, sec)
				}
				if !strings.Contains(sec, "Method") {
					t.Errorf("section %q has no method:\n%s", title, sec)
				}
			}
			for _, title := range tc.absent {
				if sec := sectionOf(t, page, title); !strings.Contains(sec, "Not run in this report") {
					t.Errorf("section %q does not say it was not run:\n%s", title, sec)
				}
			}
			for _, s := range tc.also {
				if !strings.Contains(page, s) {
					t.Errorf("the page lacks %q", s)
				}
			}
			if t.Failed() {
				t.Logf("the page:\n%s", page)
			}
		})
	}
}

// sectionOf is the page's "## " section whose title starts with title.
func sectionOf(t *testing.T, page, title string) string {
	t.Helper()
	for _, sec := range strings.Split(page, "\n## ")[1:] {
		if strings.HasPrefix(sec, title) {
			return sec
		}
	}
	t.Errorf("the page has no section %q", title)
	return ""
}

// checkSVG parses a file as XML and wants an <svg> root with drawing in it.
func checkSVG(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	d := xml.NewDecoder(f)
	var root string
	elements := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Errorf("%s: not valid XML: %v", path, err)
			return
		}
		if se, ok := tok.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
			}
			elements++
		}
	}
	if root != "svg" {
		t.Errorf("%s: root element %q, want svg", path, root)
	}
	// An empty plot is a handful of elements; a drawn one, axes, ticks,
	// labels and data, is many more.
	if elements < 20 {
		t.Errorf("%s: %d elements: nothing drawn", path, elements)
	}
}

func TestStats(t *testing.T) {
	for _, tc := range []struct {
		in                 []float64
		p50, p90, p99, med float64
	}{
		{[]float64{3, 1, 2}, 2, 3, 3, 2},
		{[]float64{4, 1, 3, 2}, 2, 4, 4, 2.5},
		{[]float64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}, 5, 9, 10, 5.5},
	} {
		s := summarize(tc.in)
		if s.p50 != tc.p50 || s.p90 != tc.p90 || s.p99 != tc.p99 || s.med != tc.med || s.n != len(tc.in) {
			t.Errorf("summarize(%v) = %+v, want p50 %v p90 %v p99 %v median %v", tc.in, s, tc.p50, tc.p90, tc.p99, tc.med)
		}
	}
}
