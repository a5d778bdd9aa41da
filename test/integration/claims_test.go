//go:build integration

package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vxsec/vxsec/internal/testutil"
	"github.com/vxsec/vxsec/lab"
)

// hookedBinary is the daemon built with test hooks (-tags testhooks):
// $VXSEC_HOOKED_BIN or the repo's bin/vxsec-hooked.
func hookedBinary(t *testing.T) string { return repoBinary(t, "VXSEC_HOOKED_BIN", "vxsec-hooked") }

// claimLogMsg is what a host logs, once, for a claim it ignores.
const claimLogMsg = "ignoring an endpoint claim: its address or MAC is held by an earlier endpoint in the network"

// TestAttackClaimTakeover: a member whose clock says 1970 claims, in a network it
// shares, the address and (on another endpoint) the MAC of a container
// another host's endpoint already holds, having made them while cut off
// from the cluster so that its own checks could not see the holder. The
// other members keep the holder's entries, install nothing for the
// takeover, log it, and keep reaching the holder; the member's honest
// endpoint (the positive control) is installed and reachable, so its table
// was received and acted on.
func TestAttackClaimTakeover(t *testing.T) {
	c := newCluster(t, 2)
	h1, h2 := c.hosts[0], c.hosts[1]
	ctx := ctxT(t)
	const (
		vni    = 7961
		subnet = "10.61.0.0/24"
	)
	ids := createEverywhere(t, c.hosts, "claims", vni, subnet)
	c1 := mustRun(t, h1, "c1", ids[h1], "10.61.0.11/24")
	c2 := mustRun(t, h2, "c2", ids[h2], "10.61.0.12/24")
	testutil.Until(t, 10*time.Second, "h2 holds h1's entries for c1", func() error {
		return wantEntries(ctx, h2, vni, []*lab.Container{c1})
	})
	reachFast(t, c2, c1.IP())

	// h3: the test build with its driver's clock at 1970, the cluster's
	// secret, and no seed: a cluster of its own for now.
	h3, err := c.lab.AddHost(ctx, "h3")
	if err != nil {
		t.Fatal(err)
	}
	epoch := time.Date(1970, 6, 1, 0, 0, 0, 0, time.UTC)
	offset := time.Until(epoch).Round(time.Second)
	h3.Bin = hookedBinary(t)
	h3.Env = append(h3.Env, "VXSEC_JOIN=", "VXSEC_TEST_CLOCK_OFFSET="+offset.String())
	if err := h3.Start(ctx); err != nil {
		t.Fatal(err)
	}
	c.hosts = append(c.hosts, h3)
	c.waitMembers(t, []*lab.Host{h3}, []*lab.Host{h3})
	c.waitMembers(t, []*lab.Host{h1, h2}, []*lab.Host{h1, h2})

	// The takeover, made where no check can see c1: the same network (same
	// VNI and subnet), an endpoint claiming c1's address, one claiming
	// c1's MAC, and the positive control, a container at a free address.
	id3 := "claims-h3"
	mustCreateNetwork(t, h3, id3, map[string]string{"vni": fmt.Sprint(vni)}, subnet, "")
	ipThief, err := h3.Client().CreateEndpoint(ctx, id3, "ip-thief", c1.Addr.String(), "")
	if err != nil {
		t.Fatalf("h3 claiming %s: %v", c1.Addr, err)
	}
	if _, err := h3.Client().CreateEndpoint(ctx, id3, "mac-thief", "10.61.0.14/24", c1.MAC); err != nil {
		t.Fatalf("h3 claiming MAC %s at 10.61.0.14: %v", c1.MAC, err)
	}
	c3 := mustRun(t, h3, "c3", id3, "10.61.0.13/24")
	thiefMAC := ""
	if ipThief.Interface != nil {
		thiefMAC = ipThief.Interface.MacAddress
	}
	t.Logf("h3 claims %s with MAC %s, and MAC %s at 10.61.0.14; control c3 at %s (%s)", c1.IP(), thiefMAC, c1.MAC, c3.IP(), c3.MAC)

	// h3's clock really says 1970: the Created its store holds for every
	// endpoint, which is what its table stamps on them.
	checkCreated1970(t, h3, id3)

	// h3 joins: a restart with the cluster's seed (its endpoints, Created
	// 1970, come back from its store).
	h3.Stop()
	h3.Env = append(h3.Env, "VXSEC_JOIN="+h1.Addr.String())
	if err := h3.Start(ctx); err != nil {
		t.Fatal(err)
	}
	joined := time.Now()
	c.waitMembers(t, c.hosts, c.hosts)

	// Positive control first: h2 installs h3's honest endpoint and reaches
	// it. h2 has then received and applied h3's table.
	took := testutil.Until(t, 30*time.Second, "h2 holds h3's entry for c3", func() error {
		neigh, err := h2.Neigh(ctx, vni)
		if err != nil {
			return err
		}
		fdb, err := h2.FDB(ctx, vni)
		if err != nil {
			return err
		}
		if !hasNeigh(neigh, c3.IP(), c3.MAC) || !hasFDB(fdb, c3.MAC, h3.Addr.String()) {
			return fmt.Errorf("neighbours %+v, fdb %+v", neigh, fdb)
		}
		return nil
	})
	r, err := c2.Ping(ctx, c3.IP(), "-c", "5", "-i", "0.2", "-W", "1")
	if err != nil || r.Received != 5 {
		t.Fatalf("positive control: c2 → c3 on h3: %+v %v", r, err)
	}
	t.Logf("positive control: h2 installed h3's c3 %v after h3's members settled (%v after its restart); c2 → c3 %d/%d replies",
		took.Round(time.Millisecond), time.Since(joined).Round(time.Millisecond), r.Received, r.Sent)

	// The takeover: h2 keeps c1's entries and installs nothing else.
	neigh, err := h2.Neigh(ctx, vni)
	if err != nil {
		t.Fatal(err)
	}
	fdb, err := h2.FDB(ctx, vni)
	if err != nil {
		t.Fatal(err)
	}
	var n11, n14, dstC1 []string
	for _, e := range neigh {
		switch e.IP {
		case c1.IP():
			n11 = append(n11, e.MAC)
		case "10.61.0.14":
			n14 = append(n14, e.MAC)
		}
	}
	for _, e := range fdb {
		if strings.EqualFold(e.MAC, c1.MAC) {
			dstC1 = append(dstC1, e.Dst)
		}
	}
	t.Logf("h2: neighbour %s → %v (c1 is %s); fdb %s → %v (h1 is %s); neighbours for 10.61.0.14: %v; %d neighbour and %d fdb entries in all",
		c1.IP(), n11, c1.MAC, c1.MAC, dstC1, h1.Addr, n14, len(neigh), len(fdb))
	if len(n11) != 1 || !strings.EqualFold(n11[0], c1.MAC) {
		t.Errorf("h2's neighbour entry for %s is %v, want c1's MAC %s only", c1.IP(), n11, c1.MAC)
	}
	if len(dstC1) != 1 || dstC1[0] != h1.Addr.String() {
		t.Errorf("h2's fdb entry for c1's MAC %s points at %v, want h1 (%s) only", c1.MAC, dstC1, h1.Addr)
	}
	if len(n14) != 0 {
		t.Errorf("h2 has a neighbour entry for the MAC thief 10.61.0.14: %v", n14)
	}
	if err := wantEntries(ctx, h2, vni, []*lab.Container{c1, c3}); err != nil {
		t.Error(err)
	}
	// h1 holds c1 itself: it installs neither claim either.
	if err := wantEntries(ctx, h1, vni, []*lab.Container{c2, c3}); err != nil {
		t.Error(err)
	}
	if n, err := netStatus(ctx, h2, vni); err != nil {
		t.Error(err)
	} else {
		t.Logf("h2's status for vni %d: %d local, %d remote endpoints (c1 and c3; h3 announces 3)", vni, n.Local, n.Remote)
	}

	// c2 still reaches c1 itself: every reply, and c1 saw the requests.
	rx0 := rxPackets(t, c1)
	const sent = 10
	r, err = c2.Ping(ctx, c1.IP(), "-c", fmt.Sprint(sent), "-i", "0.1", "-W", "1")
	if err != nil {
		t.Fatal(err)
	}
	rx := rxPackets(t, c1) - rx0
	t.Logf("c2 → c1 after the takeover: %d/%d replies; c1 received %d packets", r.Received, r.Sent, rx)
	if r.Received != sent {
		t.Errorf("c2 → c1: %d of %d replies\n%s", r.Received, sent, r.Output)
	}
	if rx < sent {
		t.Errorf("c1 received %d packets for %d pings: they went elsewhere", rx, sent)
	}

	// h2 logged each ignored claim of h3, naming it.
	for _, ip := range []string{c1.IP(), "10.61.0.14"} {
		lines := claimLogLines(t, h2, h3.Addr.String(), ip)
		t.Logf("h2 logged %d line(s) ignoring h3's claim on %s: %q", len(lines), ip, lines)
		if len(lines) != 1 {
			t.Errorf("h2's log has %d lines %q naming host %s and ip %s, want 1", len(lines), claimLogMsg, h3.Addr, ip)
		}
	}
}

// checkCreated1970 asserts that every endpoint h's store holds for network
// id, and the network itself, were created in 1970 by h's clock.
func checkCreated1970(t *testing.T, h *lab.Host, id string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(h.StateDir, "network-"+id+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var n struct {
		Created   time.Time `json:"created"`
		Endpoints map[string]struct {
			Address string    `json:"address"`
			Created time.Time `json:"created"`
		} `json:"endpoints"`
	}
	if err := json.Unmarshal(data, &n); err != nil {
		t.Fatal(err)
	}
	if n.Created.Year() != 1970 {
		t.Errorf("%s: network %s created %v by its clock, want 1970", h.Name, id, n.Created)
	}
	if len(n.Endpoints) != 3 {
		t.Errorf("%s: network %s holds %d endpoints, want 3", h.Name, id, len(n.Endpoints))
	}
	for _, ep := range n.Endpoints {
		t.Logf("%s: endpoint %s created %s", h.Name, ep.Address, ep.Created.Format(time.RFC3339))
		if ep.Created.Year() != 1970 {
			t.Errorf("%s: endpoint %s created %v by its clock, want 1970", h.Name, ep.Address, ep.Created)
		}
	}
}

// claimLogLines returns the lines of h's log that ignore host's claim on ip.
func claimLogLines(t *testing.T, h *lab.Host, host, ip string) []string {
	t.Helper()
	data, err := os.ReadFile(h.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, claimLogMsg) && strings.Contains(l, " host="+host+" ") && strings.Contains(l, " ip="+ip+" ") {
			out = append(out, l)
		}
	}
	return out
}

func hasNeigh(es []lab.NeighEntry, ip, mac string) bool {
	for _, e := range es {
		if e.IP == ip && strings.EqualFold(e.MAC, mac) {
			return true
		}
	}
	return false
}

func hasFDB(es []lab.FDBEntry, mac, dst string) bool {
	for _, e := range es {
		if strings.EqualFold(e.MAC, mac) && e.Dst == dst {
			return true
		}
	}
	return false
}
