//go:build integration

package integration

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vxsec/vxsec/identity"
	"github.com/vxsec/vxsec/internal/testutil"
	"github.com/vxsec/vxsec/lab"
)

// failBound is the failure-detection bound the cluster promises: a dead
// host's endpoints are gone from every other host within it.
const failBound = 20 * time.Second

// cluster is a lab whose hosts form one vxsec cluster.
type cluster struct {
	lab    *lab.Lab
	hosts  []*lab.Host
	secret string
	// ca, if set, is a cluster CA (`vxsec ca init`): addHost gives each
	// host an identity from it.
	ca string
}

// newCluster starts n hosts sharing a secret and seeded with h1, and waits
// until every one of them sees all n alive.
func newCluster(t *testing.T, n int) *cluster { return startCluster(t, n, false, false) }

// newCluster6 is newCluster on an IPv6-only underlay.
func newCluster6(t *testing.T, n int) *cluster { return startCluster(t, n, true, false) }

// newIdentityCluster is newCluster with an identity for every host, from
// one cluster CA (docs/identity.md).
func newIdentityCluster(t *testing.T, n int) *cluster { return startCluster(t, n, false, true) }

// newIdentityCluster6 is newIdentityCluster on an IPv6-only underlay.
func newIdentityCluster6(t *testing.T, n int) *cluster { return startCluster(t, n, true, true) }

func startCluster(t *testing.T, n int, ipv6, identities bool) *cluster {
	t.Helper()
	secret := lab.NewSecret()
	underlay := lab.Underlay
	if ipv6 {
		underlay = lab.Underlay6
	}
	c := &cluster{lab: openLabConfig(t, lab.Config{Env: lab.ClusterEnvOn(underlay, secret), IPv6: ipv6}), secret: secret}
	if identities {
		c.ca = filepath.Join(t.TempDir(), "ca")
		if err := identity.InitCA(c.ca, "integration", time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= n; i++ {
		c.addHost(t, fmt.Sprintf("h%d", i))
	}
	c.waitMembers(t, c.hosts, c.hosts)
	return c
}

// identityEnv issues host name an identity for addr from the cluster's CA
// and returns the setting that gives it to its daemon.
func (c *cluster) identityEnv(t *testing.T, name string, addr netip.Addr) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if _, err := identity.Issue(c.ca, dir, name, []netip.Addr{addr}, time.Hour); err != nil {
		t.Fatal(err)
	}
	return "VXSEC_IDENTITY_DIR=" + dir
}

// addHost adds and starts one more host; env is added after the cluster's
// (the last value of a variable wins). In a cluster with a CA, the host
// gets an identity first.
func (c *cluster) addHost(t *testing.T, name string, env ...string) *lab.Host {
	t.Helper()
	return c.startHost(t, c.lab.AddHost, name, env...)
}

// addHostBehindNAT is addHost for a host behind a NAT router
// (lab.AddHostBehindNAT): it advertises the router's address.
func (c *cluster) addHostBehindNAT(t *testing.T, name string, env ...string) *lab.Host {
	t.Helper()
	return c.startHost(t, c.lab.AddHostBehindNAT, name, env...)
}

func (c *cluster) startHost(t *testing.T, add func(context.Context, string) (*lab.Host, error), name string, env ...string) *lab.Host {
	t.Helper()
	ctx := ctxT(t)
	h, err := add(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if c.ca != "" {
		h.Env = append(h.Env, c.identityEnv(t, name, h.Addr))
	}
	h.Env = append(h.Env, env...)
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	c.hosts = append(c.hosts, h)
	return h
}

func addrs(hs []*lab.Host) []string {
	var a []string
	for _, h := range hs {
		a = append(a, h.Addr.String())
	}
	slices.Sort(a)
	return a
}

// waitMembers waits until every host of on sees exactly want alive.
func (c *cluster) waitMembers(t *testing.T, on, want []*lab.Host) {
	t.Helper()
	w := addrs(want)
	for _, h := range on {
		testutil.Until(t, 20*time.Second, h.Name+" sees every member alive", func() error {
			st, err := h.Status(ctxT(t))
			if err != nil {
				return err
			}
			got := st.Alive()
			slices.Sort(got)
			if !slices.Equal(got, w) {
				return fmt.Errorf("alive members %v, want %v (all: %+v)", got, w, st.Members)
			}
			return nil
		})
	}
}

// netStatus returns h's counts for the network with that VNI.
func netStatus(ctx context.Context, h *lab.Host, vni int) (lab.NetworkStatus, error) {
	st, err := h.Status(ctx)
	if err != nil {
		return lab.NetworkStatus{}, err
	}
	n, ok := st.Network(vni)
	if !ok {
		return n, fmt.Errorf("%s: no network with vni %d in status %+v", h.Name, vni, st.Networks)
	}
	return n, nil
}

// waitCounts waits until h reports local and remote endpoints on vni.
func waitCounts(t *testing.T, h *lab.Host, vni, local, remote int, timeout time.Duration) time.Duration {
	t.Helper()
	return testutil.Until(t, timeout, fmt.Sprintf("%s has %d local and %d remote endpoints on vni %d", h.Name, local, remote, vni), func() error {
		n, err := netStatus(ctxT(t), h, vni)
		if err != nil {
			return err
		}
		if n.Local != local || n.Remote != remote {
			return fmt.Errorf("status says local %d, remote %d", n.Local, n.Remote)
		}
		return nil
	})
}

// createEverywhere creates the network with that VNI on every host, each
// under its own network ID (Docker outside swarm gives each host its own).
func createEverywhere(t *testing.T, hosts []*lab.Host, name string, vni int, subnet string) map[*lab.Host]string {
	t.Helper()
	ids := map[*lab.Host]string{}
	for _, h := range hosts {
		id := name + "-" + h.Name
		mustCreateNetwork(t, h, id, map[string]string{"vni": strconv.Itoa(vni)}, subnet, "")
		ids[h] = id
	}
	return ids
}

// wantEntries checks that h's vxsec-<vni> holds exactly the FDB and
// neighbour entries of the remote containers, pointing at their hosts, and
// nothing else (in particular no all-zeros flooding entry).
func wantEntries(ctx context.Context, h *lab.Host, vni int, remote []*lab.Container) error {
	fdb, err := h.FDB(ctx, vni)
	if err != nil {
		return err
	}
	neigh, err := h.Neigh(ctx, vni)
	if err != nil {
		return err
	}
	var wantF, gotF, wantN, gotN []string
	for _, c := range remote {
		wantF = append(wantF, c.MAC+" dst "+c.Host.Addr.String())
		wantN = append(wantN, c.IP()+" "+c.MAC)
	}
	for _, e := range fdb {
		gotF = append(gotF, e.MAC+" dst "+e.Dst)
	}
	for _, e := range neigh {
		gotN = append(gotN, e.IP+" "+e.MAC)
	}
	for _, s := range [][]string{wantF, gotF, wantN, gotN} {
		slices.Sort(s)
	}
	if !slices.Equal(wantF, gotF) {
		return fmt.Errorf("%s: fdb of vxsec-%d is %q, want %q", h.Name, vni, gotF, wantF)
	}
	if !slices.Equal(wantN, gotN) {
		return fmt.Errorf("%s: neighbours of vxsec-%d are %q, want %q", h.Name, vni, gotN, wantN)
	}
	for _, e := range neigh {
		if e.State != "PERMANENT" {
			return fmt.Errorf("%s: neighbour %s on vxsec-%d is %s, want PERMANENT", h.Name, e.IP, vni, e.State)
		}
	}
	return nil
}

// others returns the containers not on h.
func others(h *lab.Host, cs []*lab.Container) []*lab.Container {
	var o []*lab.Container
	for _, c := range cs {
		if c.Host != h {
			o = append(o, c)
		}
	}
	return o
}

// reachFast asserts c reaches dst, returning as soon as one reply arrives.
func reachFast(t *testing.T, c *lab.Container, dst string) {
	t.Helper()
	r, err := c.Ping(ctxT(t), dst, "-c", "1", "-w", "3", "-i", "0.2")
	if err != nil {
		t.Fatal(err)
	}
	if r.Received == 0 {
		t.Fatalf("%s (%s) → %s: no reply\n%s", c.Name, c.Host.Name, dst, r.Output)
	}
}

// nftTable is the host's `nft list table inet vxsec`.
func nftTable(t *testing.T, h *lab.Host) string {
	t.Helper()
	out, err := h.Exec(ctxT(t), "nft", "list", "table", "inet", "vxsec")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var (
	nftCounter  = regexp.MustCompile(`counter packets (\d+) bytes \d+`)
	nftElements = regexp.MustCompile(`(?s)elements = \{([^}]*)\}`)
)

// dataPortDrops sums the counters of the rules that drop traffic to the
// data port (4800) in the host's vxsec table.
func dataPortDrops(t *testing.T, h *lab.Host) int {
	t.Helper()
	table := nftTable(t, h)
	n, found := 0, false
	for _, line := range strings.Split(table, "\n") {
		if !strings.Contains(line, "4800") || !strings.Contains(line, "drop") {
			continue
		}
		if m := nftCounter.FindStringSubmatch(line); m != nil {
			v, _ := strconv.Atoi(m[1])
			n += v
			found = true
		}
	}
	if !found {
		t.Fatalf("%s: no counted rule dropping UDP to 4800 in the vxsec table:\n%s", h.Name, table)
	}
	return n
}

// memberSet returns every address in the element lists of the host's
// vxsec table (the sets of cluster members allowed to send VXLAN).
func memberSet(t *testing.T, h *lab.Host) []string {
	t.Helper()
	var a []string
	for _, m := range nftElements.FindAllStringSubmatch(nftTable(t, h), -1) {
		for _, e := range strings.Split(m[1], ",") {
			if addr, err := netip.ParseAddr(strings.TrimSpace(e)); err == nil {
				a = append(a, addr.String())
			}
		}
	}
	slices.Sort(a)
	return slices.Compact(a)
}

// rogueVTEP adds a machine at addr on the lab's underlay, no member, with
// a VXLAN device of the network's VNI aimed at victim's host and an
// overlay address (CIDR) of the network: the attacker of the non-member
// lock.
func rogueVTEP(t *testing.T, c *cluster, addr netip.Addr, vni int, h *lab.Host, victim *lab.Container, overlay string) *lab.Host {
	t.Helper()
	rogue, err := c.lab.AddNode(ctxT(t), "rogue", addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range [][]string{
		{"ip", "link", "add", "vx0", "type", "vxlan", "id", fmt.Sprint(vni), "dstport", "4800",
			"local", addr.String(), "remote", h.Addr.String(), "nolearning"},
		{"ip", "link", "set", "vx0", "address", "02:00:de:ad:be:ef"},
		{"ip", "addr", "add", overlay, "dev", "vx0"},
		{"ip", "link", "set", "vx0", "up"},
		{"ip", "neigh", "replace", victim.IP(), "lladdr", victim.MAC, "dev", "vx0", "nud", "permanent"},
		{"bridge", "fdb", "append", victim.MAC, "dev", "vx0", "dst", h.Addr.String()},
	} {
		if _, err := rogue.Exec(ctxT(t), s...); err != nil {
			t.Fatal(err)
		}
	}
	return rogue
}

// injectFails has the rogue ping the victim through its VXLAN device: no
// answer, nothing received by the victim, and h's data-port drop counter
// up by at least the packets sent (so they did arrive and were dropped).
func injectFails(t *testing.T, rogue, h *lab.Host, victim *lab.Container) {
	t.Helper()
	rx1 := rxPackets(t, victim)
	drops1 := dataPortDrops(t, h)
	const sent = 20
	r, _ := rogue.Ping(ctxT(t), victim.IP(), "-c", fmt.Sprint(sent), "-i", "0.05", "-W", "1")
	if r.Received != 0 {
		t.Errorf("the rogue got %d answers from the victim:\n%s", r.Received, r.Output)
	}
	if rx := rxPackets(t, victim); rx != rx1 {
		t.Errorf("the victim received %d packets during the injection", rx-rx1)
	}
	drops := dataPortDrops(t, h) - drops1
	t.Logf("rogue %s sent %d pings (%d with ARP); %s dropped %d packets at the data port; victim saw %d", rogue.Addr, sent, r.Sent, h.Name, drops, rxPackets(t, victim)-rx1)
	if drops < sent {
		t.Errorf("%s's data-port drop counter rose by %d, want at least %d (the injected packets must arrive and be dropped)", h.Name, drops, sent)
	}
}

// rxPackets reads a container interface's received-packets counter.
func rxPackets(t *testing.T, c *lab.Container) int {
	t.Helper()
	out, err := c.Exec(ctxT(t), "cat", "/sys/class/net/"+c.Ifname+"/statistics/rx_packets")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// parallel runs f for every host at once and waits.
func parallel(hosts []*lab.Host, f func(h *lab.Host)) {
	var wg sync.WaitGroup
	for _, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(h)
		}()
	}
	wg.Wait()
}

// wantPlaced waits until every host has its own container and the others'
// on vni, with exactly their FDB and neighbour entries pointing at their
// hosts' advertise addresses, and every host in its member set.
func wantPlaced(t *testing.T, hosts []*lab.Host, cs []*lab.Container, vni int, timeout time.Duration) {
	t.Helper()
	for _, h := range hosts {
		waitCounts(t, h, vni, 1, len(cs)-1, timeout)
		if err := wantEntries(ctxT(t), h, vni, others(h, cs)); err != nil {
			t.Fatal(err)
		}
		if set, want := memberSet(t, h), addrs(hosts); !slices.Equal(set, want) {
			t.Errorf("%s: firewall member set %v, want %v", h.Name, set, want)
		}
	}
}

// reachAll asserts every container reaches every other.
func reachAll(t *testing.T, cs []*lab.Container) {
	t.Helper()
	for _, from := range cs {
		for _, to := range cs {
			if from != to {
				reachFast(t, from, to.IP())
			}
		}
	}
}
