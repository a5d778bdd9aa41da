//go:build integration

package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vxsec/vxsec/doctor"
	"github.com/vxsec/vxsec/ipsec"
	"github.com/vxsec/vxsec/lab"
)

// doctorReport runs the doctor on h through its metrics address, as
// `curl -s 127.0.0.1:7949/doctor.json` would on the host.
func doctorReport(t *testing.T, h *lab.Host) (doctor.Report, error) {
	t.Helper()
	raw, err := h.HTTPGet(ctxT(t), metricsAddr, "/doctor.json")
	if err != nil {
		return doctor.Report{}, err
	}
	var r doctor.Report
	if err := json.Unmarshal(raw, &r); err != nil {
		return r, fmt.Errorf("%s's /doctor.json: %w: %s", h.Name, err, raw)
	}
	return r, nil
}

// kernelNote is the one finding a healthy lab may show: this machine's
// kernel may lack ESP or GCM (docs/kernel-lab.md), which the doctor notes
// on every host while no network is encrypted.
func kernelNote(hosts []*lab.Host) (doctor.Finding, bool) {
	esp, gcm := ipsec.ProbeFeatures()
	if esp == nil && gcm == nil {
		return doctor.Finding{}, false
	}
	var where []string
	for _, h := range hosts {
		where = append(where, h.Addr.String())
	}
	return doctor.Finding{Severity: doctor.Note, Where: strings.Join(where, ", ")}, true
}

// expectFindings checks that r names exactly want (severity, where, and
// words of what), besides the kernel's note on this machine, and checked
// paths paths.
func expectFindings(r doctor.Report, hosts []*lab.Host, paths int, want []doctor.Finding) error {
	if note, ok := kernelNote(hosts); ok {
		want = append(want, doctor.Finding{Severity: note.Severity, Where: note.Where, What: "the kernel lacks"})
	}
	var problems []string
	if r.Paths != paths {
		problems = append(problems, fmt.Sprintf("%d paths checked, want %d", r.Paths, paths))
	}
	if r.Members != len(hosts) || r.Answered != len(hosts) {
		problems = append(problems, fmt.Sprintf("%d members, %d answered, want %d", r.Members, r.Answered, len(hosts)))
	}
	matched := make([]bool, len(r.Findings))
	for _, w := range want {
		found := false
		for i, f := range r.Findings {
			if !matched[i] && f.Severity == w.Severity && f.Where == w.Where && strings.Contains(f.What, w.What) {
				matched[i], found = true, true
				break
			}
		}
		if !found {
			problems = append(problems, fmt.Sprintf("no %s at %s saying %q", w.Severity, w.Where, w.What))
		}
	}
	for i, f := range r.Findings {
		if !matched[i] {
			problems = append(problems, fmt.Sprintf("unexpected %s at %s: %s", f.Severity, f.Where, f.What))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// waitDoctor waits until every host of on reports exactly want.
func waitDoctor(t *testing.T, c *cluster, on []*lab.Host, what string, timeout time.Duration, want ...doctor.Finding) time.Duration {
	t.Helper()
	start := time.Now()
	for _, h := range on {
		var last doctor.Report
		err := lab.WaitFor(ctxT(t), timeout, func() error {
			r, err := doctorReport(t, h)
			if err != nil {
				return err
			}
			last = r
			return expectFindings(r, c.hosts, len(c.hosts)*(len(c.hosts)-1), want)
		})
		if err != nil {
			t.Fatalf("%s: %s's doctor: %v\nlast report: %+v", what, h.Name, err, last)
		}
	}
	return time.Since(start)
}

// doctorCLI runs `vxsec doctor` against h's socket: its output and exit code.
func doctorCLI(t *testing.T, h *lab.Host) (string, int) {
	t.Helper()
	out, err := exec.CommandContext(ctxT(t), binary(t), "doctor", "--socket", h.Socket).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	}
	t.Fatalf("vxsec doctor: %v\n%s", err, out)
	return "", -1
}

// doctorText is h's report for people (/doctor), logged for the docs.
func doctorText(t *testing.T, h *lab.Host) string {
	t.Helper()
	b, err := h.HTTPGet(ctxT(t), metricsAddr, "/doctor")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDoctor: the doctor of every host names nothing on a healthy cluster
// (the positive control: its checks pass where nothing is wrong), and
// each fault made in the lab alone, where it is: the data port closed on
// one path by another firewall table, a switch port's MTU lowered (black
// holes on that host's paths only), a clock a minute ahead. After each,
// the fault is mended and every doctor is clean again. `vxsec doctor`
// exits 0 on the healthy cluster and 1 on a fault.
func TestDoctor(t *testing.T) {
	c := newCluster(t, 3)
	h1, h2, h3 := c.hosts[0], c.hosts[1], c.hosts[2]
	ctx := ctxT(t)
	createEverywhere(t, c.hosts, "doc", 7971, "10.71.0.0/24")
	const settle = 60 * time.Second

	took := waitDoctor(t, c, c.hosts, "healthy", settle)
	t.Logf("healthy: every doctor checks 6 paths and names nothing else (%v after the networks)", took.Round(time.Second))
	out, code := doctorCLI(t, h1)
	if code != 0 || !strings.Contains(out, "vxsec doctor on "+h1.Addr.String()+": 3 members, 6 paths checked") {
		t.Fatalf("vxsec doctor on a healthy cluster: exit %d, want 0:\n%s", code, out)
	}
	t.Logf("vxsec doctor on h1, healthy (exit %d):\n%s", code, out)

	t.Run("captures-leave-probes-out", func(t *testing.T) {
		// What the wire checks count (lab.NotPathProbe, the swarm lab's
		// filter, and Packets.UDPTo) is the networks' VXLAN, never the
		// probes; the control, a capture of everything to the data port,
		// holds probes, so the filter had some to leave out.
		ids := map[*lab.Host]string{h1: "doc-h1", h2: "doc-h2"}
		a := mustRun(t, h1, "cap1", ids[h1], "10.71.0.11/24")
		b := mustRun(t, h2, "cap2", ids[h2], "10.71.0.12/24")
		waitCounts(t, h1, 7971, 1, 1, 10*time.Second)
		filtered, err := c.lab.Capture(ctx, "udp port 4800 and "+lab.NotPathProbe)
		if err != nil {
			t.Fatal(err)
		}
		all, err := c.lab.Capture(ctx, "udp port 4800")
		if err != nil {
			t.Fatal(err)
		}
		// Longer than a probe round (pathprobe.Every).
		r, err := a.Ping(ctx, b.IP(), "-c", "12", "-i", "0.5", "-W", "1")
		if err != nil || r.Received != 12 {
			t.Fatalf("ping across: %+v %v", r, err)
		}
		fp, err := filtered.Stop()
		if err != nil {
			t.Fatal(err)
		}
		ap, err := all.Stop()
		if err != nil {
			t.Fatal(err)
		}
		inFiltered := len(fp.Where(func(p lab.Packet) bool { return p.Proto == lab.ProtoUDP && p.DstPort == 4800 }))
		probes := ap.PathProbes()
		t.Logf("6 s of the wire: everything to 4800 %d datagrams (%d probes, %d VXLAN by UDPTo); filtered by lab.NotPathProbe %d, %d of them probes",
			len(ap), len(probes), ap.CountUDP(4800), inFiltered, len(fp.PathProbes()))
		if len(probes) < 4 {
			t.Errorf("the unfiltered capture holds %d probes, want at least a round's (3 hosts): the check proves nothing", len(probes))
		}
		if n := len(fp.PathProbes()); n != 0 || inFiltered < 24 {
			t.Errorf("filtered: %d probes (want 0), %d datagrams (want the 24 of the pings and replies at least)", n, inFiltered)
		}
		if ap.CountUDP(4800) != len(ap)-len(probes) {
			t.Errorf("UDPTo counted %d of %d datagrams with %d probes", ap.CountUDP(4800), len(ap), len(probes))
		}
	})

	t.Run("data-port-closed", func(t *testing.T) {
		// Another firewall of h3's, before vxsec's (priority -100 <
		// -10), drops h2's UDP to the data port.
		rule := fmt.Sprintf("add table inet doctortest; add chain inet doctortest in { type filter hook input priority -100; }; "+
			"add rule inet doctortest in ip saddr %s udp dport 4800 drop", h2.Addr)
		if out, err := h3.Exec(ctx, "nft", rule); err != nil {
			t.Fatalf("nft: %v: %s", err, out)
		}
		path := h2.Addr.String() + " → " + h3.Addr.String()
		took := waitDoctor(t, c, c.hosts, "h3 drops h2's data port", 45*time.Second,
			doctor.Finding{Severity: doctor.Fault, Where: path, What: "probes to UDP 4800 (the data port) do not reach"})
		t.Logf("named on every host %v after the drop:\n%s", took.Round(time.Second), doctorText(t, h1))
		out, code := doctorCLI(t, h1)
		if code != 1 || !strings.Contains(out, path) {
			t.Errorf("vxsec doctor with a fault: exit %d, want 1, naming %s:\n%s", code, path, out)
		}
		if out, err := h3.Exec(ctx, "nft", "delete table inet doctortest"); err != nil {
			t.Fatalf("nft: %v: %s", err, out)
		}
		waitDoctor(t, c, c.hosts, "mended", settle)
	})

	t.Run("mtu-black-hole", func(t *testing.T) {
		setMTU := func(mtu int) {
			if out, err := exec.CommandContext(ctx, "ip", "-n", c.lab.Switch(), "link", "set", h3.Port(), "mtu", fmt.Sprint(mtu)).CombinedOutput(); err != nil {
				t.Fatalf("setting h3's switch port MTU to %d: %v: %s", mtu, err, out)
			}
		}
		setMTU(1450)
		var want []doctor.Finding
		for _, p := range [][2]*lab.Host{{h1, h3}, {h2, h3}, {h3, h1}, {h3, h2}} {
			want = append(want, doctor.Finding{Severity: doctor.Fault, Where: p[0].Addr.String() + " → " + p[1].Addr.String(),
				What: "an MTU black hole"})
		}
		took := waitDoctor(t, c, c.hosts, "h3's switch port at 1450", 45*time.Second, want...)
		t.Logf("4 black holes, all on h3's paths, named on every host %v after the change:\n%s", took.Round(time.Second), doctorText(t, h1))
		setMTU(1500)
		waitDoctor(t, c, c.hosts, "mended", settle)
	})

	t.Run("clock-skew", func(t *testing.T) {
		h3.Stop()
		h3.Bin = hookedBinary(t)
		h3.Env = append(h3.Env, "VXSEC_TEST_CLOCK_OFFSET=1m")
		if err := h3.Start(ctx); err != nil {
			t.Fatal(err)
		}
		// Every doctor names h3: the others agree, h3 alone is ahead (from
		// h3 too, which sees two members a minute behind it).
		took := waitDoctor(t, c, c.hosts, "h3's clock a minute ahead", settle,
			doctor.Finding{Severity: doctor.Fault, Where: h3.Addr.String(), What: "its clock is 1m0s ahead of the cluster's (2 of 3 members agree"})
		t.Logf("named on every host %v after h3's restart:\n%s\nfrom h3:\n%s", took.Round(time.Second), doctorText(t, h1), doctorText(t, h3))
		h3.Stop()
		h3.Bin = ""
		h3.Env = append(h3.Env, "VXSEC_TEST_CLOCK_OFFSET=")
		if err := h3.Start(ctx); err != nil {
			t.Fatal(err)
		}
		waitDoctor(t, c, c.hosts, "mended", settle)
	})
}
