//go:build e2e

package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// An encrypted network on a swarm node whose kernel lacks ESP: `docker
// network create` on a manager returns before any node's driver sees the
// network, so the refusal can only reach the user through the service's
// tasks. This host's kernel has no ESP, so it is such a node: the task's
// error in `docker service ps --no-trunc` must say why, and the task must
// never run on a network that would carry it in cleartext. The control is
// the same service on a plain vxsec network of the same one-node swarm,
// which runs: swarm mode works here and only the encryption is refused.
func TestSwarmEncryptedOnKernelWithoutESP(t *testing.T) {
	requirePlugin(t)
	if _, err := run(20*time.Second, "ip", "xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp",
		"spi", "0x1", "mode", "transport", "aead", "rfc4106(gcm(aes))", "0x"+strings.Repeat("11", 36), "128"); err == nil {
		run(20*time.Second, "ip", "xfrm", "state", "delete", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp", "spi", "0x1")
		t.Fatalf("this kernel takes an AES-GCM ESP state, so it is no node without ESP: the test must run on a kernel lacking ESP (the CI machine's)")
	}
	joinSwarm(t)

	plain := uniqueName("swp")
	mustDocker(t, "network", "create", "-d", driverName, "--subnet", "10.39.1.0/24", plain)
	t.Cleanup(func() { docker("network", "rm", plain) })
	enc := uniqueName("swe")
	mustDocker(t, "network", "create", "-d", driverName, "--opt", "encrypted", "--subnet", "10.39.2.0/24", enc)
	t.Cleanup(func() { docker("network", "rm", enc) })
	if scope := mustDocker(t, "network", "inspect", "-f", "{{.Scope}}", enc); scope != "swarm" {
		t.Fatalf("network %s has scope %q: want swarm (a vxsec network created on a manager belongs to the swarm)", enc, scope)
	}

	control := createService(t, plain)
	waitTasks(t, control, "control on the plain network", func(state, _ string) bool { return state == "Running" })

	svc := createService(t, enc)
	var errs string
	waitTasks(t, svc, "the encrypted network's task error", func(state, err string) bool {
		if state == "Running" {
			t.Fatalf("a task of %s runs on the encrypted network on a kernel without ESP", svc)
		}
		errs = err
		return strings.Contains(err, "ESP") && strings.Contains(err, "kernel lacks") && strings.Contains(err, "cleartext")
	})
	t.Logf("ok: docker service ps --no-trunc %s: %q", svc, errs)
}

// joinSwarm makes the engine a one-node swarm for the test and leaves it
// after. Docker 20.10 refuses swarm mode while live-restore is on, so on the
// harness's engine it is off for the test; on another engine the test does
// not change its configuration. The plugin is restarted on both sides, as
// docs/swarm.md tells users: Docker asks a driver its data scope once, when
// it enables it, and vxsec answers global only on a swarm node.
func joinSwarm(t *testing.T) {
	t.Helper()
	if state := mustDocker(t, "info", "-f", "{{.Swarm.LocalNodeState}}"); state != "inactive" {
		t.Fatalf("the engine is already in swarm state %q; the e2e tests need an engine outside any swarm", state)
	}
	if mustDocker(t, "info", "-f", "{{.LiveRestoreEnabled}}") == "true" {
		if !engineIsHarness(t) {
			t.Skip("swarm mode needs live-restore off, and this Docker engine was not started by scripts/engine.sh, so the test will not change its configuration; run scripts/e2e.sh on a machine without a running engine")
		}
		liveRestore(t, "false")
		t.Cleanup(func() { liveRestore(t, "true") })
	}
	_, addr, _ := underlay(t)
	t.Cleanup(func() { restartPlugin(t) })
	mustDocker(t, "swarm", "init", "--advertise-addr", addr)
	t.Cleanup(func() {
		if out, err := docker("swarm", "leave", "--force"); err != nil {
			t.Errorf("docker swarm leave --force: %v: %s", err, out)
		}
	})
	restartPlugin(t)
}

func restartPlugin(t *testing.T) {
	t.Helper()
	p := plugin(t)
	pid := pluginPID(t, p)
	mustDocker(t, "plugin", "disable", pluginName)
	mustDocker(t, "plugin", "enable", pluginName)
	waitPluginUp(t, p, pid, 30*time.Second)
}

func liveRestore(t *testing.T, want string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(repoRoot(t), "scripts", "engine.sh"), "live-restore", want)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/engine.sh live-restore %s: %v\n%s", want, err, out)
	}
}

// createService starts a one-replica service on network and removes it
// at cleanup.
func createService(t *testing.T, network string) string {
	t.Helper()
	name := uniqueName("svc")
	mustDocker(t, "service", "create", "--detach", "--name", name, "--network", network, "--restart-max-attempts", "1",
		testImage, "sleep", "3600")
	t.Cleanup(func() {
		docker("service", "rm", name)
		// the task's container leaves the network before the network can go
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			if out, _ := docker("ps", "-aq", "--filter", "label=com.docker.swarm.service.name="+name); strings.TrimSpace(out) == "" {
				return
			}
			time.Sleep(500 * time.Millisecond)
		}
	})
	return name
}

// waitTasks polls `docker service ps --no-trunc` until done holds for a
// task (its current state's first word and its error).
func waitTasks(t *testing.T, svc, what string, done func(state, err string) bool) {
	t.Helper()
	var last string
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		out, err := docker("service", "ps", "--no-trunc", "--format", "{{.CurrentState}}\t{{.Error}}", svc)
		last = out
		if err == nil {
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				state, msg, _ := strings.Cut(line, "\t")
				if f := strings.Fields(state); len(f) > 0 && done(f[0], msg) {
					return
				}
			}
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("%s: not seen in 90 s; docker service ps --no-trunc %s:\n%s", what, svc, last)
}
