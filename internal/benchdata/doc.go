// Package benchdata is the one definition of the raw figures of vxsec's
// benchmarks: what `vxlab bench` writes as JSON into a results directory,
// what the shell and lab benchmarks leave as TSV (scripts/bench.sh, the
// swarm lab), and how both are read back. `vxlab report` renders them
// (package benchreport); people and other tools can read the files as they
// are. Durations are float seconds (fields ending in _s) so that the files
// read without knowing Go's nanoseconds.
package benchdata
