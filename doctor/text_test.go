package doctor

import (
	"strings"
	"testing"
)

// TestWriteText: the header names the host, members and paths; faults come
// before notes, each with its fix; a clean report says so.
func TestWriteText(t *testing.T) {
	cases := []struct {
		name string
		r    Report
		want []string
		not  []string
	}{
		{"clean", Report{Host: h1, Members: 3, Answered: 3, Paths: 6},
			[]string{"vxsec doctor on 198.18.0.1: 3 members, 6 paths checked\n", "No problems found."}, []string{"Faults", "Notes", "answered"}},
		{"fault-and-note", Report{Host: h1, Members: 3, Answered: 2, Paths: 2, Findings: []Finding{
			{Fault, h3, "not alive", "start it"}, {Note, h2, "left", "nothing"}}},
			[]string{"(2 of 3 members answered)", "Faults: 1\n  ✗ 198.18.0.3: not alive\n      fix: start it", "Notes: 1\n  - 198.18.0.2: left\n      fix: nothing"},
			[]string{"No problems"}},
		{"one host", Report{Host: h1, Members: 1, Answered: 1},
			[]string{"vxsec doctor on 198.18.0.1: 1 member, 0 paths checked\n", "No problems found."}, []string{"1 members"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			tc.r.WriteText(&b)
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("missing %q in:\n%s", w, b.String())
				}
			}
			for _, w := range tc.not {
				if strings.Contains(b.String(), w) {
					t.Errorf("unexpected %q in:\n%s", w, b.String())
				}
			}
		})
	}
}
