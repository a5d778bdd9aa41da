//go:build e2e

package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vxsec/vxsec/ipsec"
)

// TestStatusOnTheHost: on a host with only Docker and the installed
// plugin, one command shows the state (docs/operations.md): the plugin
// serves its status for people and its metrics on the host's loopback
// (VXSEC_METRICS_ADDR's default), with no plugin ID to look up. The status
// names the network and its local endpoint; the metrics count them. The
// doctor runs from the same address: this host alone, its own answer
// read, no fault, and what it says of the kernel is what the kernel is.
func TestStatusOnTheHost(t *testing.T) {
	requirePlugin(t)
	n := createNetwork(t, "st", "--subnet", "10.36.0.0/24")
	runContainer(t, n)
	get := func(path string) string {
		t.Helper()
		c := http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get("http://127.0.0.1:7949" + path)
		if err != nil {
			t.Fatalf("curl -s http://127.0.0.1:7949%s: %v%s", path, err, pluginLogHint())
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s\n%s", path, resp.Status, b)
		}
		return string(b)
	}
	status := get("/status")
	for _, want := range []string{"vxsec on ", "Networks: ", short(n.ID)} {
		if !strings.Contains(status, want) {
			t.Errorf("/status does not say %q:\n%s", want, status)
		}
	}
	metrics := get("/metrics")
	for _, want := range []string{"vxsec_networks ", `vxsec_endpoints{where="local"} `, `vxsec_api_call_duration_seconds_count{method="NetworkDriver.Join"} `} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics has no %q", want)
		}
	}
	t.Logf("curl -s http://127.0.0.1:7949/status:\n%s", status)

	text := get("/doctor")
	if !strings.Contains(text, "vxsec doctor on ") {
		t.Errorf("/doctor is no report:\n%s", text)
	}
	var rep struct {
		Members, Answered int
		Findings          []struct{ Severity, Where, What string }
	}
	if err := json.Unmarshal([]byte(get("/doctor.json")), &rep); err != nil {
		t.Fatalf("/doctor.json: %v", err)
	}
	if rep.Members != 1 || rep.Answered != 1 {
		t.Errorf("/doctor.json: %d members, %d answered; want this host alone, answering", rep.Members, rep.Answered)
	}
	lacks := false
	for _, f := range rep.Findings {
		if f.Severity == "fault" {
			t.Errorf("the doctor names a fault on a working host: %s: %s", f.Where, f.What)
		}
		lacks = lacks || strings.Contains(f.What, "lacks IPsec ESP")
	}
	// The control: the doctor's view of the kernel is the kernel's.
	if esp, _ := ipsec.ProbeFeatures(); (esp != nil) != lacks {
		t.Errorf("the doctor says the kernel lacks ESP: %v; the test's own probe: %v", lacks, esp)
	}
	t.Logf("curl -s http://127.0.0.1:7949/doctor:\n%s", text)
}
