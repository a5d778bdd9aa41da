//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// (a) Containers on one vxsec network reach each other by IP, and the network
// has the kernel objects of the naming contract.
func TestSameNetworkConnectivity(t *testing.T) {
	requirePlugin(t)
	n := createNetwork(t, "a", "--subnet", "10.31.0.0/24")

	link := mustNetworkLink(t, n)
	if vni := link.vni(); vni < autoVNIBase || vni > vxlanMaxVNI {
		t.Errorf("auto-allocated VNI %d of network %s is outside [%d, %d]", vni, n.Name, autoVNIBase, vxlanMaxVNI)
	}
	if got, want := strings.Join(nftVxsecTables(t), ","), "arp vxsec,inet vxsec"; got != want {
		t.Errorf("nftables tables named vxsec while a network exists: got %q, want %q", got, want)
	}

	c1 := runContainer(t, n)
	c2 := runContainer(t, n)
	for _, c := range []*container{c1, c2} {
		if !strings.HasPrefix(c.IP, "10.31.0.") {
			t.Fatalf("container %s got %s, outside 10.31.0.0/24", c.Name, c.IP)
		}
		c.vxsecIface(t)
	}
	mustPing(t, c1, c2.IP, "c1 -> c2 on the same network")
	mustPing(t, c2, c1.IP, "c2 -> c1 on the same network")

	// The endpoint devices are in the containers now, not on the host.
	for _, name := range vxsecLinks(t) {
		if strings.HasPrefix(name, epPrefix) {
			for _, l := range hostLinks(t) {
				if l.Name == name && strings.HasPrefix(l.Alias, aliasEP) {
					t.Errorf("endpoint link %s (alias %s) is still on the host while its container runs", name, l.Alias)
				}
			}
		}
	}
}

// (b) Containers on two vxsec networks cannot reach each other in any
// direction by any address, nor the host through the overlay; positive
// controls in the same test prove the probes can succeed.
func TestNetworksAreIsolated(t *testing.T) {
	requirePlugin(t)
	_, hostIP, _ := underlay(t)
	na := createNetwork(t, "ba", "--subnet", "10.32.0.0/24", "--gateway", "10.32.0.1")
	nb := createNetwork(t, "bb", "--subnet", "10.33.0.0/24", "--gateway", "10.33.0.1")
	a1 := runContainer(t, na, "--cap-add", "NET_ADMIN")
	a2 := runContainer(t, na)
	b1 := runContainer(t, nb, "--cap-add", "NET_ADMIN")
	b2 := runContainer(t, nb)
	for _, c := range []*container{a1, b1} {
		c.vxsecIface(t)
	}

	// Positive controls: each network works, and the host answers these
	// containers' pings by their ordinary route (when they have one that is
	// not the overlay: docker_gwbridge), so silence below is isolation.
	mustPing(t, a1, a2.IP, "a1 -> a2 inside network A")
	mustPing(t, b1, b2.IP, "b1 -> b2 inside network B")
	for _, c := range []*container{a1, b1} {
		routes := c.mustExec(t, "ip", "-4", "route", "show", "default")
		if routes != "" && !strings.Contains(routes, "dev eth0") {
			mustPing(t, c, hostIP, fmt.Sprintf("%s -> host %s by its default route (%s)", c.Name, hostIP, routes))
		} else {
			t.Logf("%s has no default route off the overlay (%q): no host control ping", c.Name, routes)
		}
	}

	base := []probe{
		{"A container -> B container", a1, b1.IP},
		{"A container -> B container (2)", a2, b2.IP},
		{"B container -> A container", b1, a1.IP},
		{"B container -> A container (2)", b2, a2.IP},
		{"A container -> B's gateway address", a1, "10.33.0.1"},
		{"B container -> A's gateway address", b1, "10.32.0.1"},
	}
	t.Run("default-routes", func(t *testing.T) {
		expectUnreachable(t, base)
	})

	// Now force every probe through the vxsec interface: the other network's
	// subnet and the host's address routed out of eth0 (on-link, so the
	// container ARPs for them on its own segment).
	for _, r := range []struct {
		c   *container
		dst string
	}{
		{a1, "10.33.0.0/24"}, {a1, hostIP + "/32"},
		{b1, "10.32.0.0/24"}, {b1, hostIP + "/32"},
	} {
		r.c.mustExec(t, "ip", "route", "add", r.dst, "dev", "eth0")
	}
	t.Run("through-overlay", func(t *testing.T) {
		expectUnreachable(t, []probe{
			{"A container -> B container via eth0", a1, b1.IP},
			{"A container -> B container (2) via eth0", a1, b2.IP},
			{"B container -> A container via eth0", b1, a1.IP},
			{"B container -> A container (2) via eth0", b1, a2.IP},
			{"A container -> B's gateway via eth0", a1, "10.33.0.1"},
			{"B container -> A's gateway via eth0", b1, "10.32.0.1"},
			{"A container -> host address via the overlay", a1, hostIP},
			{"B container -> host address via the overlay", b1, hostIP},
		})
	})
	// And the networks still work afterwards.
	mustPing(t, a2, a1.IP, "a2 -> a1 inside network A (after the probes)")
	mustPing(t, b2, b1.IP, "b2 -> b1 inside network B (after the probes)")
}

// (c) Two networks with the same subnet side by side both work. Docker's
// default IPAM refuses a second pool that overlaps the first in its address
// space before vxsec is asked, so overlapping networks use vxsec's own IPAM
// driver (the same plugin), where every pool is its own space.
func TestSameSubnetSideBySide(t *testing.T) {
	requirePlugin(t)
	const subnet = "10.34.0.0/24"
	n1 := createNetwork(t, "c", "--ipam-driver", driverName, "--subnet", subnet)
	n2 := createNetwork(t, "c", "--ipam-driver", driverName, "--subnet", subnet)
	for _, n := range []*network{n1, n2} {
		c1 := runContainer(t, n)
		c2 := runContainer(t, n)
		mustPing(t, c1, c2.IP, fmt.Sprintf("%s -> %s inside %s", c1.Name, c2.Name, n.Name))
		mustPing(t, c2, c1.IP, fmt.Sprintf("%s -> %s inside %s", c2.Name, c1.Name, n.Name))
	}
}

// (d) A port published from a vxsec network answers on the host's address.
// vxsec's Join returns no gateway, so the engine gives the container an
// endpoint on docker_gwbridge, and that endpoint's driver (the bridge)
// publishes the port. This is the contract a gateway of vxsec's own would have
// to take over: the engine hands the published ports to the driver of the
// gateway endpoint (ProgramExternalConnectivity), see docs/performance.md.
func TestPublishedPort(t *testing.T) {
	requirePlugin(t)
	_, hostIP, _ := underlay(t)
	n := createNetwork(t, "p", "--subnet", "10.35.0.0/24")
	body := "published from " + n.Name
	c := runContainerCmd(t, n, []string{"-p", hostIP + "::8080"}, "sh", "-c",
		"mkdir -p /www && echo '"+body+"' > /www/index.html && exec httpd -f -p 8080 -h /www")
	if routes := c.mustExec(t, "ip", "-4", "route", "show", "default"); routes == "" || strings.Contains(routes, "dev eth0") {
		t.Fatalf("container %s's default route is %q: want one off the vxsec network (docker_gwbridge)", c.Name, routes)
	}

	mapped := mustDocker(t, "port", c.Name, "8080/tcp")
	addr := strings.TrimSpace(strings.SplitN(mapped, "\n", 2)[0])
	if host, _, err := net.SplitHostPort(addr); err != nil || host != hostIP {
		t.Fatalf("docker port %s 8080/tcp: %q, want %s:<port>", c.Name, mapped, hostIP)
	}
	url := "http://" + addr + "/"
	client := http.Client{Timeout: 3 * time.Second}
	var last error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		got, err := httpGet(&client, url)
		if err != nil {
			last = err
			continue
		}
		if strings.TrimSpace(got) != body {
			t.Fatalf("GET %s: %q, want %q", url, got, body)
		}
		t.Logf("GET %s (published from %s on %s): %q", url, c.Name, n.Name, strings.TrimSpace(got))
		return
	}
	t.Fatalf("GET %s, the port published from %s on vxsec network %s, never answered: %v", url, c.Name, n.Name, last)
}

func httpGet(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("GET %s: reading the body: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), nil
}
