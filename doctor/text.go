package doctor

import (
	"fmt"
	"io"
)

// WriteText prints the report for people: a header line, then faults and
// notes, each with where, what and the fix.
func (r Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "vxsec doctor on %s: %d members, %d paths checked\n", r.Host, r.Members, r.Paths)
	if r.Answered != r.Members {
		fmt.Fprintf(w, "(%d of %d members answered)\n", r.Answered, r.Members)
	}
	if len(r.Findings) == 0 {
		fmt.Fprintln(w, "\nNo problems found.")
		return
	}
	for _, sec := range []struct {
		sev   Severity
		title string
		mark  string
	}{{Fault, "Faults", "✗"}, {Note, "Notes", "-"}} {
		var n int
		for _, f := range r.Findings {
			if f.Severity == sec.sev {
				n++
			}
		}
		if n == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s: %d\n", sec.title, n)
		for _, f := range r.Findings {
			if f.Severity != sec.sev {
				continue
			}
			fmt.Fprintf(w, "  %s %s: %s\n      fix: %s\n", sec.mark, f.Where, f.What, f.Fix)
		}
	}
}
