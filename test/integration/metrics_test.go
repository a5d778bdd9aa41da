//go:build integration

package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/vxsec/vxsec/lab"
)

const metricsAddr = "127.0.0.1:7949"

// scrape reads h's metrics as Prometheus would, from inside its namespace.
func scrape(t *testing.T, h *lab.Host) map[string]*dto.MetricFamily {
	t.Helper()
	body, err := h.HTTPGet(ctxT(t), metricsAddr, "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s's /metrics is not Prometheus text: %v\n%s", h.Name, err, body)
	}
	return fams
}

// metricValue is the value of the series of family name whose labels
// include want (nil: the only series); ok false if there is none.
func metricValue(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.Metric {
		match := true
		for k, v := range want {
			found := false
			for _, l := range m.Label {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			match = match && found
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Summary != nil:
			return float64(m.Summary.GetSampleCount()), true
		}
	}
	return 0, false
}

// TestMetricsAndStatus: a lab cluster's metrics scraped as Prometheus
// would (VXSEC_METRICS_ADDR's default, on the host's loopback), and its
// status for people. The scrape must show the cluster as it is (members,
// networks, endpoints, tables taken, reconciles, the API calls made, with
// a refused call counted as an error and not before), serf's and
// memberlist's own metrics bridged, and no label that names an endpoint or
// a network (cardinality bounded by the cluster). /status and `vxsec status`
// print the same for people; /status.json decodes.
func TestMetricsAndStatus(t *testing.T) {
	c := newCluster(t, 2)
	h1, h2 := c.hosts[0], c.hosts[1]
	const vni = 7951
	ids := createEverywhere(t, c.hosts, "met", vni, "10.84.0.0/24")
	c1 := mustRun(t, h1, "m1", ids[h1], "10.84.0.11/24")
	c2 := mustRun(t, h2, "m2", ids[h2], "10.84.0.12/24")
	for _, h := range c.hosts {
		waitCounts(t, h, vni, 1, 1, 10*time.Second)
	}
	reachFast(t, c1, c2.IP())

	before := scrape(t, h1)
	if n, _ := metricValue(before, "vxsec_api_call_errors_total", map[string]string{"method": "NetworkDriver.CreateNetwork"}); n != 0 {
		t.Fatalf("CreateNetwork errors counted before any refusal: %v", n)
	}
	err := h1.Client().CreateNetwork(ctxT(t), "bad", map[string]string{"vni": "abc"}, "10.85.0.0/24", "")
	if err == nil {
		t.Fatal("a network with vni=abc was accepted")
	}

	var fams map[string]*dto.MetricFamily
	var problems []string
	if err := lab.WaitFor(ctxT(t), 10*time.Second, func() error {
		fams, problems = scrape(t, h1), nil
		for _, w := range []struct {
			name   string
			labels map[string]string
			ok     func(float64) bool
			want   string
		}{
			{"vxsec_cluster_members", map[string]string{"state": "alive"}, func(v float64) bool { return v == 2 }, "2"},
			{"vxsec_networks", nil, func(v float64) bool { return v == 1 }, "1"},
			{"vxsec_endpoints", map[string]string{"where": "local"}, func(v float64) bool { return v == 1 }, "1"},
			{"vxsec_endpoints", map[string]string{"where": "remote"}, func(v float64) bool { return v == 1 }, "1"},
			{"vxsec_api_call_duration_seconds", map[string]string{"method": "NetworkDriver.CreateEndpoint"}, func(v float64) bool { return v >= 1 }, "≥ 1 call"},
			{"vxsec_api_call_duration_seconds", map[string]string{"method": "NetworkDriver.Join"}, func(v float64) bool { return v >= 1 }, "≥ 1 call"},
			{"vxsec_api_call_errors_total", map[string]string{"method": "NetworkDriver.CreateNetwork"}, func(v float64) bool { return v == 1 }, "1"},
			{"vxsec_tables_taken_total", nil, func(v float64) bool { return v >= 1 }, "≥ 1"},
			{"vxsec_peer_passes_total", nil, func(v float64) bool { return v >= 1 }, "≥ 1"},
			{"vxsec_reconcile_runs_total", nil, func(v float64) bool { return v >= 1 }, "≥ 1"},
			{"vxsec_lock_drops_total", map[string]string{"lock": "non-member"}, func(v float64) bool { return v == 0 }, "0"},
			{"vxsec_ipsec_active", nil, func(v float64) bool { return v == 0 }, "0 (no encrypted network)"},
		} {
			v, ok := metricValue(fams, w.name, w.labels)
			if !ok || !w.ok(v) {
				problems = append(problems, fmt.Sprintf("%s%v = %v (present %v), want %s", w.name, w.labels, v, ok, w.want))
			}
		}
		if len(problems) > 0 {
			return fmt.Errorf("%s", strings.Join(problems, "; "))
		}
		return nil
	}); err != nil {
		t.Fatalf("h1's metrics: %v", err)
	}
	var bridged []string
	for name := range fams {
		if strings.HasPrefix(name, "vxsec_memberlist_") || strings.HasPrefix(name, "vxsec_serf_") {
			bridged = append(bridged, name)
		}
	}
	if len(bridged) == 0 {
		var names []string
		for name := range fams {
			names = append(names, name)
		}
		t.Fatalf("no serf or memberlist metric bridged; families: %v", names)
	}
	// No label names an endpoint or a network: their IDs are long hex.
	id := regexp.MustCompile(`^[0-9a-f]{24,}$`)
	series := 0
	for name, f := range fams {
		if !strings.HasPrefix(name, "vxsec_") {
			continue
		}
		for _, m := range f.Metric {
			series++
			for _, l := range m.Label {
				if id.MatchString(l.GetValue()) || strings.Contains(l.GetValue(), ids[h1]) {
					t.Errorf("%s has a label naming an ID: %s=%q", name, l.GetName(), l.GetValue())
				}
			}
		}
	}
	slices.Sort(bridged)
	t.Logf("h1's scrape: %d families, %d vxsec series; %d bridged from serf and memberlist (%s ...); the refused CreateNetwork counted as 1 error",
		len(fams), series, len(bridged), strings.Join(bridged[:min(3, len(bridged))], ", "))

	text, err := h1.HTTPGet(ctxT(t), metricsAddr, "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"vxsec on " + h1.Addr.String(), "Members: 2, 2 alive", "Networks: 1", ids[h1][:min(12, len(ids[h1]))], "Docker's CreateNetwork failed"} {
		if !strings.Contains(string(text), want) {
			t.Errorf("/status does not say %q:\n%s", want, text)
		}
	}
	raw, err := h1.HTTPGet(ctxT(t), metricsAddr, "/status.json")
	if err != nil {
		t.Fatal(err)
	}
	var st lab.Status
	if err := json.Unmarshal(raw, &st); err != nil || st.Node != h1.Addr.String() {
		t.Errorf("/status.json: node %q, %v:\n%s", st.Node, err, raw)
	}
	cli, err := exec.CommandContext(ctxT(t), binary(t), "status", "--socket", h1.Socket).CombinedOutput()
	if err != nil || !strings.Contains(string(cli), "Members: 2, 2 alive") {
		t.Errorf("vxsec status: %v:\n%s", err, cli)
	}
	t.Logf("vxsec status on h1:\n%s", cli)
}
