//go:build e2e

package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vxsec/vxsec/internal/testutil"
)

// engineIsHarness reports whether the running engine was started by the
// harness (scripts/engine.sh), which alone may be restarted.
func engineIsHarness(t testing.TB) bool {
	t.Helper()
	cmd := exec.Command(filepath.Join(repoRoot(t), "scripts", "engine.sh"), "is-harness")
	return cmd.Run() == nil
}

// (f) Restarting the plugin (disable/enable, kill -9) or the engine (with
// live-restore) keeps running containers connected: a 20 packets/s ping
// between two containers loses nothing, the networks stay, and new
// containers can still join.
func TestRestartsKeepContainersConnected(t *testing.T) {
	requirePlugin(t)
	n := createNetwork(t, "f", "--subnet", "10.38.0.0/24")
	c1 := runContainer(t, n)
	c2 := runContainer(t, n)
	mustPing(t, c1, c2.IP, "before any restart")
	p := plugin(t)
	linkBefore := mustNetworkLink(t, n)

	phases := []struct {
		name   string
		action func(t *testing.T)
	}{
		{"plugin-disable-enable", func(t *testing.T) {
			pid := pluginPID(t, p)
			mustDocker(t, "plugin", "disable", "-f", pluginName)
			mustDocker(t, "plugin", "enable", pluginName)
			waitPluginUp(t, p, pid, 30*time.Second)
		}},
		{"plugin-kill-9", func(t *testing.T) {
			killPlugin(t, p)
		}},
		{"engine-restart", func(t *testing.T) {
			if !engineIsHarness(t) {
				t.Skip("engine restart test needs a harness-started engine (this Docker engine was not started by scripts/engine.sh, so the test will not restart it); run scripts/e2e.sh on a machine without a running engine")
			}
			if lr := mustDocker(t, "info", "-f", "{{.LiveRestoreEnabled}}"); lr != "true" {
				t.Fatalf("the harness's engine runs without live-restore (LiveRestoreEnabled=%s)", lr)
			}
			out, err := run(3*time.Minute, filepath.Join(repoRoot(t), "scripts", "engine.sh"), "restart")
			if err != nil {
				t.Fatalf("scripts/engine.sh restart: %v\n%s", err, out)
			}
			t.Logf("engine restarted:\n%s", strings.TrimSpace(out))
			testutil.UntilEvery(t, 30*time.Second, pollDocker, "plugin enabled after the engine restart", func() error {
				out, err := docker("plugin", "inspect", "-f", "{{.Enabled}}", pluginName)
				if err != nil || strings.TrimSpace(out) != "true" {
					return fmt.Errorf("docker plugin inspect says %q (%v)", strings.TrimSpace(out), err)
				}
				return nil
			})
			waitPluginUp(t, p, -1, 30*time.Second)
		}},
	}

	for _, ph := range phases {
		t.Run(ph.name, func(t *testing.T) {
			netsBefore := vxsecNetworks(t)
			inspectBefore := mustDocker(t, "network", "inspect", "-f", "{{.ID}} {{.Driver}} {{.Scope}} {{range .IPAM.Config}}{{.Subnet}} {{end}}", n.Name)
			stream := startPingStream(t, c1, c2.IP)
			// The ping is under way (half a second of replies) before the
			// action, so that it spans it.
			testutil.Until(t, 10*time.Second, "the ping gets replies before "+ph.name, func() error {
				if n := stream.replies(); n < 10 {
					return fmt.Errorf("%d replies so far:\n%s", n, tail(stream.out.String(), 5))
				}
				return nil
			})
			start := time.Now()
			ph.action(t)
			took := time.Since(start)
			// A sleep, not a signal: a loss after the action shows only as
			// replies that never come, so the ping must run on for a while.
			time.Sleep(2 * time.Second)
			sent, lost := stream.stop(t)
			t.Logf("%s took %s; ping sent %d requests at 20/s across it", ph.name, took.Round(time.Millisecond), sent)
			if sent < 40 {
				t.Errorf("ping sent only %d requests:\n%s", sent, tail(stream.out.String(), 20))
			}
			if len(lost) > 0 {
				t.Errorf("%s: %d of %d pings lost (icmp_seq %v); ping output tail:\n%s", ph.name, len(lost), sent, seqs(lost), tail(stream.out.String(), 30))
			}

			// Docker still has the same networks, and this one unchanged.
			if after := vxsecNetworks(t); !slices.Equal(after, netsBefore) {
				t.Errorf("vxsec networks changed across %s: before %v, after %v", ph.name, netsBefore, after)
			}
			if after := mustDocker(t, "network", "inspect", "-f", "{{.ID}} {{.Driver}} {{.Scope}} {{range .IPAM.Config}}{{.Subnet}} {{end}}", n.Name); after != inspectBefore {
				t.Errorf("docker network inspect changed across %s: before %s, after %s", ph.name, inspectBefore, after)
			}
			if l := mustNetworkLink(t, n); l.Index != linkBefore.Index {
				t.Errorf("the network's VXLAN link was recreated across %s (ifindex %d -> %d)", ph.name, linkBefore.Index, l.Index)
			}
			// A new container can join and reach the old ones.
			c3 := runContainer(t, n)
			mustPing(t, c3, c1.IP, "a container started after "+ph.name+" -> an old one")
			mustPing(t, c2, c3.IP, "an old container -> one started after "+ph.name)
			mustDocker(t, "rm", "-f", c3.Name)
		})
	}
}

func seqs(s []int) string {
	if len(s) > 20 {
		return fmt.Sprint(s[:20]) + "..."
	}
	return fmt.Sprint(s)
}

// (g) On start the plugin removes kernel objects it owns (by alias) that no
// network needs, and leaves the real networks' objects alone.
func TestReconcileRemovesStrayLinks(t *testing.T) {
	requirePlugin(t)
	n := createNetwork(t, "g", "--subnet", "10.39.0.0/24")
	c1 := runContainer(t, n)
	c2 := runContainer(t, n)
	real := mustNetworkLink(t, n)
	p := plugin(t)

	const stray = "vxsec-999999"
	t.Cleanup(func() {
		if out, err := run(cmdTimeout, "ip", "link", "show", stray); err == nil {
			t.Logf("cleanup: removing the stray link the plugin left: %s", out)
			_, _ = run(cmdTimeout, "ip", "link", "del", stray)
		}
	})
	mustRun(t, "ip", "link", "add", stray, "type", "vxlan", "id", "999999", "dstport", "4800", "nolearning")
	mustRun(t, "ip", "link", "set", stray, "alias", "vxsec:network:stray")

	killPlugin(t, p)

	testutil.UntilEvery(t, 20*time.Second, pollDocker, "the stray link "+stray+" is removed by the restarted plugin", func() error {
		if links := vxsecLinks(t); slices.Contains(links, stray) {
			return fmt.Errorf("vxsec links: %v; %s", links, pluginLogHint())
		}
		return nil
	})
	l := mustNetworkLink(t, n)
	if l.Index != real.Index || l.Name != real.Name {
		t.Errorf("the real network's link changed: %s/%d -> %s/%d", real.Name, real.Index, l.Name, l.Index)
	}
	mustPing(t, c1, c2.IP, "the real network after the reconcile")
}

// killPlugin kills the plugin's daemon as a crash would and waits until
// Docker has restarted it.
func killPlugin(t *testing.T, p pluginInfo) {
	t.Helper()
	pid := pluginPID(t, p)
	t.Logf("kill -9 %d (the plugin's /vxsec daemon)", pid)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", pid, err)
	}
	newPID := waitPluginUp(t, p, pid, 30*time.Second)
	t.Logf("Docker restarted the plugin: pid %d", newPID)
}
