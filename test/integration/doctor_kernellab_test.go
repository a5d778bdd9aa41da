//go:build integration && kernellab

package integration

import (
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vxsec/vxsec/doctor"
	"github.com/vxsec/vxsec/ipsec"
	"github.com/vxsec/vxsec/lab"
)

// TestEncryptedDoctor: an encrypted network through a switch that drops IP
// protocol 50. With the default encapsulation (auto) the doctor notes, on
// both paths, that native ESP does not arrive and encrypted traffic goes in
// UDP instead, and `vxsec doctor` exits 0; with native ESP forced (esp) the
// same paths are faults, and it exits 1. Once the switch lets ESP through,
// it names nothing (the positive control of the ESP check: with ESP
// passing, the record holds both peers).
func TestEncryptedDoctor(t *testing.T) {
	if err := ipsec.Probe(); err != nil {
		t.Fatalf("the kernel lab's kernel must have ESP and GCM: %v", err)
	}
	c := newIdentityCluster(t, 2)
	h1, h2 := c.hosts[0], c.hosts[1]
	espDrops, setDrop := switchDropsESP(t, c.lab)
	const evni = 8401
	for _, h := range c.hosts {
		mustCreateNetwork(t, h, "encd-"+h.Name, map[string]string{"vni": strconv.Itoa(evni), "encrypted": ""}, "10.95.0.0/24", "")
	}
	waitAllKeyed(t, c.hosts)
	const bound = 120 * time.Second
	paths := func(what string) []doctor.Finding {
		var out []doctor.Finding
		for _, p := range [][2]*lab.Host{{h1, h2}, {h2, h1}} {
			sev := doctor.Note
			if what == "nothing encrypted flows" {
				sev = doctor.Fault
			}
			out = append(out, doctor.Finding{Severity: sev, Where: p[0].Addr.String() + " → " + p[1].Addr.String(), What: what})
		}
		return out
	}

	took := waitDoctor(t, c, c.hosts, "auto, ESP dropped", bound, paths("travels as ESP in UDP")...)
	out, code := doctorCLI(t, h1)
	if code != 0 {
		t.Errorf("vxsec doctor with notes only: exit %d, want 0:\n%s", code, out)
	}
	t.Logf("auto with ESP dropped by the switch (%d ESP packets dropped): notes on both paths %v after the network, exit %d:\n%s",
		espDrops(), took.Round(time.Second), code, out)

	for _, h := range c.hosts {
		h.Env = append(h.Env, "VXSEC_ESP_ENCAP=esp")
		if err := h.Restart(ctxT(t), syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	waitAllKeyed(t, c.hosts)
	took = waitDoctor(t, c, c.hosts, "esp, ESP dropped", bound, paths("nothing encrypted flows")...)
	out, code = doctorCLI(t, h1)
	if code != 1 || !strings.Contains(out, "Faults: 2") {
		t.Errorf("vxsec doctor with native ESP forced and dropped: exit %d, want 1 with 2 faults:\n%s", code, out)
	}
	t.Logf("esp with ESP dropped: faults on both paths %v after the restarts, exit %d:\n%s", took.Round(time.Second), code, out)

	setDrop(false)
	took = waitDoctor(t, c, c.hosts, "esp, ESP passing", bound)
	out, code = doctorCLI(t, h1)
	if code != 0 || !strings.Contains(out, "No problems found.") {
		t.Errorf("vxsec doctor with ESP passing: exit %d, want 0 and nothing named:\n%s", code, out)
	}
	t.Logf("the switch passes ESP: nothing named %v later, exit %d:\n%s", took.Round(time.Second), code, out)
}
