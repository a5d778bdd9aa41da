package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vxsec/vxsec/announce"
	"github.com/vxsec/vxsec/firewall"
	"github.com/vxsec/vxsec/internal/testutil"
	"github.com/vxsec/vxsec/vxlan"
)

// The driver against a fake kernel (fakekernel_test.go): each case is a
// list of steps, each with the state the kernel (and the store) must be in
// after it, in the manner of tailscale's wgengine/router TestRouterStates.

const (
	testDataPort = 4789
	testEncPort  = 4790
)

var (
	testLocal = netip.MustParseAddr("198.18.0.1")
	quietLog  = slog.New(slog.DiscardHandler)
)

// fakeClock is the driver's clock, moved only by the test.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// harness is a driver on a fake kernel and a store in a directory; a
// restart makes a new driver from the same directory and kernel.
type harness struct {
	t     testing.TB
	k     *fakeKernel
	clock *fakeClock
	dir   string
	d     *Driver
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	h := &harness{t: t, k: newFakeKernel(testDataPort, testEncPort), dir: t.TempDir(),
		clock: &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}}
	d, err := h.newDriver()
	if err != nil {
		t.Fatal(err)
	}
	h.d = d
	// As the daemon does before serving.
	if err := d.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *harness) newDriver() (*Driver, error) {
	store, err := OpenStore(h.dir)
	if err != nil {
		return nil, err
	}
	return New(Config{
		Store: store, DataPath: h.k, Firewall: h.k, IPsec: h.k,
		Underlay: vxlan.Underlay{Addr: testLocal, MTU: 1500}, DataPort: testDataPort, EncryptedPort: testEncPort,
		Authenticated: true, Identified: true, ProbeKernel: func() error { return nil }, Now: h.clock.Now, Log: quietLog,
	})
}

// restart is the daemon starting again: a new driver from the same store
// and kernel, then its reconcile at start.
func (h *harness) restart() error {
	h.k.restartProcess()
	d, err := h.newDriver()
	if err != nil {
		return err
	}
	h.d = d
	return d.Reconcile(context.Background())
}

// peersPass is one pass of applyPeers (which Run runs).
// run runs the driver's Run until the returned stop is called (again is
// a no-op).
func (h *harness) run() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.d.Run(ctx) }()
	return func() { cancel(); <-done }
}

func (h *harness) peersPass() {
	h.d.syncPeers()
	if err := h.d.lock(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	h.d.syncMembersOp()
	h.d.syncIPsecOp()
	h.d.unlock()
}

// breakStore makes every store write fail (as root, a read-only directory
// would not): the directory is moved aside and a file takes its name.
func (h *harness) breakStore() error {
	if err := os.Rename(h.dir, h.dir+".aside"); err != nil {
		return err
	}
	return os.WriteFile(h.dir, nil, 0o600)
}

func (h *harness) fixStore() error {
	if err := os.Remove(h.dir); err != nil {
		return err
	}
	return os.Rename(h.dir+".aside", h.dir)
}

// stored lists the persisted networks: "n1 vni100 e1+ e2", + for joined.
func (h *harness) stored() []string {
	if fi, err := os.Stat(h.dir); err != nil || !fi.IsDir() {
		return []string{"unreadable"}
	}
	store, err := OpenStore(h.dir)
	if err != nil {
		return []string{"unreadable: " + err.Error()}
	}
	nets, err := store.Load()
	if err != nil {
		return []string{"unreadable: " + err.Error()}
	}
	var out []*Network
	for _, n := range nets {
		out = append(out, n)
	}
	return summarizeNets(out)
}

func summarizeNets(nets []*Network) []string {
	var out []string
	for _, n := range nets {
		s := fmt.Sprintf("%s vni%d", n.ID, n.VNI)
		for _, ep := range n.sortedEndpoints() {
			s += " " + ep.ID
			if ep.Joined {
				s += "+"
			}
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// kstate is what the kernel and the store hold, in a form that reads well
// in a failure.
type kstate struct {
	FW      string   // "off", "on", "on members=..."
	IPsec   string   // "off", "on" (keys active, xfrm state), "left" (xfrm state, keys inactive)
	Devices []string // "vni100 n1 mtu1450 port4789"
	Links   []string // "e1 on vni100"
	Peers   []string // "vni100 10.1.0.7 via 198.18.0.2"
	Stored  []string // "n1 vni100 e1+ e2"
}

func (s kstate) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "  firewall %s, ipsec %s\n", s.FW, s.IPsec)
	for _, l := range []struct {
		name string
		v    []string
	}{{"devices", s.Devices}, {"links", s.Links}, {"peers", s.Peers}, {"stored", s.Stored}} {
		fmt.Fprintf(&b, "  %-8s %s\n", l.name, strings.Join(l.v, "; "))
	}
	return b.String()
}

func (h *harness) state() kstate {
	v := h.k.view()
	s := kstate{FW: fwString(v.fw, testDataPort, testEncPort), Stored: h.stored()}
	switch {
	case !v.keysActive && !v.xfrm:
		s.IPsec = "off"
	case v.keysActive && v.xfrm:
		s.IPsec = "on"
	case v.xfrm:
		s.IPsec = "left"
	default:
		s.IPsec = "active without xfrm state"
	}
	for _, d := range v.devices {
		s.Devices = append(s.Devices, fmt.Sprintf("vni%d %s mtu%d port%d", d.vni, d.net, d.mtu, d.port))
		for _, p := range d.peers {
			s.Peers = append(s.Peers, fmt.Sprintf("vni%d %s via %s", d.vni, p.IP, p.Host))
		}
	}
	for id, l := range v.links {
		s.Links = append(s.Links, fmt.Sprintf("%s on vni%d", id, l.vni))
	}
	sort.Strings(s.Devices)
	sort.Strings(s.Peers)
	sort.Strings(s.Links)
	return s
}

// op is one thing a step does.
type op struct {
	what string
	do   func(h *harness) error
}

func ctxb() context.Context { return context.Background() }

func createNet(id string, vni uint32, encrypted bool, subnet string) op {
	opts := map[string]string{OptVNI: fmt.Sprint(vni)}
	kind := "plain"
	if encrypted {
		opts[OptEncrypted] = "true"
		kind = "encrypted"
	}
	return createNetOpts(fmt.Sprintf("create %s network %s vni%d", kind, id, vni), id, opts, subnet)
}

func createNetOpts(what, id string, opts map[string]string, subnet string) op {
	return op{what, func(h *harness) error {
		p := netip.MustParsePrefix(subnet)
		gw := netip.PrefixFrom(p.Addr().Next(), p.Bits())
		return h.d.CreateNetwork(ctxb(), CreateNetworkRequest{ID: id, Options: opts,
			IPv4: []IPAMData{{Pool: subnet, Gateway: gw.String()}}})
	}}
}

func plainNet(id string, vni uint32, subnet string) op { return createNet(id, vni, false, subnet) }
func encNet(id string, vni uint32, subnet string) op   { return createNet(id, vni, true, subnet) }

func createEP(netID, epID, addr string) op {
	return op{fmt.Sprintf("create endpoint %s %s in %s", epID, addr, netID), func(h *harness) error {
		_, err := h.d.CreateEndpoint(ctxb(), CreateEndpointRequest{NetworkID: netID, EndpointID: epID, Address: addr})
		return err
	}}
}

func join(netID, epID string) op {
	return op{fmt.Sprintf("join %s to %s", epID, netID), func(h *harness) error {
		name, err := h.d.Join(ctxb(), netID, epID, "/var/run/docker/netns/"+epID)
		if err == nil && name != vxlan.EndpointLinkName(epID) {
			return fmt.Errorf("Join returned link %q, want %q", name, vxlan.EndpointLinkName(epID))
		}
		return err
	}}
}

func leave(netID, epID string) op {
	return op{fmt.Sprintf("leave %s from %s", epID, netID), func(h *harness) error { return h.d.Leave(ctxb(), netID, epID) }}
}

func deleteEP(netID, epID string) op {
	return op{fmt.Sprintf("delete endpoint %s of %s", epID, netID), func(h *harness) error { return h.d.DeleteEndpoint(ctxb(), netID, epID) }}
}

func deleteNet(id string) op {
	return op{"delete network " + id, func(h *harness) error { return h.d.DeleteNetwork(ctxb(), id) }}
}

func reconcile() op {
	return op{"reconcile", func(h *harness) error { return h.d.Reconcile(ctxb()) }}
}

func restart() op { return op{"restart", (*harness).restart} }

func failOn(method string, skip int, partial bool) op {
	what := fmt.Sprintf("inject a failure of %s", method)
	if skip > 0 {
		what += fmt.Sprintf(" (after %d calls)", skip)
	}
	if partial {
		what += " (after its effect)"
	}
	return op{what, func(h *harness) error { h.k.failOn(method, skip, partial); return nil }}
}

// seq is several ops as one step.
func seq(ops ...op) op {
	var whats []string
	for _, o := range ops {
		whats = append(whats, o.what)
	}
	return op{strings.Join(whats, ", then "), func(h *harness) error {
		for _, o := range ops {
			if err := o.do(h); err != nil {
				return fmt.Errorf("%s: %w", o.what, err)
			}
		}
		return nil
	}}
}

func drift(what string, f func(k *fakeKernel)) op {
	return op{"behind the driver's back: " + what, func(h *harness) error { f(h.k); return nil }}
}

func storeBroken() op { return op{"break the store", (*harness).breakStore} }
func storeFixed() op  { return op{"fix the store", (*harness).fixStore} }

func peersPass() op {
	return op{"a peers pass", func(h *harness) error { h.peersPass(); return nil }}
}

func advance(d time.Duration) op {
	return op{fmt.Sprintf("%v pass", d), func(h *harness) error { h.clock.Advance(d); return nil }}
}

// remote is a table of host with one network and its endpoints, then a
// peers pass.
func remote(host string, seq uint64, vni uint32, subnet string, ips ...string) op {
	return remoteOp(host, seq, vni, false, subnet, ips...)
}

// remoteEnc is remote of an encrypted network.
func remoteEnc(host string, seq uint64, vni uint32, subnet string, ips ...string) op {
	return remoteOp(host, seq, vni, true, subnet, ips...)
}

func remoteOp(host string, seq uint64, vni uint32, encrypted bool, subnet string, ips ...string) op {
	return op{fmt.Sprintf("table %d of %s (vni%d encrypted=%v %s: %v), then a peers pass", seq, host, vni, encrypted, subnet, ips), func(h *harness) error {
		t := remoteTable(host, seq, vni, subnet, ips...)
		if encrypted {
			t.Networks[0].Encrypted = true
			t.Keys = []announce.Key{{Epoch: 1, Public: []byte{1}}}
		}
		h.d.SetRemote(t)
		h.peersPass()
		return nil
	}}
}

func remoteTable(host string, seq uint64, vni uint32, subnet string, ips ...string) announce.Table {
	hostAddr := netip.MustParseAddr(host)
	created := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	t := announce.Table{Host: hostAddr, Version: announce.Version{Epoch: 1, Seq: seq},
		Networks: []announce.Network{{ID: "remote-" + fmt.Sprint(vni), VNI: vni, Subnets: []netip.Prefix{netip.MustParsePrefix(subnet)}, Created: created}}}
	for _, s := range ips {
		ip := netip.MustParseAddr(s)
		h4, i4 := hostAddr.As4(), ip.As4()
		t.Endpoints = append(t.Endpoints, announce.Endpoint{VNI: vni, IP: ip, MAC: net.HardwareAddr{2, 0, 0, 0, h4[3], i4[3]}, Created: created})
	}
	return t
}

func dropRemote(host string) op {
	return op{"drop host " + host + ", then a peers pass", func(h *harness) error {
		h.d.DropRemote(netip.MustParseAddr(host))
		h.peersPass()
		return nil
	}}
}

func setMembers(hosts ...string) op {
	return op{fmt.Sprintf("members %v, then a peers pass", hosts), func(h *harness) error {
		var addrs []netip.Addr
		for _, s := range hosts {
			addrs = append(addrs, netip.MustParseAddr(s))
		}
		h.d.SetMembers(addrs)
		h.peersPass()
		return nil
	}}
}

func rotate() op { return op{"rotate keys", func(h *harness) error { return h.d.Rotate(ctxb()) }} }

// step is an op, the error it must give ("" none, else a part of it), the
// state after it, and optionally calls that must appear in this order
// among those it made, and a check of its own.
type step struct {
	op
	err   string
	want  kstate
	calls []string
	check func(h *harness, before stepStart) error
}

// stepStart is what the fake kernel had counted when a step began.
type stepStart struct{ calls, fired, creates int }

func runSteps(t *testing.T, steps []step) {
	h := newHarness(t)
	for i, s := range steps {
		var before stepStart
		before.calls = h.k.callCount()
		before.fired, before.creates = h.k.counters()
		err := s.do(h)
		where := fmt.Sprintf("step %d (%s)", i+1, s.what)
		switch {
		case s.err == "" && err != nil:
			t.Fatalf("%s: %v", where, err)
		case s.err != "" && (err == nil || !strings.Contains(err.Error(), s.err)):
			t.Fatalf("%s: err = %v, want one saying %q", where, err, s.err)
		}
		if v := h.k.takeViolations(); len(v) > 0 {
			t.Fatalf("%s broke a promise:\n  %s\ncalls: %s", where, strings.Join(v, "\n  "), strings.Join(h.k.callsSince(before.calls), ", "))
		}
		want := s.want
		if want.FW == "" {
			want.FW = "off"
		}
		if want.IPsec == "" {
			want.IPsec = "off"
		}
		if got := h.state(); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s:\ngot\n%swant\n%scalls: %s", where, got, want, strings.Join(h.k.callsSince(before.calls), ", "))
		}
		if calls := h.k.callsSince(before.calls); !subsequence(calls, s.calls) {
			t.Fatalf("%s: calls %q, want %q among them in this order", where, calls, s.calls)
		}
		if s.check != nil {
			if err := s.check(h, before); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
		}
		checkDesired(t, h, where)
	}
}

// subsequence reports whether want appears in calls in order.
func subsequence(calls, want []string) bool {
	i := 0
	for _, c := range calls {
		if i < len(want) && c == want[i] {
			i++
		}
	}
	return i == len(want)
}

// fataler is the part of testing.TB the checks use.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

// checkDesired: what the driver holds is what it persisted, and what it
// announces is what it holds.
func checkDesired(t fataler, h *harness, where string) {
	t.Helper()
	nets := h.d.Networks()
	if stored := h.stored(); len(stored) == 0 || stored[0] != "unreadable" {
		if got := summarizeNets(nets); !reflect.DeepEqual(got, stored) {
			t.Fatalf("%s: the driver holds %q but the store %q", where, got, stored)
		}
	}
	snap := h.d.Snapshot()
	var wantNets, gotNets, wantEPs, gotEPs []string
	for _, n := range nets {
		wantNets = append(wantNets, fmt.Sprintf("%s %d %v %v", n.ID, n.VNI, n.Subnets, n.Options.Encrypted))
		for _, ep := range n.sortedEndpoints() {
			wantEPs = append(wantEPs, fmt.Sprintf("%d %s %s", n.VNI, ep.Address.Addr(), ep.MAC))
		}
	}
	for _, n := range snap.Networks {
		gotNets = append(gotNets, fmt.Sprintf("%s %d %v %v", n.ID, n.VNI, n.Subnets, n.Encrypted))
	}
	for _, ep := range snap.Endpoints {
		gotEPs = append(gotEPs, fmt.Sprintf("%d %s %s", ep.VNI, ep.IP, ep.MAC))
	}
	if !reflect.DeepEqual(gotNets, wantNets) || !reflect.DeepEqual(gotEPs, wantEPs) {
		t.Fatalf("%s: Snapshot has networks %q and endpoints %q; the driver holds %q and %q", where, gotNets, gotEPs, wantNets, wantEPs)
	}
	if snap.Host != testLocal {
		t.Fatalf("%s: Snapshot of host %s, want %s", where, snap.Host, testLocal)
	}
}

// noneCreated: the step created no device and no link.
func noneCreated(h *harness, before stepStart) error {
	if _, creates := h.k.counters(); creates != before.creates {
		return fmt.Errorf("%d device(s) or link(s) created, want none (the kernel had them already)", creates-before.creates)
	}
	return nil
}

const (
	dev100 = "vni100 n1 mtu1450 port4789"
	dev200 = "vni200 n2 mtu1408 port4790" // encrypted: ESP's overhead, its own port
	dev300 = "vni300 n3 mtu1408 port4790"
	sub1   = "10.1.0.0/24"
	sub2   = "10.2.0.0/24"
	sub3   = "10.3.0.0/24"
	h2     = "198.18.0.2"
	h3     = "198.18.0.3"
)

func TestDriverStates(t *testing.T) {
	cases := []struct {
		name  string
		steps []step
	}{
		{"plain lifecycle", []step{
			{op: plainNet("n1", 100, sub1), want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100"}},
				calls: []string{"fw.Apply(on)", "dp.EnsureNetwork(vni100)"}},
			{op: createEP("n1", "e1", "10.1.0.2/24"), want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100 e1"}}},
			{op: join("n1", "e1"), want: kstate{FW: "on", Devices: []string{dev100}, Links: []string{"e1 on vni100"}, Stored: []string{"n1 vni100 e1+"}},
				calls: []string{"fw.Apply(on)", "dp.EnsureNetwork(vni100)", "dp.EnsureEndpoint(e1 on vni100)"}},
			{op: leave("n1", "e1"), want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100 e1"}}},
			{op: deleteEP("n1", "e1"), want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100"}}},
			{op: deleteNet("n1"), want: kstate{}, calls: []string{"dp.DeleteNetwork(vni100)", "fw.Apply(off)"}},
		}},
		{"encrypted lifecycle", []step{
			{op: encNet("n2", 200, sub2), want: kstate{FW: "on", IPsec: "on", Devices: []string{dev200}, Stored: []string{"n2 vni200"}},
				calls: []string{"fw.Apply(on)", "keys.Activate", "dp.EnsureNetwork(vni200)"}},
			{op: plainNet("n1", 100, sub1), want: kstate{FW: "on", IPsec: "on", Devices: []string{dev100, dev200}, Stored: []string{"n1 vni100", "n2 vni200"}}},
			{op: seq(createEP("n2", "e2", "10.2.0.2/24"), join("n2", "e2")),
				want: kstate{FW: "on", IPsec: "on", Devices: []string{dev100, dev200}, Links: []string{"e2 on vni200"}, Stored: []string{"n1 vni100", "n2 vni200 e2+"}}},
			{op: rotate(), want: kstate{FW: "on", IPsec: "on", Devices: []string{dev100, dev200}, Links: []string{"e2 on vni200"}, Stored: []string{"n1 vni100", "n2 vni200 e2+"}},
				calls: []string{"keys.Rotate", "keys.Sync(0)"}},
			{op: encNet("n3", 300, sub3), want: kstate{FW: "on", IPsec: "on", Devices: []string{dev100, dev200, dev300}, Links: []string{"e2 on vni200"},
				Stored: []string{"n1 vni100", "n2 vni200 e2+", "n3 vni300"}}},
			// One encrypted network left: the keys stay.
			{op: deleteNet("n2"), want: kstate{FW: "on", IPsec: "on", Devices: []string{dev100, dev300}, Stored: []string{"n1 vni100", "n3 vni300"}}},
			// The last encrypted network: its device, then the keys.
			{op: deleteNet("n3"), want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100"}},
				calls: []string{"dp.DeleteNetwork(vni300)", "keys.Deactivate"}},
			{op: rotate(), err: "nothing to rotate", want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100"}}},
			{op: deleteNet("n1"), want: kstate{}},
		}},
		{"repeated and unknown calls", []step{
			{op: plainNet("n1", 100, sub1), want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100"}}},
			{op: plainNet("n1", 100, sub1), want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100"}}, check: noneCreated},
			{op: encNet("n1", 100, sub1), err: "exists with other options", want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100"}}},
			{op: plainNet("n9", 100, sub2), err: "vni 100 is already used by network n1", want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100"}}},
			{op: createEP("n9", "e1", "10.1.0.2/24"), err: "its state was lost", want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100"}}},
			{op: seq(createEP("n1", "e1", "10.1.0.2/24"), createEP("n1", "e1", "10.1.0.2/24")),
				want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100 e1"}}},
			{op: createEP("n1", "e1", "10.1.0.3/24"), err: "exists with address", want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100 e1"}}},
			{op: createEP("n1", "e2", "10.1.0.2/24"), err: "already used by endpoint e1", want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100 e1"}}},
			{op: join("n1", "e9"), err: "not found", want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100 e1"}}},
			{op: join("n9", "e1"), err: "docker network rm n9", want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100 e1"}}},
			{op: seq(join("n1", "e1"), join("n1", "e1")), want: kstate{FW: "on", Devices: []string{dev100}, Links: []string{"e1 on vni100"}, Stored: []string{"n1 vni100 e1+"}}},
			{op: seq(leave("n1", "e9"), leave("n9", "e1"), deleteEP("n1", "e9"), deleteEP("n9", "e1"), deleteNet("n9")),
				want: kstate{FW: "on", Devices: []string{dev100}, Links: []string{"e1 on vni100"}, Stored: []string{"n1 vni100 e1+"}}},
			{op: seq(leave("n1", "e1"), leave("n1", "e1")), want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100 e1"}}},
			{op: seq(deleteEP("n1", "e1"), deleteEP("n1", "e1")), want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100"}}},
			{op: seq(deleteNet("n1"), deleteNet("n1")), want: kstate{}},
			{op: reconcile(), want: kstate{}},
		}},
		{"restart keeps the kernel", []step{
			{op: seq(plainNet("n1", 100, sub1), encNet("n2", 200, sub2), createEP("n1", "e1", "10.1.0.2/24"), join("n1", "e1"),
				createEP("n2", "e2", "10.2.0.2/24"), join("n2", "e2"), createEP("n1", "e3", "10.1.0.3/24")),
				want: kstate{FW: "on", IPsec: "on", Devices: []string{dev100, dev200}, Links: []string{"e1 on vni100", "e2 on vni200"},
					Stored: []string{"n1 vni100 e1+ e3", "n2 vni200 e2+"}}},
			// The new process's keys start inactive; the reconcile at
			// start activates them before it touches the devices.
			{op: restart(), want: kstate{FW: "on", IPsec: "on", Devices: []string{dev100, dev200}, Links: []string{"e1 on vni100", "e2 on vni200"},
				Stored: []string{"n1 vni100 e1+ e3", "n2 vni200 e2+"}},
				calls: []string{"restart", "fw.Apply(on)", "keys.Activate", "dp.Reconcile(2 networks)"}, check: noneCreated},
			{op: seq(restart(), restart()), want: kstate{FW: "on", IPsec: "on", Devices: []string{dev100, dev200}, Links: []string{"e1 on vni100", "e2 on vni200"},
				Stored: []string{"n1 vni100 e1+ e3", "n2 vni200 e2+"}}, check: noneCreated},
			// Docker repeats its calls after a restart.
			{op: seq(plainNet("n1", 100, sub1), encNet("n2", 200, sub2), createEP("n1", "e1", "10.1.0.2/24"), join("n1", "e1")),
				want: kstate{FW: "on", IPsec: "on", Devices: []string{dev100, dev200}, Links: []string{"e1 on vni100", "e2 on vni200"},
					Stored: []string{"n1 vni100 e1+ e3", "n2 vni200 e2+"}}, check: noneCreated},
			{op: seq(leave("n1", "e1"), leave("n2", "e2"), deleteNet("n2")), want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100 e1 e3"}}},
			{op: restart(), want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100 e1 e3"}}},
			{op: deleteNet("n1"), want: kstate{}},
			{op: restart(), want: kstate{}},
		}},
		{"a crash's leftovers go at the next start", []step{
			// A device created but never persisted, the firewall and
			// xfrm state with it: the daemon died between kernel and store.
			{op: drift("a device, the firewall, xfrm state", func(k *fakeKernel) {
				k.setFirewall(firewall.State{Active: true, DataPorts: []uint16{testDataPort, testEncPort}, SecurePorts: []uint16{testEncPort}})
				k.setXfrm(true)
				k.addDevice("n2", 200, 1408, testEncPort)
				k.addLink("e2", 200)
			}), want: kstate{FW: "on", IPsec: "left", Devices: []string{dev200}, Links: []string{"e2 on vni200"}}},
			{op: restart(), want: kstate{}, calls: []string{"dp.Reconcile(0 networks)", "fw.Apply(off)", "keys.Deactivate"}},
		}},
		{"drift is repaired by reconcile", []step{
			{op: seq(plainNet("n1", 100, sub1), encNet("n2", 200, sub2), createEP("n1", "e1", "10.1.0.2/24"), join("n1", "e1")),
				want: kstate{FW: "on", IPsec: "on", Devices: []string{dev100, dev200}, Links: []string{"e1 on vni100"}, Stored: []string{"n1 vni100 e1+", "n2 vni200"}}},
			// The kernel removes the links on a device with it.
			{op: drift("vxsec100 removed", func(k *fakeKernel) { k.removeDevice(100) }),
				want: kstate{FW: "on", IPsec: "on", Devices: []string{dev200}, Stored: []string{"n1 vni100 e1+", "n2 vni200"}}},
			{op: reconcile(), want: kstate{FW: "on", IPsec: "on", Devices: []string{dev100, dev200}, Stored: []string{"n1 vni100 e1+", "n2 vni200"}}},
			{op: drift("an old network's device and links, a stray link, an MTU changed", func(k *fakeKernel) {
				k.addDevice("gone", 400, 1450, testDataPort)
				k.addLink("x1", 400)
				k.addLink("e9", 100)
				k.setMTU(200, 9000)
			}), want: kstate{FW: "on", IPsec: "on", Devices: []string{dev100, "vni200 n2 mtu9000 port4790", "vni400 gone mtu1450 port4789"},
				Links: []string{"e9 on vni100", "x1 on vni400"}, Stored: []string{"n1 vni100 e1+", "n2 vni200"}}},
			{op: reconcile(), want: kstate{FW: "on", IPsec: "on", Devices: []string{dev100, dev200}, Stored: []string{"n1 vni100 e1+", "n2 vni200"}}},
			{op: drift("the firewall flushed, the xfrm state removed", func(k *fakeKernel) {
				k.setFirewall(firewall.State{})
				k.setXfrm(false)
			}), want: kstate{IPsec: "active without xfrm state", Devices: []string{dev100, dev200}, Stored: []string{"n1 vni100 e1+", "n2 vni200"}}},
			{op: reconcile(), want: kstate{FW: "on", IPsec: "on", Devices: []string{dev100, dev200}, Stored: []string{"n1 vni100 e1+", "n2 vni200"}}},
			// Another network's device on the VNI a network needs.
			{op: drift("vxsec100 taken by another network", func(k *fakeKernel) { k.addDevice("other", 100, 1450, testDataPort) }),
				want: kstate{FW: "on", IPsec: "on", Devices: []string{"vni100 other mtu1450 port4789", dev200}, Stored: []string{"n1 vni100 e1+", "n2 vni200"}}},
			{op: reconcile(), want: kstate{FW: "on", IPsec: "on", Devices: []string{dev100, dev200}, Stored: []string{"n1 vni100 e1+", "n2 vni200"}}},
		}},
		{"a failed create leaves nothing", []step{
			{op: seq(failOn("EnsureNetwork", 0, false), plainNet("n1", 100, sub1)), err: "injected", want: kstate{}},
			{op: seq(failOn("EnsureNetwork", 0, true), plainNet("n1", 100, sub1)), err: "injected", want: kstate{},
				calls: []string{"fw.Apply(on)", "dp.EnsureNetwork(vni100)", "dp.DeleteNetwork(vni100)", "fw.Apply(off)"}},
			{op: seq(failOn("Apply", 0, false), plainNet("n1", 100, sub1)), err: "injected", want: kstate{}},
			{op: seq(failOn("Activate", 0, false), encNet("n2", 200, sub2)), err: "injected", want: kstate{}},
			// The guard went in, the keys did not start: what is in
			// the kernel is removed all the same.
			{op: seq(failOn("Activate", 0, true), encNet("n2", 200, sub2)), err: "injected", want: kstate{}},
			{op: plainNet("n1", 100, sub1), want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100"}}},
			{op: seq(failOn("EnsureNetwork", 0, true), encNet("n2", 200, sub2)), err: "injected",
				want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100"}}},
			// The device of the failed create cannot be removed either:
			// the firewall and the guard stay with it until a reconcile
			// removes it.
			{op: seq(failOn("EnsureNetwork", 0, true), failOn("DeleteNetwork", 0, false), failOn("Reconcile", 0, false), encNet("n2", 200, sub2)), err: "injected",
				want: kstate{FW: "on", IPsec: "on", Devices: []string{dev100, dev200}, Stored: []string{"n1 vni100"}}},
			{op: reconcile(), want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100"}}},
			{op: seq(failOn("EnsureNetwork", 0, true), failOn("DeleteNetwork", 0, false), plainNet("n3", 300, sub3)), err: "injected",
				want: kstate{FW: "on", Devices: []string{dev100, "vni300 n3 mtu1450 port4789"}, Stored: []string{"n1 vni100"}}},
			{op: deleteNet("n1"), want: kstate{}},
		}},
		{"a create the store refuses leaves nothing", []step{
			{op: seq(storeBroken(), plainNet("n1", 100, sub1)), err: "persisting network n1", want: kstate{Stored: []string{"unreadable"}}},
			{op: seq(storeFixed(), plainNet("n1", 100, sub1), createEP("n1", "e1", "10.1.0.2/24")),
				want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100 e1"}}},
			{op: storeBroken(), want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"unreadable"}}},
			{op: createEP("n1", "e2", "10.1.0.3/24"), err: "persisting", want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"unreadable"}}},
			// A join not persisted is undone.
			{op: join("n1", "e1"), err: "persisting", want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"unreadable"}}},
			{op: deleteNet("n1"), err: "removing network n1", want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"unreadable"}}},
			{op: storeFixed(), want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100 e1"}}},
			{op: seq(join("n1", "e1"), storeBroken()), want: kstate{FW: "on", Devices: []string{dev100}, Links: []string{"e1 on vni100"}, Stored: []string{"unreadable"}}},
			{op: leave("n1", "e1"), err: "persisting", want: kstate{FW: "on", Devices: []string{dev100}, Links: []string{"e1 on vni100"}, Stored: []string{"unreadable"}}},
			{op: seq(storeFixed(), deleteNet("n1")), want: kstate{}},
		}},
		{"store before kernel on delete", []step{
			{op: seq(plainNet("n1", 100, sub1), encNet("n2", 200, sub2), encNet("n3", 300, sub3)),
				want: kstate{FW: "on", IPsec: "on", Devices: []string{dev100, dev200, dev300}, Stored: []string{"n1 vni100", "n2 vni200", "n3 vni300"}}},
			// The network is gone from the store; its device is an
			// orphan, which keeps the firewall and the guard.
			{op: seq(failOn("DeleteNetwork", 0, false), deleteNet("n2")), err: "injected",
				want: kstate{FW: "on", IPsec: "on", Devices: []string{dev100, dev200, dev300}, Stored: []string{"n1 vni100", "n3 vni300"}}},
			// The last encrypted network: the keys go, after the devices
			// no network needs (the orphan too).
			{op: deleteNet("n3"), want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100"}},
				calls: []string{"dp.DeleteNetwork(vni300)", "dp.Reconcile(1 networks)", "keys.Deactivate"}},
			{op: seq(failOn("DeleteNetwork", 0, false), deleteNet("n1")), err: "injected", want: kstate{FW: "on", Devices: []string{dev100}}},
			// Unknown now, so already deleted: the orphan waits for a
			// reconcile.
			{op: deleteNet("n1"), want: kstate{FW: "on", Devices: []string{dev100}}},
			{op: seq(failOn("Reconcile", 0, false), reconcile()), err: "injected", want: kstate{FW: "on", Devices: []string{dev100}}},
			{op: reconcile(), want: kstate{}},
		}},
		{"the last network deleted removes what a failed delete left", []step{
			{op: seq(plainNet("n1", 100, sub1), plainNet("n4", 400, sub3)),
				want: kstate{FW: "on", Devices: []string{dev100, "vni400 n4 mtu1450 port4789"}, Stored: []string{"n1 vni100", "n4 vni400"}}},
			{op: seq(failOn("DeleteNetwork", 0, false), deleteNet("n4")), err: "injected",
				want: kstate{FW: "on", Devices: []string{dev100, "vni400 n4 mtu1450 port4789"}, Stored: []string{"n1 vni100"}}},
			{op: deleteNet("n1"), want: kstate{}},
		}},
		{"failures of keys and endpoints", []step{
			{op: seq(encNet("n2", 200, sub2), createEP("n2", "e2", "10.2.0.2/24")),
				want: kstate{FW: "on", IPsec: "on", Devices: []string{dev200}, Stored: []string{"n2 vni200 e2"}}},
			{op: seq(failOn("EnsureEndpoint", 0, false), join("n2", "e2")), err: "injected",
				want: kstate{FW: "on", IPsec: "on", Devices: []string{dev200}, Stored: []string{"n2 vni200 e2"}}},
			// A link made but reported failed: not joined, so the next
			// reconcile removes it.
			{op: seq(failOn("EnsureEndpoint", 0, true), join("n2", "e2")), err: "injected",
				want: kstate{FW: "on", IPsec: "on", Devices: []string{dev200}, Links: []string{"e2 on vni200"}, Stored: []string{"n2 vni200 e2"}}},
			{op: reconcile(), want: kstate{FW: "on", IPsec: "on", Devices: []string{dev200}, Stored: []string{"n2 vni200 e2"}}},
			{op: seq(join("n2", "e2"), failOn("DeleteEndpoint", 0, false), leave("n2", "e2")), err: "injected",
				want: kstate{FW: "on", IPsec: "on", Devices: []string{dev200}, Links: []string{"e2 on vni200"}, Stored: []string{"n2 vni200 e2"}}},
			{op: reconcile(), want: kstate{FW: "on", IPsec: "on", Devices: []string{dev200}, Stored: []string{"n2 vni200 e2"}}},
			// What the keys' sync and repair report is logged.
			{op: seq(failOn("Sync", 0, false), failOn("Repair", 0, false), reconcile()),
				want: kstate{FW: "on", IPsec: "on", Devices: []string{dev200}, Stored: []string{"n2 vni200 e2"}}},
			// Removing the xfrm state fails: the network is deleted, the
			// state is left, and the next reconcile removes it.
			{op: seq(failOn("Deactivate", 0, false), deleteNet("n2")), want: kstate{IPsec: "left"}},
			{op: reconcile(), want: kstate{}},
			// Again: a failed removal is retried however often one
			// succeeded before.
			{op: seq(encNet("n2", 200, sub2), failOn("Deactivate", 0, false), deleteNet("n2")), want: kstate{IPsec: "left"}},
			{op: reconcile(), want: kstate{}},
			{op: seq(plainNet("n1", 100, sub1), failOn("Activate", 0, true), encNet("n2", 200, sub2)), err: "injected",
				want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100"}}},
			{op: seq(failOn("Apply", 0, false), reconcile()), err: "injected", want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100"}}},
			{op: seq(failOn("Members", 0, false), restart()), err: "firewall's members", want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100"}}},
			{op: seq(restart(), deleteNet("n1")), want: kstate{}},
		}},
		{"remote endpoints become peers", []step{
			{op: seq(plainNet("n1", 100, sub1), createEP("n1", "e1", "10.1.0.2/24"), encNet("n2", 200, sub2)),
				want: kstate{FW: "on", IPsec: "on", Devices: []string{dev100, dev200}, Stored: []string{"n1 vni100 e1", "n2 vni200"}}},
			// 10.1.0.2 is local: the local endpoint wins.
			{op: remote(h2, 1, 100, sub1, "10.1.0.7", "10.1.0.2"), want: kstate{FW: "on", IPsec: "on", Devices: []string{dev100, dev200},
				Peers: []string{"vni100 10.1.0.7 via 198.18.0.2"}, Stored: []string{"n1 vni100 e1", "n2 vni200"}},
				check: func(h *harness, _ stepStart) error {
					for _, n := range h.d.Status().Networks {
						if n.ID == "n1" && (n.Remote != 1 || n.Local != 1) {
							return fmt.Errorf("status of n1 %+v, want 1 local and 1 remote endpoint", n)
						}
					}
					return nil
				}},
			// vni100 on h3 has another subnet: another network, which
			// contributes nothing.
			{op: remote(h3, 1, 100, sub3, "10.1.0.8"), want: kstate{FW: "on", IPsec: "on", Devices: []string{dev100, dev200},
				Peers: []string{"vni100 10.1.0.7 via 198.18.0.2"}, Stored: []string{"n1 vni100 e1", "n2 vni200"}}},
			// And it makes this host refuse a network of that VNI.
			{op: seq(deleteNet("n1"), plainNet("n1", 100, sub1)), err: "already used in the cluster",
				want: kstate{FW: "on", IPsec: "on", Devices: []string{dev200}, Stored: []string{"n2 vni200"}}},
			// An older table of h2 is ignored. A plain network of the
			// encrypted one's VNI is another network.
			{op: seq(remote(h2, 0, 100, sub1), remote(h2, 2, 200, sub2, "10.2.0.9")), want: kstate{FW: "on", IPsec: "on", Devices: []string{dev200},
				Stored: []string{"n2 vni200"}}},
			{op: remoteEnc(h2, 3, 200, sub2, "10.2.0.9"), want: kstate{FW: "on", IPsec: "on", Devices: []string{dev200},
				Peers: []string{"vni200 10.2.0.9 via 198.18.0.2"}, Stored: []string{"n2 vni200"}},
				calls: []string{"dp.SetPeers(vni200, 1)", "keys.Sync(1)"}},
			{op: createEP("n2", "e3", "10.2.0.9/24"), err: "already used in network vni 200 by an endpoint on host 198.18.0.2",
				want: kstate{FW: "on", IPsec: "on", Devices: []string{dev200}, Peers: []string{"vni200 10.2.0.9 via 198.18.0.2"}, Stored: []string{"n2 vni200"}}},
			{op: setMembers(h2, h3), want: kstate{FW: "on members=198.18.0.2,198.18.0.3", IPsec: "on", Devices: []string{dev200},
				Peers: []string{"vni200 10.2.0.9 via 198.18.0.2"}, Stored: []string{"n2 vni200"}}},
			// After a restart the kernel's entries stay until the cluster
			// has had time to speak; so do its members.
			{op: seq(restart(), peersPass(), remote(h3, 2, 100, sub3)), want: kstate{FW: "on members=198.18.0.2,198.18.0.3", IPsec: "on", Devices: []string{dev200},
				Peers: []string{"vni200 10.2.0.9 via 198.18.0.2"}, Stored: []string{"n2 vni200"}}},
			{op: setMembers(h3), want: kstate{FW: "on members=198.18.0.2,198.18.0.3", IPsec: "on", Devices: []string{dev200},
				Peers: []string{"vni200 10.2.0.9 via 198.18.0.2"}, Stored: []string{"n2 vni200"}}},
			{op: seq(advance(settleAfter+time.Second), reconcile(), peersPass()), want: kstate{FW: "on members=198.18.0.3", IPsec: "on", Devices: []string{dev200},
				Stored: []string{"n2 vni200"}}},
			{op: remoteEnc(h2, 4, 200, sub2, "10.2.0.9", "10.2.0.10"), want: kstate{FW: "on members=198.18.0.3", IPsec: "on", Devices: []string{dev200},
				Peers: []string{"vni200 10.2.0.10 via 198.18.0.2", "vni200 10.2.0.9 via 198.18.0.2"}, Stored: []string{"n2 vni200"}}},
			{op: dropRemote(h2), want: kstate{FW: "on members=198.18.0.3", IPsec: "on", Devices: []string{dev200}, Stored: []string{"n2 vni200"}}},
			{op: deleteNet("n2"), want: kstate{}},
		}},
		{"dropped hosts go at once after a restart", []step{
			{op: seq(plainNet("n1", 100, sub1), remote(h2, 1, 100, sub1, "10.1.0.7"), remote(h3, 1, 100, sub1, "10.1.0.8")),
				want: kstate{FW: "on", Devices: []string{dev100}, Peers: []string{"vni100 10.1.0.7 via 198.18.0.2", "vni100 10.1.0.8 via 198.18.0.3"}, Stored: []string{"n1 vni100"}}},
			{op: seq(restart(), dropRemote(h3)), want: kstate{FW: "on", Devices: []string{dev100}, Peers: []string{"vni100 10.1.0.7 via 198.18.0.2"}, Stored: []string{"n1 vni100"}}},
			{op: seq(failOn("SetPeers", 0, false), remote(h2, 2, 100, sub1)), want: kstate{FW: "on", Devices: []string{dev100}, Peers: []string{"vni100 10.1.0.7 via 198.18.0.2"}, Stored: []string{"n1 vni100"}}},
			{op: peersPass(), want: kstate{FW: "on", Devices: []string{dev100}, Stored: []string{"n1 vni100"}}},
			{op: deleteNet("n1"), want: kstate{}},
		}},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) { runSteps(t, tc.steps) })
	}
}

// TestDriverCallsWaitWithinTheirContext: while a call holds the operation
// lock (blocked in the kernel), another call gives up when its context
// ends, and what the cluster and status readers call does not wait.
func TestDriverCallsWaitWithinTheirContext(t *testing.T) {
	h := newHarness(t)
	for _, o := range []op{plainNet("n1", 100, sub1), createEP("n1", "e1", "10.1.0.2/24")} {
		if err := o.do(h); err != nil {
			t.Fatal(err)
		}
	}
	entered, release := h.k.holdEnsure()
	created := make(chan error, 1)
	go func() { created <- encNet("n2", 200, sub2).do(h) }()
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("CreateNetwork never reached the kernel")
	}

	calls := map[string]func(ctx context.Context) error{
		"CreateNetwork": func(ctx context.Context) error {
			return h.d.CreateNetwork(ctx, CreateNetworkRequest{ID: "n3", Options: map[string]string{OptVNI: "300"}, IPv4: []IPAMData{{Pool: sub3}}})
		},
		"DeleteNetwork": func(ctx context.Context) error { return h.d.DeleteNetwork(ctx, "n1") },
		"CreateEndpoint": func(ctx context.Context) error {
			_, err := h.d.CreateEndpoint(ctx, CreateEndpointRequest{NetworkID: "n1", EndpointID: "e2", Address: "10.1.0.3/24"})
			return err
		},
		"DeleteEndpoint": func(ctx context.Context) error { return h.d.DeleteEndpoint(ctx, "n1", "e1") },
		"Join": func(ctx context.Context) error {
			_, err := h.d.Join(ctx, "n1", "e1", "/var/run/docker/netns/e1")
			return err
		},
		"Leave":           func(ctx context.Context) error { return h.d.Leave(ctx, "n1", "e1") },
		"Reconcile":       func(ctx context.Context) error { return h.d.Reconcile(ctx) },
		"Rotate":          func(ctx context.Context) error { return h.d.Rotate(ctx) },
		"FreeNetwork":     func(ctx context.Context) error { return h.d.FreeNetwork(ctx, "n1") },
		"AllocateNetwork": func(ctx context.Context) error { _, err := h.d.AllocateNetwork(ctx, "n5", nil, 0); return err },
	}
	for name, call := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		start := time.Now()
		err := call(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s with the operation lock held: err = %v, want one wrapping context.DeadlineExceeded", name, err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("%s took %v to give up", name, took)
		}
	}

	// None of these may need the operation lock.
	prompt := make(chan struct{})
	go func() {
		defer close(prompt)
		h.d.SetRemote(remoteTable(h2, 1, 100, sub1, "10.1.0.7"))
		h.d.DropRemote(netip.MustParseAddr(h3))
		h.d.SetMembers([]netip.Addr{netip.MustParseAddr(h2)})
		if snap := h.d.Snapshot(); len(snap.Networks) != 1 {
			t.Errorf("Snapshot while a create is under way: %d networks, want 1", len(snap.Networks))
		}
		if st := h.d.Status(); len(st.Networks) != 1 || st.IPsec == nil {
			t.Errorf("Status while a create is under way: %+v", st)
		}
		if info, err := h.d.EndpointInfo(ctxb(), "n1", "e1"); err != nil || info["vni"] != "100" {
			t.Errorf("EndpointInfo: %v, %v", info, err)
		}
		if _, err := h.d.EndpointInfo(ctxb(), "n1", "e9"); !errors.Is(err, ErrNotFound) {
			t.Errorf("EndpointInfo of an unknown endpoint: %v, want ErrNotFound", err)
		}
		if _, err := h.d.EndpointInfo(ctxb(), "n9", "e1"); !errors.Is(err, ErrNotFound) {
			t.Errorf("EndpointInfo of an unknown network: %v, want ErrNotFound", err)
		}
		if nets := h.d.Networks(); len(nets) != 1 {
			t.Errorf("Networks while a create is under way: %d, want 1", len(nets))
		}
		select {
		case <-h.d.Changed():
		default:
		}
	}()
	select {
	case <-prompt:
	case <-time.After(5 * time.Second):
		t.Fatal("the cluster's and status calls waited for the operation lock")
	}

	close(release)
	if err := <-created; err != nil {
		t.Fatalf("the held CreateNetwork: %v", err)
	}
	if err := h.d.Reconcile(ctxb()); err != nil {
		t.Fatal(err)
	}
	h.peersPass()
	if v := h.k.takeViolations(); len(v) > 0 {
		t.Fatalf("promises broken: %q", v)
	}
	got := h.state()
	want := kstate{FW: "on members=198.18.0.2", IPsec: "on", Devices: []string{dev100, dev200}, Peers: []string{"vni100 10.1.0.7 via 198.18.0.2"},
		Stored: []string{"n1 vni100 e1", "n2 vni200"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after the held create finished:\ngot\n%swant\n%s", got, want)
	}
	for _, id := range []string{"n1", "n2"} {
		if err := h.d.DeleteNetwork(ctxb(), id); err != nil {
			t.Fatal(err)
		}
	}
	if got := h.state(); !reflect.DeepEqual(got, kstate{FW: "off", IPsec: "off"}) {
		t.Fatalf("after deleting everything:\n%s", got)
	}
}

// TestRunAppliesTablesAndRepairs: Run applies a table that arrives, and
// its periodic reconcile repairs drift, until its context ends.
func TestRunAppliesTablesAndRepairs(t *testing.T) {
	h := newHarness(t)
	h.d.cfg.ReconcileEvery = 10 * time.Millisecond
	h.d.cfg.RotateEvery = 10 * time.Millisecond
	if err := plainNet("n1", 100, sub1).do(h); err != nil {
		t.Fatal(err)
	}
	if err := encNet("n2", 200, sub2).do(h); err != nil {
		t.Fatal(err)
	}
	stop := h.run()
	defer stop()

	h.d.SetRemote(remoteTable(h2, 1, 100, sub1, "10.1.0.7"))
	testutil.Eventually(t, 5*time.Second, "the table's endpoint to become a peer", func() bool {
		return reflect.DeepEqual(h.state().Peers, []string{"vni100 10.1.0.7 via 198.18.0.2"})
	})
	h.k.removeDevice(200)
	testutil.Eventually(t, 5*time.Second, "the periodic reconcile to put vxsec200 back", func() bool {
		return reflect.DeepEqual(h.state().Devices, []string{dev100, dev200})
	})
	epoch := h.k.Status().Epochs
	testutil.Eventually(t, 5*time.Second, "a scheduled rotation", func() bool { return !reflect.DeepEqual(h.k.Status().Epochs, epoch) })
	stop()
	if v := h.k.takeViolations(); len(v) > 0 {
		t.Fatalf("promises broken: %q", v)
	}
}

// TestRunSyncsKeysWhenDue: a removal the keys owe after a grace (Keys.Due)
// gets its Sync when the time comes, from Run's timer, though no table
// arrives and the periodic reconcile is far off; a Due moved later waits.
func TestRunSyncsKeysWhenDue(t *testing.T) {
	h := newHarness(t)
	h.d.cfg.ReconcileEvery = time.Hour
	if err := encNet("n2", 200, sub2).do(h); err != nil {
		t.Fatal(err)
	}
	defer h.run()()

	// Run's first pass (the network's peers) syncs too: wait it out.
	before := h.k.syncs()
	for settle := time.Now().Add(5 * time.Second); time.Now().Before(settle); {
		time.Sleep(150 * time.Millisecond)
		n := h.k.syncs()
		if n == before {
			break
		}
		before = n
	}
	h.k.setDue(time.Now().Add(200 * time.Millisecond))
	h.d.lock(ctxb())
	h.d.syncIPsecOp() // the Sync that made a removal wait
	h.d.unlock()
	if n := h.k.syncs() - before; n != 1 {
		t.Fatalf("%d Syncs right after, want the one", n)
	}
	h.k.setDue(time.Time{}) // that Sync will leave nothing owed
	testutil.Eventually(t, 5*time.Second, "a Sync when Due comes", func() bool { return h.k.syncs()-before == 2 })
	time.Sleep(300 * time.Millisecond)
	if n := h.k.syncs() - before; n != 2 {
		t.Fatalf("%d Syncs once nothing is owed, want 2", n)
	}

	// The control: a Due far off brings no Sync meanwhile.
	h.k.setDue(time.Now().Add(time.Hour))
	h.d.lock(ctxb())
	h.d.syncIPsecOp()
	h.d.unlock()
	time.Sleep(300 * time.Millisecond)
	if n := h.k.syncs() - before; n != 3 {
		t.Fatalf("%d Syncs with nothing due for an hour, want 3", n)
	}
}

// TestDeleteEndpointAnswersFirst: while Run runs, DeleteEndpoint answers
// Docker before the endpoint's device is removed (removing a device waits
// for the kernel's RCU grace period, which `docker run --rm` would wait
// for), and the device goes just after. The control: without Run (no one to
// remove it later) the answer waits for the removal.
func TestDeleteEndpointAnswersFirst(t *testing.T) {
	h := newHarness(t)
	h.d.cfg.ReconcileEvery = time.Hour
	for _, o := range []op{plainNet("n1", 100, sub1),
		createEP("n1", "e1", "10.1.0.2/24"), join("n1", "e1"), leave("n1", "e1"),
		createEP("n1", "e2", "10.1.0.3/24"), join("n1", "e2"), leave("n1", "e2")} {
		if err := o.do(h); err != nil {
			t.Fatalf("%s: %v", o.what, err)
		}
	}
	// Docker moves an endpoint's device back to the host at Leave, and
	// deletes the endpoint after.
	h.k.addLink("e1", 100)
	h.k.addLink("e2", 100)
	links := func() []string { return h.state().Links }

	if err := deleteEP("n1", "e2").do(h); err != nil {
		t.Fatal(err)
	}
	if got := links(); !reflect.DeepEqual(got, []string{"e1 on vni100"}) {
		t.Fatalf("control, without Run: links %v after DeleteEndpoint answered, want e2's gone", got)
	}

	stop := h.run()
	defer stop()
	testutil.Eventually(t, 5*time.Second, "Run's reaper to start", h.d.reaping.Load)

	hold := make(chan struct{})
	h.k.mu.Lock()
	h.k.holdDeletes = hold
	h.k.mu.Unlock()
	answered := make(chan error, 1)
	go func() { answered <- h.d.DeleteEndpoint(ctxb(), "n1", "e1") }()
	select {
	case err := <-answered:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("DeleteEndpoint waited for the device's removal")
	}
	if got := links(); !reflect.DeepEqual(got, []string{"e1 on vni100"}) {
		t.Fatalf("links %v while the removal is held, want e1's still there", got)
	}
	if got := h.stored(); !reflect.DeepEqual(got, []string{"n1 vni100"}) {
		t.Fatalf("stored %v after DeleteEndpoint answered, want the endpoint gone", got)
	}
	close(hold)
	testutil.Eventually(t, 5*time.Second, "e1's device removed after the answer", func() bool { return len(links()) == 0 })
	stop()
	if v := h.k.takeViolations(); len(v) > 0 {
		t.Fatalf("promises broken: %q", v)
	}
}
