package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vxsec/vxsec/internal/benchdata"
)

// TestRunReport: the command renders the sample results of package
// benchreport, and refuses to render around a damaged file.
func TestRunReport(t *testing.T) {
	sample := filepath.Join("..", "..", "internal", "benchreport", "testdata", "full")
	src := benchdata.Sources{
		Dir:        filepath.Join(sample, "bench"),
		DockerGlob: filepath.Join(sample, "bench-docker-*.tsv"),
		SwarmTSV:   filepath.Join(sample, "swarm", "bench.tsv"),
	}
	out := t.TempDir()
	if err := runReport(io.Discard, reportOpts{src: src, out: out, note: "a test"}); err != nil {
		t.Fatal(err)
	}
	page, err := os.ReadFile(filepath.Join(out, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(page), "Not run") {
		t.Errorf("every sample result is there, yet the page says one was not run:\n%s", page)
	}

	damaged := t.TempDir()
	if err := os.WriteFile(filepath.Join(damaged, "scale.json"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = runReport(io.Discard, reportOpts{src: benchdata.Sources{Dir: damaged}, out: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "scale.json") {
		t.Errorf("a damaged scale.json: error %v, want one naming it", err)
	}
}
