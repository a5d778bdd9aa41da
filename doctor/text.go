package doctor

import (
	"fmt"
	"io"
)

// WriteText prints the report for people: a header line, then faults and
// notes, each with where, what and the fix.
func (r Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "vxsec doctor on %s: %s, %s checked\n", r.Host, count(r.Members, "member"), count(r.Paths, "path"))
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

// count is "1 member", "3 members".
func count(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
