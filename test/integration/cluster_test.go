//go:build integration

package integration

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vxsec/vxsec/internal/testutil"
	"github.com/vxsec/vxsec/lab"
	"github.com/vxsec/vxsec/plugin"
)

// TestClusterReachability: one network (one VNI) on three hosts, two
// containers on each: every container reaches every other; each host holds
// exactly the other hosts' endpoints as static FDB and neighbour entries and
// nothing to flood with; a removed container's entries go at once; the
// firewall's member set holds the three hosts.
func TestClusterReachability(t *testing.T) {
	c := newCluster(t, 3)
	const vni = 7001
	ids := createEverywhere(t, c.hosts, "reach", vni, "10.20.0.0/24")
	var cs []*lab.Container
	for i, h := range c.hosts {
		for j := 0; j < 2; j++ {
			cs = append(cs, mustRun(t, h, fmt.Sprintf("c%d%d", i+1, j), ids[h], fmt.Sprintf("10.20.0.%d/24", 10*(i+1)+j)))
		}
	}
	for _, h := range c.hosts {
		waitCounts(t, h, vni, 2, 4, 5*time.Second)
		if err := wantEntries(ctxT(t), h, vni, others(h, cs)); err != nil {
			t.Fatal(err)
		}
		if set, want := memberSet(t, h), addrs(c.hosts); !slices.Equal(set, want) {
			t.Errorf("%s: firewall member set %v, want %v", h.Name, set, want)
		}
	}
	for _, from := range cs {
		for _, to := range cs {
			if from != to {
				reachFast(t, from, to.IP())
			}
		}
	}

	// A container that goes (Leave, DeleteEndpoint) is gone from the other
	// hosts at once.
	gone := cs[1] // second container of h1
	if err := gone.Remove(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	cs = slices.Delete(cs, 1, 2)
	for _, h := range c.hosts[1:] {
		took := testutil.Until(t, 10*time.Second, "removed endpoint gone from "+h.Name, func() error {
			return wantEntries(ctxT(t), h, vni, others(h, cs))
		})
		t.Logf("removed endpoint gone from %s after %v", h.Name, took.Round(time.Millisecond))
		waitCounts(t, h, vni, 2, 3, time.Second)
	}

	// A host that deletes its containers and then the network drops out of
	// the others' entries; the others keep talking.
	h3 := c.hosts[2]
	for _, ct := range slices.Clone(cs) {
		if ct.Host == h3 {
			if err := ct.Remove(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			cs = slices.DeleteFunc(cs, func(x *lab.Container) bool { return x == ct })
		}
	}
	if err := h3.Client().DeleteNetwork(ctxT(t), ids[h3]); err != nil {
		t.Fatal(err)
	}
	for _, h := range c.hosts[:2] {
		testutil.Until(t, 10*time.Second, h.Name+" holds no entry of h3's", func() error {
			return wantEntries(ctxT(t), h, vni, others(h, cs))
		})
	}
	reachFast(t, cs[0], cs[len(cs)-1].IP())
}

// TestAttackCrossNetwork: two networks spanning three hosts reach nothing of
// each other by any address, across hosts or on one host, nor any host's
// underlay address through the overlay; positive controls first and last.
func TestAttackCrossNetwork(t *testing.T) {
	c := newCluster(t, 3)
	h1, h2, h3 := c.hosts[0], c.hosts[1], c.hosts[2]
	idsA := createEverywhere(t, c.hosts, "isoA", 7101, "10.31.0.0/24")
	idsB := createEverywhere(t, c.hosts, "isoB", 7102, "10.32.0.0/24")
	a1 := mustRun(t, h1, "a1", idsA[h1], "10.31.0.11/24")
	a2 := mustRun(t, h2, "a2", idsA[h2], "10.31.0.12/24")
	a3 := mustRun(t, h3, "a3", idsA[h3], "10.31.0.13/24")
	b1 := mustRun(t, h1, "b1", idsB[h1], "10.32.0.11/24")
	b2 := mustRun(t, h2, "b2", idsB[h2], "10.32.0.12/24")
	b3 := mustRun(t, h3, "b3", idsB[h3], "10.32.0.13/24")
	all := []*lab.Container{a1, a2, a3, b1, b2, b3}
	for _, h := range c.hosts {
		waitCounts(t, h, 7101, 1, 2, 5*time.Second)
		waitCounts(t, h, 7102, 1, 2, 5*time.Second)
		if err := wantEntries(ctxT(t), h, 7101, others(h, []*lab.Container{a1, a2, a3})); err != nil {
			t.Fatal(err)
		}
		if err := wantEntries(ctxT(t), h, 7102, others(h, []*lab.Container{b1, b2, b3})); err != nil {
			t.Fatal(err)
		}
	}

	// Positive controls across hosts.
	reach(t, a1, a2.IP(), true)
	reach(t, a3, a1.IP(), true)
	reach(t, b2, b3.IP(), true)
	reach(t, b1, b3.IP(), true)

	// Containers that route everything through the overlay.
	for _, ct := range all {
		for _, dst := range []string{"10.31.0.0/24", "10.32.0.0/24", lab.Underlay.String()} {
			if _, err := ct.Exec(ctxT(t), "ip", "route", "replace", dst, "dev", ct.Ifname); err != nil {
				t.Fatal(err)
			}
		}
	}
	cases := []struct {
		from *lab.Container
		dst  string
	}{
		{a1, b2.IP()}, {b2, a1.IP()}, {a2, b3.IP()}, {b3, a2.IP()}, // other network, other host
		{a1, b1.IP()}, {b1, a1.IP()}, // other network, same host
		{a2, "10.32.0.1"}, {b2, "10.31.0.1"}, // the other network's gateway address
		{a1, h1.Addr.String()}, {a1, h2.Addr.String()}, {b3, h1.Addr.String()}, {b3, h3.Addr.String()}, // hosts via the overlay
	}
	t.Run("negatives", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s-to-%s", tc.from.Name, tc.dst), func(t *testing.T) {
				t.Parallel()
				reach(t, tc.from, tc.dst, false)
			})
		}
	})
	reach(t, a2, a3.IP(), true)
	reach(t, b3, b1.IP(), true)
}

// TestClusterOverlappingSubnets: two VNIs with one subnet across hosts, the
// same addresses used in both: each container is answered by its own
// network's peer on another host.
func TestClusterOverlappingSubnets(t *testing.T) {
	c := newCluster(t, 3)
	h1, h2, h3 := c.hosts[0], c.hosts[1], c.hosts[2]
	idsA := createEverywhere(t, c.hosts, "ovA", 7201, "10.40.0.0/24")
	idsB := createEverywhere(t, c.hosts, "ovB", 7202, "10.40.0.0/24")
	a1 := mustRun(t, h1, "a1", idsA[h1], "10.40.0.2/24")
	a2 := mustRun(t, h2, "a2", idsA[h2], "10.40.0.3/24")
	b1 := mustRun(t, h2, "b1", idsB[h2], "10.40.0.2/24")
	b2 := mustRun(t, h3, "b2", idsB[h3], "10.40.0.3/24")
	waitCounts(t, h1, 7201, 1, 1, 5*time.Second)
	waitCounts(t, h2, 7201, 1, 1, 5*time.Second)
	waitCounts(t, h2, 7202, 1, 1, 5*time.Second)
	waitCounts(t, h3, 7202, 1, 1, 5*time.Second)
	for _, pair := range [][2]*lab.Container{{a1, a2}, {a2, a1}, {b1, b2}, {b2, b1}} {
		reach(t, pair[0], pair[1].IP(), true)
		neigh, err := pair[0].Exec(ctxT(t), "ip", "neigh", "show", pair[1].IP())
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(neigh, pair[1].MAC) {
			t.Fatalf("%s resolved %s to %q, want its own network's peer %s on %s", pair[0].Name, pair[1].IP(), neigh, pair[1].MAC, pair[1].Host.Name)
		}
	}
}

// TestClusterMTU: across hosts a full-size DF packet passes; one byte more
// is refused by the sender's own kernel.
func TestClusterMTU(t *testing.T) {
	c := newCluster(t, 2)
	h1, h2 := c.hosts[0], c.hosts[1]
	ids := createEverywhere(t, c.hosts, "mtu", 7301, "10.50.0.0/24")
	c1 := mustRun(t, h1, "c1", ids[h1], "10.50.0.2/24")
	c2 := mustRun(t, h2, "c2", ids[h2], "10.50.0.3/24")
	waitCounts(t, h1, 7301, 1, 1, 5*time.Second)
	waitCounts(t, h2, 7301, 1, 1, 5*time.Second)
	full, err := c1.Ping(ctxT(t), c2.IP(), "-c", "3", "-i", "0.2", "-W", "1", "-M", "do", "-s", "1422")
	if err != nil || full.Received != 3 {
		t.Fatalf("1422-byte DF ping across hosts: %+v %v", full, err)
	}
	over, _ := c1.Ping(ctxT(t), c2.IP(), "-c", "1", "-W", "1", "-M", "do", "-s", "1423")
	if over.Received != 0 || !strings.Contains(over.Output, "message too long") {
		t.Fatalf("1423-byte DF ping: want a local 'message too long', got:\n%s", over.Output)
	}
}

// TestClusterHostKillAndReturn: a host whose daemon dies and whose underlay
// goes (a dead machine) disappears from the others' status and kernel
// entries within the failure bound, while the survivors keep talking; when
// it comes back its endpoints return everywhere and it learns everyone's.
func TestClusterHostKillAndReturn(t *testing.T) {
	c := newCluster(t, 3)
	h1, h2, h3 := c.hosts[0], c.hosts[1], c.hosts[2]
	const vni = 7401
	ids := createEverywhere(t, c.hosts, "kill", vni, "10.60.0.0/24")
	c1 := mustRun(t, h1, "c1", ids[h1], "10.60.0.11/24")
	c2 := mustRun(t, h2, "c2", ids[h2], "10.60.0.12/24")
	c3 := mustRun(t, h3, "c3", ids[h3], "10.60.0.13/24")
	all := []*lab.Container{c1, c2, c3}
	for _, h := range c.hosts {
		waitCounts(t, h, vni, 1, 2, 5*time.Second)
	}
	reachFast(t, c1, c3.IP())

	// h3 dies: no daemon, no cable.
	if err := h3.SetUnderlay(ctxT(t), false); err != nil {
		t.Fatal(err)
	}
	h3.Kill()
	died := time.Now()
	survivors := []*lab.Host{h1, h2}
	took := make([]time.Duration, len(survivors))
	var wg sync.WaitGroup
	errs := make([]error, len(survivors))
	for i, h := range survivors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = lab.WaitFor(context.Background(), 3*failBound, func() error {
				st, err := h.Status(context.Background())
				if err != nil {
					return err
				}
				if m, ok := st.Member(h3.Addr.String()); ok && m.Status == "alive" {
					return fmt.Errorf("h3 still alive in %s's members", h.Name)
				}
				n, ok := st.Network(vni)
				if !ok || n.Remote != 1 {
					return fmt.Errorf("%s's status for vni %d: %+v", h.Name, vni, n)
				}
				return wantEntries(context.Background(), h, vni, others(h, []*lab.Container{c1, c2}))
			})
			took[i] = time.Since(died)
		}()
	}
	// Meanwhile the survivors keep talking.
	r, err := c1.Ping(ctxT(t), c2.IP(), "-c", "50", "-i", "0.05", "-W", "1")
	wg.Wait()
	for i, h := range survivors {
		if errs[i] != nil {
			t.Fatalf("%s never dropped h3: %v", h.Name, errs[i])
		}
		t.Logf("FAILURE DETECTION: %s dropped h3's endpoints %v after it died", h.Name, took[i].Round(10*time.Millisecond))
		if took[i] > failBound {
			t.Errorf("%s dropped h3 after %v, beyond the %v bound", h.Name, took[i], failBound)
		}
	}
	if err != nil || r.Loss() != 0 {
		t.Errorf("survivors' ping while h3 died: %+v %v", r, err)
	}
	if st, err := h1.Status(ctxT(t)); err == nil {
		m, _ := st.Member(h3.Addr.String())
		t.Logf("h1 lists h3 as %+v", m)
	}
	// The firewall follows membership: the dead host may no longer send.
	for _, h := range survivors {
		testutil.Until(t, 10*time.Second, h.Name+"'s firewall drops the dead host", func() error {
			if set, want := memberSet(t, h), addrs(survivors); !slices.Equal(set, want) {
				return fmt.Errorf("member set %v, want %v", set, want)
			}
			return nil
		})
	}

	// h3 comes back: cable first, then the daemon (as a rebooting host).
	if err := h3.SetUnderlay(ctxT(t), true); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	if err := h3.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for _, h := range c.hosts {
		testutil.Until(t, 20*time.Second, "h3's return seen on "+h.Name, func() error {
			n, err := netStatus(ctxT(t), h, vni)
			if err != nil {
				return err
			}
			if n.Local != 1 || n.Remote != 2 {
				return fmt.Errorf("status %+v", n)
			}
			return wantEntries(ctxT(t), h, vni, others(h, all))
		})
		t.Logf("RETURN: %s has every entry %v after h3's cable and daemon came back", h.Name, time.Since(back).Round(10*time.Millisecond))
	}
	c.waitMembers(t, c.hosts, c.hosts)
	if set, want := memberSet(t, h1), addrs(c.hosts); !slices.Equal(set, want) {
		t.Errorf("h1's firewall member set after the return: %v, want %v", set, want)
	}
	reachFast(t, c1, c3.IP())
	reachFast(t, c3, c2.IP())
}

// TestClusterRestartNoLoss: a ping at 100 packets/s between containers on
// two hosts loses nothing while one host's daemon is killed, restarted,
// stopped and started again; the other hosts never drop its endpoints.
func TestClusterRestartNoLoss(t *testing.T) {
	c := newCluster(t, 3)
	h1, h2 := c.hosts[0], c.hosts[1]
	const vni = 7501
	ids := createEverywhere(t, c.hosts, "rs", vni, "10.70.0.0/24")
	c1 := mustRun(t, h1, "c1", ids[h1], "10.70.0.11/24")
	c2 := mustRun(t, h2, "c2", ids[h2], "10.70.0.12/24")
	waitCounts(t, h1, vni, 1, 1, 5*time.Second)
	waitCounts(t, h2, vni, 1, 1, 5*time.Second)
	waitCounts(t, c.hosts[2], vni, 0, 2, 5*time.Second)
	reachFast(t, c1, c2.IP())

	const count = 1000 // 10 s at 100/s
	var res lab.PingResult
	var perr error
	var pingEnd time.Time
	done := make(chan struct{})
	go func() {
		defer close(done)
		res, perr = c1.Ping(context.Background(), c2.IP(), "-c", fmt.Sprint(count), "-i", "0.01", "-W", "1")
		pingEnd = time.Now()
	}()
	// While the ping runs, h1 must keep h2's endpoint the whole time.
	var phase sync.Mutex
	current := "before the first restart"
	setPhase := func(p string) { phase.Lock(); current = p; phase.Unlock() }
	getPhase := func() string { phase.Lock(); defer phase.Unlock(); return current }
	stopWatch := make(chan struct{})
	watchErr := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stopWatch:
				watchErr <- nil
				return
			case <-time.After(50 * time.Millisecond):
			}
			fdb, err := h1.FDB(context.Background(), vni)
			if err != nil {
				watchErr <- err
				return
			}
			if !slices.Contains(fdb, lab.FDBEntry{MAC: c2.MAC, Dst: h2.Addr.String()}) {
				watchErr <- fmt.Errorf("h1 lost h2's endpoint during h2's daemon restarts (%s, at %s): fdb %v", getPhase(), time.Now().Format("15:04:05.000"), fdb)
				return
			}
		}
	}()
	// A sleep: the ping (one blocking command) gives no signal that it
	// has started, and it must be under way before the first restart.
	time.Sleep(500 * time.Millisecond)
	for i, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM, syscall.SIGKILL} {
		setPhase(fmt.Sprintf("restart %d by %v from %s", i+1, sig, time.Now().Format("15:04:05.000")))
		if err := h2.Restart(ctxT(t), sig); err != nil {
			t.Fatal(err)
		}
		setPhase(fmt.Sprintf("after restart %d by %v, daemon up at %s", i+1, sig, time.Now().Format("15:04:05.000")))
		c.waitMembers(t, []*lab.Host{h1, h2}, c.hosts)
		waitCounts(t, h2, vni, 1, 1, 5*time.Second)
	}
	restartsDone := time.Now()
	<-done
	close(stopWatch)
	if err := <-watchErr; err != nil {
		t.Error(err)
	}
	if perr != nil {
		t.Fatal(perr)
	}
	if pingEnd.Before(restartsDone) {
		t.Fatalf("the ping ended before the restarts did: make it longer")
	}
	if res.Sent != count || res.Loss() != 0 {
		t.Fatalf("ping across h2's daemon restarts: sent %d, received %d; want %d, no loss\n%s", res.Sent, res.Received, count, res.Output)
	}
	t.Logf("ping across 3 restarts of h2's daemon: %d sent, %d received", res.Sent, res.Received)
	// The restarted daemon still serves: a new container on h2 is reached from h1.
	c3 := mustRun(t, h2, "c3", ids[h2], "10.70.0.13/24")
	waitCounts(t, h1, vni, 1, 2, 5*time.Second)
	reachFast(t, c1, c3.IP())
}

// TestAttackInjection: a machine on the underlay that is no member builds
// its own VXLAN device with the network's VNI aimed at a member and sends to
// a container: the container sees nothing and the member's firewall counts
// the drops. A member's traffic (the positive control) passes and is seen.
func TestAttackInjection(t *testing.T) {
	c := newCluster(t, 2)
	h1, h2 := c.hosts[0], c.hosts[1]
	const vni = 7601
	ids := createEverywhere(t, c.hosts, "inj", vni, "10.80.0.0/24")
	victim := mustRun(t, h1, "victim", ids[h1], "10.80.0.11/24")
	friend := mustRun(t, h2, "friend", ids[h2], "10.80.0.12/24")
	waitCounts(t, h1, vni, 1, 1, 5*time.Second)
	waitCounts(t, h2, vni, 1, 1, 5*time.Second)

	// Positive control: a member's traffic reaches the victim, and the
	// counter used below sees it.
	rx0 := rxPackets(t, victim)
	drops0 := dataPortDrops(t, h1)
	r, err := friend.Ping(ctxT(t), victim.IP(), "-c", "10", "-i", "0.05", "-W", "1")
	if err != nil || r.Received != 10 {
		t.Fatalf("member's ping: %+v %v", r, err)
	}
	if rx := rxPackets(t, victim); rx-rx0 < 10 {
		t.Fatalf("victim's rx counter moved by %d for 10 member pings: the counter cannot be trusted", rx-rx0)
	}
	if d := dataPortDrops(t, h1); d != drops0 {
		t.Errorf("a member's traffic was counted as dropped: %d → %d", drops0, d)
	}

	// The rogue: a machine on the same underlay, no member.
	rogue := rogueVTEP(t, c, netip.MustParseAddr("198.18.0.200"), vni, h1, victim, "10.80.0.200/24")
	injectFails(t, rogue, h1, victim)
	// And the members still talk.
	reachFast(t, friend, victim.IP())
}

// TestAttackWrongSecret: a host with another secret, and one with none,
// both pointed at the cluster, never become members anywhere and their
// endpoints never reach the cluster's hosts (nor theirs the cluster's).
func TestAttackWrongSecret(t *testing.T) {
	c := newCluster(t, 3)
	const vni = 7701
	good := slices.Clone(c.hosts)
	ids := createEverywhere(t, good, "ws", vni, "10.90.0.0/24")
	var cs []*lab.Container
	for i, h := range good {
		cs = append(cs, mustRun(t, h, fmt.Sprintf("c%d", i+1), ids[h], fmt.Sprintf("10.90.0.%d/24", 11+i)))
	}
	for _, h := range good {
		waitCounts(t, h, vni, 1, 2, 5*time.Second)
	}
	wrong := c.addHost(t, "h4", "VXSEC_SECRET="+lab.NewSecret())
	none := c.addHost(t, "h5", "VXSEC_SECRET=")
	for i, h := range []*lab.Host{wrong, none} {
		id := "ws-" + h.Name
		mustCreateNetwork(t, h, id, map[string]string{"vni": fmt.Sprint(vni)}, "10.90.0.0/24", "")
		cs = append(cs, mustRun(t, h, "x"+h.Name, id, fmt.Sprintf("10.90.0.%d/24", 21+i)))
	}
	outsiders := []string{wrong.Addr.String(), none.Addr.String()}
	// For a while (gossip has ample time to spread), nothing changes on the
	// good hosts and the outsiders stay alone.
	deadline := time.Now().Add(6 * time.Second)
	for time.Now().Before(deadline) {
		for _, h := range good {
			st, err := h.Status(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range st.Members {
				if slices.Contains(outsiders, m.Addr) {
					t.Fatalf("%s lists outsider %+v as a member", h.Name, m)
				}
			}
			if n, _ := st.Network(vni); n.Local != 1 || n.Remote != 2 {
				t.Fatalf("%s's network changed: %+v", h.Name, n)
			}
			if err := wantEntries(ctxT(t), h, vni, others(h, cs[:3])); err != nil {
				t.Fatal(err)
			}
			if set := memberSet(t, h); slices.ContainsFunc(set, func(a string) bool { return slices.Contains(outsiders, a) }) {
				t.Fatalf("%s's firewall lets an outsider send: %v", h.Name, set)
			}
		}
		for _, h := range []*lab.Host{wrong, none} {
			st, err := h.Status(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range st.Members {
				if m.Addr != h.Addr.String() && m.Status == "alive" {
					t.Fatalf("outsider %s sees %+v alive", h.Name, m)
				}
			}
			if n, _ := st.Network(vni); n.Remote != 0 {
				t.Fatalf("outsider %s learned %d remote endpoints", h.Name, n.Remote)
			}
		}
		time.Sleep(200 * time.Millisecond) // an absence, checked over a window: nothing signals it
	}
	reach(t, cs[3], cs[0].IP(), false)
	reachFast(t, cs[0], cs[2].IP())
}

// TestClusterLateJoiner: a host started after endpoints exist gets the full
// state (not only events it happened to hear), and the others get its.
func TestClusterLateJoiner(t *testing.T) {
	c := newCluster(t, 2)
	const vni = 7801
	ids := createEverywhere(t, c.hosts, "late", vni, "10.100.0.0/24")
	var cs []*lab.Container
	for i, h := range c.hosts {
		for j := 0; j < 2; j++ {
			cs = append(cs, mustRun(t, h, fmt.Sprintf("c%d%d", i+1, j), ids[h], fmt.Sprintf("10.100.0.%d/24", 10*(i+1)+j)))
		}
	}
	for _, h := range c.hosts {
		waitCounts(t, h, vni, 2, 2, 5*time.Second)
	}
	h3 := c.addHost(t, "h3")
	c.waitMembers(t, c.hosts, c.hosts)
	id := "late-h3"
	mustCreateNetwork(t, h3, id, map[string]string{"vni": fmt.Sprint(vni)}, "10.100.0.0/24", "")
	took := waitCounts(t, h3, vni, 0, 4, 10*time.Second)
	t.Logf("late joiner has the 4 existing endpoints %v after creating the network", took.Round(time.Millisecond))
	c3 := mustRun(t, h3, "c3", id, "10.100.0.30/24")
	cs = append(cs, c3)
	for _, h := range c.hosts {
		waitCounts(t, h, vni, map[bool]int{true: 1, false: 2}[h == h3], map[bool]int{true: 4, false: 3}[h == h3], 5*time.Second)
		if err := wantEntries(ctxT(t), h, vni, others(h, cs)); err != nil {
			t.Fatal(err)
		}
		if set, want := memberSet(t, h), addrs(c.hosts); !slices.Equal(set, want) {
			t.Errorf("%s: firewall member set %v, want %v", h.Name, set, want)
		}
	}
	for _, ct := range cs[:4] {
		reachFast(t, c3, ct.IP())
		reachFast(t, ct, c3.IP())
	}
}

// TestClusterConflicts: a VNI claimed by another host with another subnet,
// and an address claimed by another host's endpoint in one network, are
// refused with errors naming them, leave the holder intact, and become
// free once the holder lets go.
func TestClusterConflicts(t *testing.T) {
	c := newCluster(t, 3)
	h1, h2, h3 := c.hosts[0], c.hosts[1], c.hosts[2]
	ctx := ctxT(t)

	// h1 and h3 agree on vni 7901 = 10.110.0.0/24; h3 seeing h1's endpoint
	// shows that h1's claims have spread.
	mustCreateNetwork(t, h1, "vn-h1", map[string]string{"vni": "7901"}, "10.110.0.0/24", "")
	mustCreateNetwork(t, h3, "vn-h3", map[string]string{"vni": "7901"}, "10.110.0.0/24", "")
	holder := mustRun(t, h1, "holder", "vn-h1", "10.110.0.5/24")
	waitCounts(t, h3, 7901, 0, 1, 5*time.Second)

	t.Run("vni", func(t *testing.T) {
		err := h2.Client().CreateNetwork(ctx, "vn-h2-other", map[string]string{"vni": "7901"}, "10.111.0.0/24", "")
		if !plugin.IsRemote(err) || !strings.Contains(err.Error(), "7901") {
			t.Fatalf("a second subnet for vni 7901 on another host: want a refusal naming the VNI, got %v", err)
		}
		t.Logf("refused: %v", err)
		if links := vxsecLinks(t, h2); len(links) != 0 {
			t.Errorf("the refused create left devices on h2: %v", links)
		}
		// The same VNI with the same subnet is the same network: accepted.
		mustCreateNetwork(t, h2, "vn-h2", map[string]string{"vni": "7901"}, "10.110.0.0/24", "")
		waitCounts(t, h2, 7901, 0, 1, 5*time.Second)
	})

	t.Run("address", func(t *testing.T) {
		_, err := h2.Client().CreateEndpoint(ctx, "vn-h2", "dup-ep", "10.110.0.5/24", "")
		if err == nil {
			// Refusing in Join is allowed too; either way no container starts.
			_, err = h2.Client().Join(ctx, "vn-h2", "dup-ep", "/var/run/netns/none")
		}
		if !plugin.IsRemote(err) || !strings.Contains(err.Error(), "10.110.0.5") {
			t.Fatalf("an address held on h1 claimed on h2: want a refusal naming it, got %v", err)
		}
		t.Logf("refused: %v", err)
		h2.Client().Leave(ctx, "vn-h2", "dup-ep")
		h2.Client().DeleteEndpoint(ctx, "vn-h2", "dup-ep")
		// The holder is intact everywhere and reachable from h2.
		for _, h := range []*lab.Host{h2, h3} {
			waitCounts(t, h, 7901, 0, 1, 2*time.Second)
			if err := wantEntries(ctx, h, 7901, []*lab.Container{holder}); err != nil {
				t.Fatal(err)
			}
		}
		peer := mustRun(t, h2, "peer", "vn-h2", "10.110.0.6/24")
		reachFast(t, peer, holder.IP())

		// Once the holder goes, the address is free on h2.
		if err := holder.Remove(ctx); err != nil {
			t.Fatal(err)
		}
		testutil.Until(t, 5*time.Second, "10.110.0.5 free on h2 after its holder left", func() error {
			_, err := h2.Run(ctx, "taker", "vn-h2", "10.110.0.5/24")
			return err
		})
	})
}

// TestClusterPartitionHeals: a host cut off with its daemon running is
// dropped by the others and drops them; both sides change meanwhile; when
// the cable comes back every host holds exactly the endpoints that exist,
// nothing stale and nothing twice.
func TestClusterPartitionHeals(t *testing.T) {
	c := newCluster(t, 3)
	h1, h2, h3 := c.hosts[0], c.hosts[1], c.hosts[2]
	const vni = 7951
	ids := createEverywhere(t, c.hosts, "part", vni, "10.120.0.0/24")
	c1 := mustRun(t, h1, "c1", ids[h1], "10.120.0.11/24")
	c1b := mustRun(t, h1, "c1b", ids[h1], "10.120.0.12/24")
	c2 := mustRun(t, h2, "c2", ids[h2], "10.120.0.21/24")
	c3 := mustRun(t, h3, "c3", ids[h3], "10.120.0.31/24")
	for _, h := range c.hosts {
		waitCounts(t, h, vni, map[*lab.Host]int{h1: 2, h2: 1, h3: 1}[h], map[*lab.Host]int{h1: 2, h2: 3, h3: 3}[h], 5*time.Second)
	}

	if err := h3.SetUnderlay(ctxT(t), false); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	var wg sync.WaitGroup
	for _, side := range []struct {
		h             *lab.Host
		local, remote int
	}{{h1, 2, 1}, {h2, 1, 2}, {h3, 1, 0}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := lab.WaitFor(context.Background(), 3*failBound, func() error {
				n, err := netStatus(context.Background(), side.h, vni)
				if err == nil && (n.Local != side.local || n.Remote != side.remote) {
					err = fmt.Errorf("status %+v", n)
				}
				return err
			})
			if err != nil {
				t.Errorf("%s did not drop the other side of the partition: %v", side.h.Name, err)
				return
			}
			took := time.Since(cut)
			t.Logf("partition: %s dropped the other side %v after the cut", side.h.Name, took.Round(10*time.Millisecond))
			// The majority must keep the bound; the lone host hears no
			// confirmation of its suspicions and is only logged.
			if side.h != h3 && took > failBound {
				t.Errorf("%s dropped the cut-off host after %v, beyond the %v bound", side.h.Name, took, failBound)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// Both sides change while apart.
	if err := c1b.Remove(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	c2b := mustRun(t, h2, "c2b", ids[h2], "10.120.0.22/24")
	c3b := mustRun(t, h3, "c3b", ids[h3], "10.120.0.32/24")

	if err := h3.SetUnderlay(ctxT(t), true); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	all := []*lab.Container{c1, c2, c2b, c3, c3b}
	for _, h := range c.hosts {
		testutil.Until(t, 20*time.Second, h.Name+" holds exactly the endpoints that exist after the heal", func() error {
			return wantEntries(ctxT(t), h, vni, others(h, all))
		})
	}
	t.Logf("heal: every host exact %v after the cable came back", time.Since(healed).Round(10*time.Millisecond))
	waitCounts(t, h1, vni, 1, 4, time.Second)
	waitCounts(t, h3, vni, 2, 3, time.Second)
	c.waitMembers(t, c.hosts, c.hosts)
	reachFast(t, c3b, c1.IP())
	reachFast(t, c1, c2b.IP())
	reachFast(t, c2b, c3.IP())
}
