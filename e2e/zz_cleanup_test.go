//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// (h) After all containers and vxsec networks are removed, nothing of vxsec
// is left: no vxsec-*/vxe-* link, no nftables table named vxsec, no file in
// the plugin's state directory. It runs last (file order), after the other
// tests' cleanups, and makes a network of its own so it means something when
// run alone.
func TestCleanupLeavesNothing(t *testing.T) {
	requirePlugin(t)
	p := plugin(t)
	t.Logf("plugin %s, state directory on the host: %s", short(p.ID), p.StateDir)

	n := createNetwork(t, "h", "--subnet", "10.40.0.0/24")
	c1 := runContainer(t, n)
	c2 := runContainer(t, n)
	mustPing(t, c1, c2.IP, "inside the network before removing everything")
	if files := stateFiles(t, p); !containsString(files, "network-"+n.ID+".json") {
		t.Errorf("state directory %s does not hold network-%s.json while the network exists: %v", p.StateDir, n.ID, files)
	}
	if len(nftVxsecTables(t)) == 0 {
		t.Errorf("no nftables table named vxsec while a vxsec network exists")
	}

	// Remove everything explicitly (the cleanups then find nothing to do).
	mustDocker(t, "rm", "-f", c1.Name, c2.Name)
	mustDocker(t, "network", "rm", n.Name)

	if left := vxsecNetworks(t); len(left) > 0 {
		t.Fatalf("vxsec networks remain after all tests removed theirs (left by an earlier run, or by someone else?): %v", left)
	}
	eventually(t, 10*time.Second, "no vxsec-*/vxe-* link on the host", func() (bool, string) {
		l := vxsecLinks(t)
		return len(l) == 0, fmt.Sprint(l)
	})
	eventually(t, 10*time.Second, "no nftables table named vxsec", func() (bool, string) {
		tb := nftVxsecTables(t)
		return len(tb) == 0, strings.Join(tb, ", ")
	})
	eventually(t, 10*time.Second, "no file in the plugin's state directory "+p.StateDir, func() (bool, string) {
		f := stateFiles(t, p)
		return len(f) == 0, fmt.Sprint(f)
	})
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
