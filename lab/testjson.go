package lab

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// Reading `go test -json` (test2json) streams: the swarm lab runs its test
// binary inside the VM through test2json, prints the events as they come
// (RenderTestEvents) and counts the tests from the saved stream afterwards
// (ReadTestReport), on the host.

// TestEvent is one event of a test2json stream.
type TestEvent struct {
	Time    time.Time
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

// TestOutcome is one test's (or subtest's) result.
type TestOutcome struct {
	Name string
	// Result is pass, fail or skip; "" for a test that started and never
	// ended (the binary died or timed out).
	Result  string
	Elapsed float64
	// Output is what the test printed, its === and --- lines left out.
	Output []string
}

// Leaf reports whether no other test of r is a subtest of o.
func (r *TestReport) Leaf(o *TestOutcome) bool {
	return !r.parents[o.Name]
}

// TestReport is what a test2json stream says.
type TestReport struct {
	// Tests in the order they started.
	Tests []*TestOutcome
	// Package is the binary's own result (pass, fail; "" if it never said).
	Package string
	// Malformed counts the lines that were no event.
	Malformed int

	byName  map[string]*TestOutcome
	parents map[string]bool
}

// ReadTestReport reads a test2json stream.
func ReadTestReport(rd io.Reader) (*TestReport, error) {
	r := &TestReport{byName: map[string]*TestOutcome{}, parents: map[string]bool{}}
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var ev TestEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			r.Malformed++
			continue
		}
		r.add(ev)
	}
	return r, sc.Err()
}

func (r *TestReport) add(ev TestEvent) {
	if ev.Test == "" {
		if ev.Action == "pass" || ev.Action == "fail" || ev.Action == "skip" {
			r.Package = ev.Action
		}
		return
	}
	o := r.byName[ev.Test]
	if o == nil {
		o = &TestOutcome{Name: ev.Test}
		r.byName[ev.Test] = o
		r.Tests = append(r.Tests, o)
		for p := ev.Test; strings.Contains(p, "/"); {
			p = p[:strings.LastIndexByte(p, '/')]
			r.parents[p] = true
		}
	}
	switch ev.Action {
	case "pass", "fail", "skip":
		o.Result, o.Elapsed = ev.Action, ev.Elapsed
	case "output":
		for _, l := range strings.Split(strings.TrimRight(ev.Output, "\n"), "\n") {
			t := strings.TrimSpace(l)
			if strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- ") || t == "" {
				continue
			}
			o.Output = append(o.Output, l)
		}
	}
}

// Counts counts the tests (subtests included) by result; unfinished ones
// started and never ended.
func (r *TestReport) Counts() (passed, failed, skipped, unfinished int) {
	for _, o := range r.Tests {
		switch o.Result {
		case "pass":
			passed++
		case "fail":
			failed++
		case "skip":
			skipped++
		default:
			unfinished++
		}
	}
	return
}

// OK reports whether the run proves something and nothing went wrong: at
// least one test passed, none failed, was skipped or never ended, and the
// binary did not fail.
func (r *TestReport) OK() bool {
	p, f, s, u := r.Counts()
	return p > 0 && f == 0 && s == 0 && u == 0 && r.Package != "fail"
}

// Bad lists the tests that failed, were skipped or never ended, leaves first
// in the order they started, then their parents.
func (r *TestReport) Bad() []*TestOutcome {
	var leaves, parents []*TestOutcome
	for _, o := range r.Tests {
		if o.Result == "pass" {
			continue
		}
		if r.Leaf(o) {
			leaves = append(leaves, o)
		} else {
			parents = append(parents, o)
		}
	}
	return append(leaves, parents...)
}

// WriteResults writes one line per test: "ok   [name] N.Ns", "FAIL [name]
// N.Ns", "SKIP [name]", "FAIL [name] never ended".
func (r *TestReport) WriteResults(w io.Writer) {
	for _, o := range r.Tests {
		switch o.Result {
		case "pass":
			fmt.Fprintf(w, "ok   [%s] %.1fs\n", o.Name, o.Elapsed)
		case "fail":
			fmt.Fprintf(w, "FAIL [%s] %.1fs\n", o.Name, o.Elapsed)
		case "skip":
			fmt.Fprintf(w, "SKIP [%s] %.1fs\n", o.Name, o.Elapsed)
		default:
			fmt.Fprintf(w, "FAIL [%s] never ended\n", o.Name)
		}
	}
}

// WriteSummary writes the durations of the tests at depth (0: top-level
// tests, 1: their subtests...), what went wrong with the output of each
// such test, and the closing count line "<title>: N passed, N failed, N
// skipped".
func (r *TestReport) WriteSummary(w io.Writer, title string, depth int) {
	fmt.Fprintf(w, "---------------- %s: tests at depth %d ----------------\n", title, depth)
	for _, o := range r.Tests {
		if strings.Count(o.Name, "/") != depth {
			continue
		}
		res := strings.ToUpper(o.Result)
		if res == "" {
			res = "NEVER ENDED"
		}
		fmt.Fprintf(w, "  %-44s %8.1f s  %s\n", o.Name, o.Elapsed, res)
	}
	bad := r.Bad()
	if len(bad) > 0 {
		fmt.Fprintf(w, "---------------- %s: %d test(s) not passed ----------------\n", title, len(bad))
		for _, o := range bad {
			res := strings.ToUpper(o.Result)
			if res == "" {
				res = "NEVER ENDED"
			}
			fmt.Fprintf(w, "%s %s\n", res, o.Name)
			if r.Leaf(o) {
				out := o.Output
				if len(out) > 12 {
					out = out[len(out)-12:]
				}
				for _, l := range out {
					fmt.Fprintf(w, "      %s\n", strings.TrimSpace(l))
				}
			}
		}
	}
	if r.Malformed > 0 {
		fmt.Fprintf(w, "(%d line(s) of the stream were no test2json event)\n", r.Malformed)
	}
	p, f, s, u := r.Counts()
	if u > 0 {
		fmt.Fprintf(w, "%d test(s) never ended (the binary died or timed out): counted as failed\n", u)
	}
	fmt.Fprintf(w, "%s: %d passed, %d failed, %d skipped\n", title, p, f+u, s)
}

// RenderTestEvents copies a test2json stream to save, line by line as it
// comes, and prints the tests' output to console, each line prefixed with
// the seconds since the first event. Lines that are no event are printed
// as they are.
func RenderTestEvents(rd io.Reader, console, save io.Writer) error {
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	var t0 time.Time
	atStart := true
	for sc.Scan() {
		line := sc.Bytes()
		if _, err := save.Write(append(line, '\n')); err != nil {
			return err
		}
		var ev TestEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			fmt.Fprintf(console, "%s\n", line)
			continue
		}
		if t0.IsZero() && !ev.Time.IsZero() {
			t0 = ev.Time
		}
		if ev.Action != "output" || ev.Output == "" {
			continue
		}
		var b strings.Builder
		for _, c := range ev.Output {
			if atStart {
				fmt.Fprintf(&b, "[%7.1f s] ", ev.Time.Sub(t0).Seconds())
				atStart = false
			}
			b.WriteRune(c)
			if c == '\n' {
				atStart = true
			}
		}
		io.WriteString(console, b.String())
	}
	return sc.Err()
}
