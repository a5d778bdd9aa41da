//go:build e2e

package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestStatusOnTheHost: on a host with only Docker and the installed
// plugin, one command shows the state (docs/operations.md): the plugin
// serves its status for people and its metrics on the host's loopback
// (VXSEC_METRICS_ADDR's default), with no plugin ID to look up. The status
// names the network and its local endpoint; the metrics count them.
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
}
