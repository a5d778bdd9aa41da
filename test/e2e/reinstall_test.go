//go:build e2e

package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPluginReinstallKeepsNetworks: `make plugin` (scripts/plugin.sh) on an
// installed plugin replaces it in place: the new plugin gets the old one's
// state and settings, so Docker's networks carry on. A container started
// before reaches one started after, both ways, and a setting made with
// `docker plugin set` on the old plugin is on the new one. The control
// first: a reinstall with an empty state (PLUGIN_FRESH=1, what `make plugin`
// did before) leaves Docker a network vxsec no longer knows, and
// `docker run` on it fails saying the state was lost and what to do.
func TestPluginReinstallKeepsNetworks(t *testing.T) {
	requirePlugin(t)
	reinstall := func(env ...string) {
		t.Helper()
		out, err := runEnv(5*time.Minute, env, filepath.Join(repoRoot(t), "scripts", "plugin.sh"))
		if err != nil {
			t.Fatalf("scripts/plugin.sh %v on the installed plugin: %v\n%s", env, err, out)
		}
	}
	lost := createNetwork(t, "lo", "--subnet", "10.38.0.0/24")
	runContainer(t, lost)
	reinstall("PLUGIN_FRESH=1")
	name := uniqueName("c")
	t.Cleanup(func() { docker("rm", "-f", name) })
	out, err := docker("run", "-d", "--name", name, "--network", lost.Name, testImage, "sleep", "60")
	if err == nil || !strings.Contains(out, "its state was lost") || !strings.Contains(out, "docker network rm "+short(lost.ID)) {
		t.Fatalf("docker run on a network whose state a fresh reinstall dropped: %v, want an error naming the lost state and the fix:\n%s", err, out)
	}
	said := out
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "its state was lost") {
			said = l
		}
	}
	t.Logf("control: after a reinstall with an empty state, docker run on %s says: %s", lost.Name, said)

	n := createNetwork(t, "re", "--subnet", "10.37.0.0/24")
	c1 := runContainer(t, n)
	mustDocker(t, "plugin", "disable", "-f", pluginName)
	mustDocker(t, "plugin", "set", pluginName, "VXSEC_ROTATE_EVERY=11h")
	mustDocker(t, "plugin", "enable", pluginName)
	before := plugin(t)
	waitPluginUp(t, before, 0, 30*time.Second)

	reinstall()
	after := plugin(t)
	if after.ID == before.ID {
		t.Fatalf("scripts/plugin.sh did not replace the plugin (id %s)", short(after.ID))
	}
	if env := mustDocker(t, "plugin", "inspect", "-f", "{{.Settings.Env}}", pluginName); !strings.Contains(env, "VXSEC_ROTATE_EVERY=11h") {
		t.Errorf("the setting made on the old plugin is not on the new one: %s", env)
	}
	c2 := runContainer(t, n)
	mustPing(t, c2, c1.IP, "a container started after the reinstall -> one started before")
	mustPing(t, c1, c2.IP, "a container started before the reinstall -> one started after")
	t.Logf("plugin %s replaced by %s, its state and settings kept: both containers on %s talk", short(before.ID), short(after.ID), n.Name)
}
