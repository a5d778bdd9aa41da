// Package benchreport renders vxsec's benchmark results (package benchdata)
// as a report a person can look at: a Markdown page with, for every
// benchmark, its method in a sentence or two, a table of its figures, its
// goal and whether it is met, and SVG plots drawn with gonum's plot. A
// benchmark without results is listed as not run, never left out, so that a
// short report cannot pass for a complete one.
package benchreport
