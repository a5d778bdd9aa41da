//go:build integration

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vxsec/vxsec/lab"
)

// previousRelease is the commit of the release before this one (the last
// that landed): the upgrade test runs it, then upgrades host by host to
// the build under test.
const previousRelease = "a5be71ec4d693112c6789cccad7d0f61c4f8324e"

// previousBinary builds the previous release's daemon from this
// repository's history (once per checkout: build/prev-<commit>/vxsec).
func previousBinary(t *testing.T) string {
	t.Helper()
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatalf("the upgrade test builds the previous release from git history: %v", err)
	}
	root := strings.TrimSpace(string(top))
	out := filepath.Join(root, "build", "prev-"+previousRelease[:12], "vxsec")
	if _, err := os.Stat(out); err == nil {
		return out
	}
	src := t.TempDir()
	archive := exec.Command("sh", "-c", fmt.Sprintf("git -C %s archive %s | tar -x -C %s", root, previousRelease, src))
	if b, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("extracting the previous release %s: %v\n%s", previousRelease, err, b)
	}
	goBin := "go"
	if g := os.Getenv("GO"); g != "" {
		goBin = g
	}
	build := exec.Command(goBin, "build", "-trimpath", "-tags", "nosystemd",
		"-ldflags", "-X main.version=prev-"+previousRelease[:7], "-o", out, "./cmd/vxsec")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the previous release: %v\n%s", err, b)
	}
	return out
}

// TestUpgradeSwarm: a swarm cluster of the previous release (no passes,
// unsigned tables) upgrades host by host to this one under a 100 packets/s
// ping across hosts, with VXSEC_IDENTITY=optional as docs/trust.md says,
// and then moves to required, host by host: 0 packets lost in either
// round, every host ends signing its tables with a pass, and none is
// refused.
func TestUpgradeSwarm(t *testing.T) {
	prev := previousBinary(t)
	ctx := ctxT(t)
	_, hosts, _ := swarmHosts(t, ctx, func(h *lab.Host) { h.Bin = prev })
	const vni = 7304
	cs := swarmNetwork(t, hosts, "upg", vni, "10.73.4.0/24", "u")
	reachFast(t, cs[0], cs[2].IP())

	// The previous release knows no passes: what runs is that release.
	for _, h := range hosts {
		if st, err := h.Status(ctxT(t)); err != nil || st.Trust == nil || st.Trust.PassBy != "" {
			t.Fatalf("%s before the upgrade: %+v %v; want the previous release (no pass)", h.Name, st.Trust, err)
		}
	}
	round := func(what string, change func(h *lab.Host)) {
		t.Helper()
		start := time.Now()
		// c1 → c3 crosses h1 and h3; h2's restart shows in their view of
		// it (members, tables), checked after each step.
		res, err := cs[0].PingAcross(ctxT(t), cs[2].IP(), []string{"-i", "0.01"}, func() error {
			for _, h := range hosts {
				change(h)
				if err := h.Restart(ctxT(t), syscall.SIGTERM); err != nil {
					return err
				}
				for _, o := range hosts {
					waitCounts(t, o, vni, 1, 2, 20*time.Second)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if res.Sent < 100 || res.Loss() != 0 {
			t.Fatalf("%s: ping c1 → c3 at 100/s: %d sent, %d lost; want 0 lost", what, res.Sent, res.Loss())
		}
		t.Logf("%s, host by host, in %s: ping c1 → c3 at 100/s: %d sent, %d lost", what, time.Since(start).Round(time.Millisecond), res.Sent, res.Loss())
	}
	round("upgrade from "+previousRelease[:7]+" with VXSEC_IDENTITY=optional", func(h *lab.Host) {
		h.Bin = ""
		h.Env = append(h.Env, "VXSEC_IDENTITY=optional")
	})
	round("VXSEC_IDENTITY=required", func(h *lab.Host) {
		h.Env = append(h.Env, "VXSEC_IDENTITY=required")
	})
	checkSigned(t, hosts)
	for _, from := range cs {
		for _, to := range cs {
			if from != to {
				reachFast(t, from, to.IP())
			}
		}
	}
}
