package lab

import (
	"bytes"
	"strings"
	"testing"
)

const stream = `{"Time":"2026-01-01T10:00:00Z","Action":"start","Package":"p"}
{"Time":"2026-01-01T10:00:00Z","Action":"run","Package":"p","Test":"TestA"}
{"Time":"2026-01-01T10:00:00Z","Action":"output","Package":"p","Test":"TestA","Output":"=== RUN   TestA\n"}
{"Time":"2026-01-01T10:00:01Z","Action":"run","Package":"p","Test":"TestA/one"}
{"Time":"2026-01-01T10:00:01Z","Action":"output","Package":"p","Test":"TestA/one","Output":"    a_test.go:10: ok: fine\n"}
{"Time":"2026-01-01T10:00:02Z","Action":"pass","Package":"p","Test":"TestA/one","Elapsed":1}
{"Time":"2026-01-01T10:00:02Z","Action":"run","Package":"p","Test":"TestA/two"}
{"Time":"2026-01-01T10:00:02Z","Action":"output","Package":"p","Test":"TestA/two","Output":"    a_test.go:20: it broke\n"}
{"Time":"2026-01-01T10:00:03Z","Action":"output","Package":"p","Test":"TestA/two","Output":"--- FAIL: TestA/two (1.00s)\n"}
{"Time":"2026-01-01T10:00:03Z","Action":"fail","Package":"p","Test":"TestA/two","Elapsed":1}
{"Time":"2026-01-01T10:00:03Z","Action":"run","Package":"p","Test":"TestA/three"}
{"Time":"2026-01-01T10:00:03Z","Action":"skip","Package":"p","Test":"TestA/three"}
{"Time":"2026-01-01T10:00:03Z","Action":"run","Package":"p","Test":"TestA/four"}
{"Time":"2026-01-01T10:00:04Z","Action":"fail","Package":"p","Test":"TestA","Elapsed":4}
not json
{"Time":"2026-01-01T10:00:04Z","Action":"fail","Package":"p","Elapsed":4}
`

func TestReadTestReport(t *testing.T) {
	r, err := ReadTestReport(strings.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	p, f, s, u := r.Counts()
	if p != 1 || f != 2 || s != 1 || u != 1 {
		t.Fatalf("counts %d passed, %d failed, %d skipped, %d unfinished; want 1, 2, 1, 1", p, f, s, u)
	}
	if r.OK() || r.Package != "fail" || r.Malformed != 1 {
		t.Fatalf("OK %v, package %q, malformed %d", r.OK(), r.Package, r.Malformed)
	}
	var names []string
	for _, o := range r.Bad() {
		names = append(names, o.Name)
	}
	if got := strings.Join(names, " "); got != "TestA/two TestA/three TestA/four TestA" {
		t.Fatalf("bad tests %q", got)
	}
	if out := r.byName["TestA/two"].Output; len(out) != 1 || !strings.Contains(out[0], "it broke") {
		t.Fatalf("TestA/two's output %q", out)
	}
	var res, sum bytes.Buffer
	r.WriteResults(&res)
	for _, want := range []string{"ok   [TestA/one] 1.0s", "FAIL [TestA/two] 1.0s", "SKIP [TestA/three]", "FAIL [TestA/four] never ended"} {
		if !strings.Contains(res.String(), want) {
			t.Errorf("results lack %q:\n%s", want, res.String())
		}
	}
	r.WriteSummary(&sum, "lab", 1)
	if !strings.HasSuffix(sum.String(), "lab: 1 passed, 3 failed, 1 skipped\n") || !strings.Contains(sum.String(), "it broke") {
		t.Errorf("summary:\n%s", sum.String())
	}

	ok := strings.ReplaceAll(strings.ReplaceAll(stream, `"fail"`, `"pass"`), `"skip"`, `"pass"`)
	ok = strings.Replace(ok, `{"Time":"2026-01-01T10:00:03Z","Action":"run","Package":"p","Test":"TestA/four"}`+"\n", "", 1)
	r, _ = ReadTestReport(strings.NewReader(ok))
	if !r.OK() {
		t.Errorf("an all-pass stream is not OK: %+v", r.Bad())
	}
	r, _ = ReadTestReport(strings.NewReader(""))
	if r.OK() {
		t.Errorf("an empty stream is OK")
	}
}

func TestRenderTestEvents(t *testing.T) {
	var console, save bytes.Buffer
	if err := RenderTestEvents(strings.NewReader(stream), &console, &save); err != nil {
		t.Fatal(err)
	}
	if save.String() != stream {
		t.Errorf("the saved stream differs")
	}
	for _, want := range []string{"[    0.0 s] === RUN   TestA\n", "[    1.0 s]     a_test.go:10: ok: fine\n", "[    3.0 s] --- FAIL: TestA/two (1.00s)\n", "not json\n"} {
		if !strings.Contains(console.String(), want) {
			t.Errorf("console lacks %q:\n%s", want, console.String())
		}
	}
}
