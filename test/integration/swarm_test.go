//go:build integration

package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vxsec/vxsec/internal/testutil"
	"github.com/vxsec/vxsec/lab"
	"github.com/vxsec/vxsec/plugin"
	"github.com/vxsec/vxsec/swarmtrust"
	"github.com/vxsec/vxsec/swarmtrust/testpki"
)

// TestSwarmTrust: daemons on swarm nodes, with no VXSEC_SECRET and no
// VXSEC_JOIN, find each other through the managers in the swarm directory,
// agree a cluster secret over mutual TLS with their node certificates,
// report the global data scope, and carry a network across hosts. A host
// whose certificate is of another CA joins nothing and learns no secret.
// (Swarm directories here come from testpki; the swarm lab runs the same
// against a real swarm's.)
// swarmNode is a node of a test swarm: its ID and role.
type swarmNode struct{ id, role string }

const testSwarmID = "swarmclusterid000000000001"

// swarmHosts starts three daemons on lab hosts as the nodes of one swarm
// (two managers, a worker), with no secret and no join address, and waits
// for the cluster; prepare, if set, sees each host before its start.
// start starts one more host as a node with a certificate of issuer.
func swarmHosts(t *testing.T, ctx context.Context, prepare func(*lab.Host)) (c *cluster, hosts []*lab.Host, start func(*lab.Host, *testpki.CA, swarmNode)) {
	t.Helper()
	l := openLab(t, nil)
	c = &cluster{lab: l}
	ca, err := testpki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	nodes := []swarmNode{{"m1", swarmtrust.RoleManager}, {"m2", swarmtrust.RoleManager}, {"w3", swarmtrust.RoleWorker}}
	for i := range nodes {
		h, err := l.AddHost(ctx, fmt.Sprintf("h%d", i+1))
		if err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, h)
	}
	managers := []testpki.Manager{
		{NodeID: "m1", Addr: net.JoinHostPort(hosts[0].Addr.String(), "2377")},
		{NodeID: "m2", Addr: net.JoinHostPort(hosts[1].Addr.String(), "2377")},
	}
	start = func(h *lab.Host, issuer *testpki.CA, n swarmNode) {
		t.Helper()
		dir := t.TempDir()
		if err := issuer.Write(testpki.Node{Dir: dir, Cluster: testSwarmID, ID: n.id, Role: n.role, Managers: managers}); err != nil {
			t.Fatal(err)
		}
		h.Env = append(h.Env, "VXSEC_SWARM_DIR="+dir)
		if err := h.Start(ctx); err != nil {
			t.Fatal(err)
		}
		c.hosts = append(c.hosts, h)
	}
	for i, h := range hosts {
		if prepare != nil {
			prepare(h)
		}
		start(h, ca, nodes[i])
	}
	c.waitMembers(t, hosts, hosts)
	return c, hosts, start
}

// swarmNetwork creates network name (vni, a /24 subnet a.b.c.0/24) on
// every host, runs one container on each at a.b.c.10, .11, ... named
// prefix1, prefix2, ..., and waits until every host holds every endpoint.
func swarmNetwork(t *testing.T, hosts []*lab.Host, name string, vni int, subnet, prefix string) []*lab.Container {
	t.Helper()
	ids := createEverywhere(t, hosts, name, vni, subnet)
	base := strings.TrimSuffix(subnet, "0/24")
	var cs []*lab.Container
	for i, h := range hosts {
		cs = append(cs, mustRun(t, h, fmt.Sprintf("%s%d", prefix, i+1), ids[h], fmt.Sprintf("%s%d/24", base, 10+i)))
	}
	for _, h := range hosts {
		waitCounts(t, h, vni, 1, len(hosts)-1, 15*time.Second)
	}
	return cs
}

// checkSigned: every host holds a manager's pass with at least 30 minutes
// to run, and refused no table for its identity.
func checkSigned(t *testing.T, hosts []*lab.Host) {
	t.Helper()
	for _, h := range hosts {
		st, err := h.Status(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		gs, err := h.GossipStats(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		if st.Trust == nil || st.Trust.PassBy == "" || time.Until(st.Trust.PassNotAfter) < 30*time.Minute || gs.Refused["table-identity"] != 0 {
			t.Fatalf("%s: trust %+v, %d tables refused for their identity; want a pass and none refused", h.Name, st.Trust, gs.Refused["table-identity"])
		}
		t.Logf("%s signs its tables with a pass by %s until %s", h.Name, st.Trust.PassBy, st.Trust.PassNotAfter.UTC().Format(time.RFC3339))
	}
}

func TestSwarmTrust(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t0 := time.Now()
	c, hosts, start := swarmHosts(t, ctx, nil)
	t.Logf("cluster of 3 formed %v after the daemons started, with no secret or join address given", time.Since(t0).Round(time.Millisecond))

	var secretID string
	for _, h := range hosts {
		st, err := h.Status(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		if st.Trust == nil || st.Trust.SecretID == "" {
			t.Fatalf("%s: no swarm trust in its status: %+v", h.Name, st.Trust)
		}
		if secretID == "" {
			secretID = st.Trust.SecretID
		}
		if st.Trust.SecretID != secretID || st.Trust.SecretBy != "m1" {
			t.Fatalf("%s holds secret %s made by %s, want %s made by m1 (the first manager)", h.Name, st.Trust.SecretID, st.Trust.SecretBy, secretID)
		}
		caps, err := h.Client().Capabilities(ctxT(t))
		if err != nil || caps.Scope != "global" {
			t.Fatalf("%s: capabilities %+v, %v; want the global data scope on a swarm node", h.Name, caps, err)
		}
	}

	// The cluster carries a network: endpoints reach each other across hosts.
	const vni = 7301
	cs := swarmNetwork(t, hosts, "swarm", vni, "10.73.0.0/24", "s")
	for _, from := range cs {
		for _, to := range cs {
			if from != to {
				reachFast(t, from, to.IP())
			}
		}
	}
	// Every table was signed with the node's certificate and a manager's
	// pass for its address, and none was refused.
	checkSigned(t, hosts)

	// A rolling rotation of the cluster secret under traffic: a worker
	// cannot; a manager (m2) issues a new secret and every host moves to
	// it within seconds, the cluster stays whole, and a 100 packets/s
	// ping across hosts loses nothing.
	err := hosts[2].Client().Call(ctxT(t), "VxSec.RotateSecret", struct{}{}, nil)
	if err == nil || !strings.Contains(err.Error(), "only a swarm manager") {
		t.Fatalf("the worker w3 rotated the secret, or did not say why not: %v", err)
	}
	var rotated struct {
		SecretID   string `json:"secret_id"`
		Generation uint64 `json:"generation"`
	}
	var took time.Duration
	res, err := cs[0].PingAcross(ctx, cs[2].IP(), []string{"-i", "0.01"}, func() error {
		t0 := time.Now()
		if err := hosts[1].Client().Call(ctxT(t), "VxSec.RotateSecret", struct{}{}, &rotated); err != nil {
			return err
		}
		took = testutil.Until(t, 20*time.Second, "every host holds m2's new secret, in a whole cluster", func() error {
			for _, h := range hosts {
				st, err := h.Status(ctxT(t))
				if err != nil {
					return err
				}
				if st.Trust.SecretID != rotated.SecretID || st.Trust.SecretGeneration != rotated.Generation {
					return fmt.Errorf("%s holds secret %s generation %d", h.Name, st.Trust.SecretID, st.Trust.SecretGeneration)
				}
				if n := len(st.Alive()); n != len(hosts) {
					return fmt.Errorf("%s sees %d members alive", h.Name, n)
				}
			}
			return nil
		})
		// Gossip goes on under the new keys: a few probe periods more.
		time.Sleep(3 * time.Second)
		t.Logf("rotation issued after %s", time.Since(t0).Round(time.Millisecond))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent < 100 || res.Loss() != 0 {
		t.Fatalf("ping across the rotation: %d sent, %d received; want 0 lost", res.Sent, res.Received)
	}
	t.Logf("secret rotated to %s (generation %d) on every host within %s; ping at 100/s: %d sent, %d lost",
		rotated.SecretID, rotated.Generation, took.Round(time.Millisecond), res.Sent, res.Loss())
	for _, h := range hosts {
		if n := len(memberNames(t, h)); n != len(hosts) {
			t.Fatalf("%s lists %d members after the rotation", h.Name, n)
		}
	}
	secretID = rotated.SecretID

	// An encrypted network is not refused for want of a secret (this
	// kernel may refuse it for want of ESP, by name).
	err = hosts[0].Client().CreateNetwork(ctxT(t), "swarm-enc", map[string]string{"encrypted": "", "vni": "7302"}, "10.74.0.0/24", "")
	if err != nil && strings.Contains(err.Error(), "no secret") {
		t.Fatalf("encrypted network refused for want of a secret on a swarm node: %v", err)
	}
	if err == nil {
		if err := hosts[0].Client().DeleteNetwork(ctxT(t), "swarm-enc"); err != nil {
			t.Fatal(err)
		}
	}

	// An outsider: a certificate of another CA naming the same swarm and a
	// manager's ID. It gets no secret, so it never joins.
	other, err := testpki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	x, err := c.lab.AddHost(ctx, "x4")
	if err != nil {
		t.Fatal(err)
	}
	before, err := hosts[0].Status(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	// What the managers' gossip ports refused, in all: the outsider's
	// joins, once it has a secret of its own, are refused there.
	gossipRefused := func() (uint64, error) {
		var n uint64
		for _, h := range hosts[:2] {
			gs, err := h.GossipStats(ctxT(t))
			if err != nil {
				return 0, err
			}
			for _, v := range gs.Refused {
				n += v
			}
		}
		return n, nil
	}
	gossipBefore, err := gossipRefused()
	if err != nil {
		t.Fatal(err)
	}
	start(x, other, swarmNode{"m0", swarmtrust.RoleManager})
	// Signals that the outsider's attempts were made and refused, rather
	// than a wait: h1 refused its trust exchange, its first round is over
	// (a secret it makes itself is made there: it is the lowest manager ID
	// it knows), and if it has a secret, the managers' gossip ports
	// refused its join.
	testutil.Until(t, 30*time.Second, "the managers refuse the outsider", func() error {
		st, err := hosts[0].Status(ctxT(t))
		if err != nil {
			return err
		}
		if st.Trust.Refused <= before.Trust.Refused {
			return fmt.Errorf("h1 has refused no trust exchange since the outsider started (%d)", st.Trust.Refused)
		}
		xs, err := x.Status(ctxT(t))
		if err != nil {
			return err
		}
		if xs.Trust == nil || xs.Trust.LastRound.IsZero() {
			return fmt.Errorf("the outsider's first round is not over: %+v", xs.Trust)
		}
		if xs.Trust.SecretID == "" {
			return nil
		}
		n, err := gossipRefused()
		if err != nil {
			return err
		}
		if n <= gossipBefore {
			return fmt.Errorf("the outsider made secret %s; the managers' gossip ports have refused nothing since (%d)", xs.Trust.SecretID, n)
		}
		return nil
	})
	for _, h := range hosts {
		if slices.Contains(memberNames(t, h), x.Addr.String()) {
			t.Fatalf("%s lists the outsider %s as a member", h.Name, x.Addr)
		}
	}
	st, err := x.Status(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.Trust == nil || st.Trust.SecretID == secretID {
		t.Fatalf("the outsider learned the swarm's secret: %+v", st.Trust)
	}
	if n, err := gossipRefused(); err == nil {
		t.Logf("the outsider holds secret %q of its own; the managers' gossip ports refused %d more", st.Trust.SecretID, n-gossipBefore)
	}
	after, err := hosts[0].Status(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if after.Trust.Refused <= before.Trust.Refused {
		t.Fatalf("h1 refused %d peers before the outsider came and %d after; want more", before.Trust.Refused, after.Trust.Refused)
	}
	t.Logf("outsider refused (%s); h1 served %d exchanges", after.Trust.LastRefusal, after.Trust.Served)
}

// TestAttackSwarmLeakedSecret: the attacker holds the swarm's cluster
// secret (read from h1's disk) but no node certificate of the swarm. It
// joins the cluster with VXSEC_SECRET (the positive control: the secret is
// the cluster's, so every host lists it as a member), publishes an
// endpoint on the network and pulls the others' tables. Every host refuses
// its table and its pulls: it installs nobody's endpoints, nobody installs
// its, and c1 does not reach its container.
func TestAttackSwarmLeakedSecret(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, hosts, _ := swarmHosts(t, ctx, nil)
	const vni = 7303
	cs := swarmNetwork(t, hosts, "swarm", vni, "10.73.0.0/24", "s")
	reachFast(t, cs[0], cs[2].IP())
	c1 := cs[0]
	raw, err := os.ReadFile(filepath.Join(filepath.Dir(hosts[0].StateDir), "swarm-secret.json"))
	if err != nil {
		t.Fatal(err)
	}
	var kept struct {
		Record struct {
			Secret []byte `json:"secret"`
		} `json:"record"`
	}
	if err := json.Unmarshal(raw, &kept); err != nil || len(kept.Record.Secret) != 32 {
		t.Fatalf("reading h1's swarm secret: %v", err)
	}
	y, err := c.lab.AddHost(ctxT(t), "y5")
	if err != nil {
		t.Fatal(err)
	}
	y.Env = append(y.Env, "VXSEC_SECRET="+base64.StdEncoding.EncodeToString(kept.Record.Secret),
		"VXSEC_JOIN="+hosts[0].Addr.String())
	if err := y.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	defer y.Stop()
	testutil.Until(t, 20*time.Second, "the attacker is a member of every host", func() error {
		for _, h := range append(slices.Clone(hosts), y) {
			if !slices.Contains(memberNames(t, h), y.Addr.String()) {
				return fmt.Errorf("%s does not list %s", h.Name, y.Addr)
			}
		}
		return nil
	})
	id := createEverywhere(t, []*lab.Host{y}, "swarm", vni, "10.73.0.0/24")[y]
	cy := mustRun(t, y, "y5c", id, "10.73.0.99/24")
	testutil.Until(t, 20*time.Second, "every host refuses the attacker's table and pulls", func() error {
		for _, h := range hosts {
			gs, err := h.GossipStats(ctxT(t))
			if err != nil {
				return err
			}
			if gs.Refused["table-identity"] == 0 || gs.Refused["pull-identity"] == 0 {
				return fmt.Errorf("%s refused %d tables and %d pulls for their identity", h.Name, gs.Refused["table-identity"], gs.Refused["pull-identity"])
			}
		}
		return nil
	})
	for _, h := range hosts {
		if n, err := netStatus(ctxT(t), h, vni); err != nil || n.Remote != len(hosts)-1 {
			t.Fatalf("%s has %+v on vni %d (%v): want the %d other nodes' endpoints, not the attacker's", h.Name, n, vni, err, len(hosts)-1)
		}
	}
	if n, err := netStatus(ctxT(t), y, vni); err != nil || n.Remote != 0 {
		t.Fatalf("the attacker installed others' endpoints: %+v %v", n, err)
	}
	if res, err := c1.Ping(ctxT(t), cy.IP(), "-c", "3", "-W", "1", "-i", "0.2"); err == nil && res.Received != 0 {
		t.Fatalf("c1 reached the attacker's container: %+v", res)
	}
	gs, _ := hosts[0].GossipStats(ctxT(t))
	t.Logf("a member with the swarm's secret and no node certificate: listed by every host, its table refused (h1: %d times) and its pulls refused (h1: %d), no endpoint installed either way",
		gs.Refused["table-identity"], gs.Refused["pull-identity"])
}

func memberNames(t *testing.T, h *lab.Host) []string {
	t.Helper()
	st, err := h.Status(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range st.Members {
		out = append(out, m.Name)
	}
	return out
}

// TestAttackSwarmEvicted: after `docker node rm`, a manager runs `vxsec
// evict` on the node. The evicted node (w3, on h3) keeps its certificate,
// its pass and the old secret. Control: before the eviction c1 and c3
// reach each other. After it: h1 and h2 drop w3's endpoint within the
// stated bound (measured), c1 no longer reaches c3, every host but h3
// holds the new secret, and h3 does not get it.
func TestAttackSwarmEvicted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, hosts, _ := swarmHosts(t, ctx, nil)
	const vni = 7305
	cs := swarmNetwork(t, hosts, "evict", vni, "10.73.5.0/24", "v")
	reachFast(t, cs[0], cs[2].IP())
	reachFast(t, cs[2], cs[0].IP())

	var out struct {
		Seq      uint64 `json:"eviction_seq"`
		SecretID string `json:"secret_id"`
	}
	if err := hosts[2].Client().Call(ctxT(t), "VxSec.Evict", plugin.EvictRequest{Nodes: []string{"m2"}}, nil); err == nil || !strings.Contains(err.Error(), "only a swarm manager") {
		t.Fatalf("the worker w3 evicted m2, or did not say why not: %v", err)
	}
	t0 := time.Now()
	if err := hosts[0].Client().Call(ctxT(t), "VxSec.Evict", plugin.EvictRequest{Nodes: []string{"w3"}}, &out); err != nil {
		t.Fatal(err)
	}
	took1 := waitCounts(t, hosts[0], vni, 1, 1, 15*time.Second)
	waitCounts(t, hosts[1], vni, 1, 1, 15*time.Second)
	t.Logf("w3's endpoint dropped by h1 %s and by h2 %s after `vxsec evict w3` (list %d, new secret %s)",
		took1.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond), out.Seq, out.SecretID)
	if res, err := cs[0].Ping(ctxT(t), cs[2].IP(), "-c", "3", "-W", "1", "-i", "0.2"); err == nil && res.Received != 0 {
		t.Fatalf("c1 reached c3 on the evicted node: %+v", res)
	}
	testutil.Until(t, 10*time.Second, "h1 and h2 hold the new secret", func() error {
		for _, h := range hosts[:2] {
			st, err := h.Status(ctxT(t))
			if err != nil {
				return err
			}
			if st.Trust.SecretID != out.SecretID {
				return fmt.Errorf("%s holds %s", h.Name, st.Trust.SecretID)
			}
		}
		return nil
	})
	time.Sleep(2 * time.Second)
	st, err := hosts[2].Status(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.Trust.SecretID == out.SecretID {
		t.Fatal("the evicted node learned the new secret")
	}
	if n, err := netStatus(ctxT(t), hosts[2], vni); err == nil {
		t.Logf("h3 (evicted) holds secret %s, not %s; it installed %d remote endpoints before the eviction and cannot pull again", st.Trust.SecretID, out.SecretID, n.Remote)
	}
}
