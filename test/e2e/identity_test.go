//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vxsec/vxsec/identity"
	vxplugin "github.com/vxsec/vxsec/plugin"
	"github.com/vxsec/vxsec/vxlan"
)

// TestHostIdentityInPlugin: the managed plugin takes a host identity the
// way docs/identity.md tells a user to give it one: `vxsec ca issue` into
// the plugin's state directory on the host (its propagated mount), then
// `docker plugin set VXSEC_IDENTITY_DIR=/var/lib/vxsec/identity`. The
// plugin comes up with it (its status names it), and its networks work.
// The test puts the plugin back as it found it.
func TestHostIdentityInPlugin(t *testing.T) {
	requirePlugin(t)
	p := plugin(t)
	under, err := vxlan.FindUnderlay(netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(t.TempDir(), "ca")
	if err := identity.InitCA(ca, "e2e", time.Hour); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(p.StateDir, "identity")
	if _, err := identity.Issue(ca, dir, "e2e-host", []netip.Addr{under.Addr}, time.Hour); err != nil {
		t.Fatal(err)
	}
	setIdentity := func(value string) {
		t.Helper()
		pid := pluginPID(t, p)
		mustDocker(t, "plugin", "disable", "-f", pluginName)
		mustDocker(t, "plugin", "set", pluginName, "VXSEC_IDENTITY_DIR="+value)
		mustDocker(t, "plugin", "enable", pluginName)
		waitPluginUp(t, p, pid, 30*time.Second)
	}
	t.Cleanup(func() {
		setIdentity("")
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	setIdentity("/var/lib/vxsec/identity")

	var st struct {
		Identity *struct {
			Name string
			Mode string
		}
	}
	sock := fmt.Sprintf("/proc/%d/root/run/docker/plugins/vxsec.sock", pluginPID(t, p))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := vxplugin.NewClient(sock).Call(ctx, "VxSec.Status", struct{}{}, &st); err != nil {
		t.Fatal(err)
	}
	if st.Identity == nil || st.Identity.Name != "e2e-host" || st.Identity.Mode != "required" {
		t.Fatalf("the plugin's status shows identity %+v, want e2e-host, required", st.Identity)
	}
	t.Logf("the plugin runs with identity %q (%s) for %s", st.Identity.Name, st.Identity.Mode, under.Addr)
	n := createNetwork(t, "id", "--subnet", "10.39.0.0/24")
	c1 := runContainer(t, n)
	c2 := runContainer(t, n)
	mustPing(t, c1, c2.IP, "two containers on a network of a plugin with an identity")
}
