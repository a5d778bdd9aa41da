//go:build integration

package integration

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vxsec/vxsec/firewall"
	"github.com/vxsec/vxsec/lab"
)

// controlPort is where every injector's positive control goes: a port of
// the same peer that vxsec does not guard.
const controlPort = 4899

// injector is one way a tenant of a member host could try to put a frame
// into a vxsec network, and the lock (on the host named by `at`) that must
// stop it.
type injector struct {
	name string
	// from is the namespace the injector runs in; uid its user.
	from *lab.Host
	uid  int
	mode string
	// src is the source a raw injector writes; to the address it sends to.
	src, to netip.Addr
	// at is the member host whose lock must count the drop; local says the
	// sender's own kernel refuses the send (a local netfilter drop).
	at    *lab.Host
	lock  string
	local bool
}

// segmentationInjectors are every injector of a member host's tenants that
// issue 10 names, aimed from h1's side at h2's network (and h2 at itself).
// On an encrypted port a forged member address arrives in cleartext, which
// the cleartext lock drops first.
func segmentationInjectors(t *testing.T, h1, h2 *lab.Host, encrypted bool) []injector {
	t.Helper()
	tenant1, err := h1.AddTenant(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	tenant2, err := h2.AddTenant(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	lo := netip.MustParseAddr("127.0.0.1")
	if h1.Addr.Is6() {
		lo = netip.IPv6Loopback()
	}
	forgedLock, forwardLock := firewall.LockSpoofedMember, firewall.LockForwardedInjection
	selfLock := firewall.LockLocalInjection
	if encrypted {
		// The forged member address arrives in cleartext; the forwarded
		// datagram meets the catch-all block policy at the forward route
		// lookup, before the forward hook.
		forgedLock, forwardLock = firewall.LockCleartext, "xfrm:XfrmOutPolBlock"
		if h1.Addr.Is6() {
			// IPv4's loopback skips xfrm (net.ipv4.conf.lo.disable_xfrm),
			// so the output hook's rule refuses a datagram to this host;
			// IPv6 has no such switch, and the guard's block policy
			// refuses it first, at the route lookup.
			selfLock = "xfrm:XfrmOutPolBlock"
		}
	}
	return []injector{
		{name: "unprivileged-udp", from: h1, uid: 65534, mode: lab.InjectUDP, to: h2.Addr,
			at: h1, lock: firewall.LockLocalInjection, local: true},
		{name: "host-raw-socket", from: h1, uid: 0, mode: lab.InjectRaw, src: h1.Addr, to: h2.Addr,
			at: h1, lock: firewall.LockLocalInjection, local: true},
		{name: "unprivileged-udp-to-self", from: h2, uid: 65534, mode: lab.InjectUDP, to: h2.Addr,
			at: h2, lock: selfLock, local: true},
		{name: "unprivileged-udp-to-loopback", from: h2, uid: 65534, mode: lab.InjectUDP, to: lo,
			at: h2, lock: selfLock, local: true},
		{name: "natted-container", from: tenant1, uid: 0, mode: lab.InjectUDP, to: h2.Addr,
			at: h1, lock: forwardLock},
		{name: "container-forging-a-member", from: tenant2, uid: 0, mode: lab.InjectRaw, src: h1.Addr, to: h2.Addr,
			at: h2, lock: forgedLock},
	}
}

// drops reads one lock's drop count from the host daemon's status. The
// brief status, which pollers ask for, must leave the counters out.
func drops(t *testing.T, h *lab.Host, lock string) uint64 {
	t.Helper()
	st, err := h.Status(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	n, ok := st.Drops[lock]
	if !ok {
		t.Fatalf("%s: status counts no lock %q: %v", h.Name, lock, st.Drops)
	}
	brief, err := h.BriefStatus(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if brief.Drops != nil || len(brief.Members) != len(st.Members) {
		t.Fatalf("%s: brief status has drops %v and %d members, want none and %d", h.Name, brief.Drops, len(brief.Members), len(st.Members))
	}
	return n
}

// TestAttackSegmentation: the tenants of a member host (an unprivileged
// user, a host-network process with a raw socket, a container of another
// network behind the host's NAT, a container forging a member's address)
// each send a hand-made VXLAN frame for a container of a vxsec network.
// Each is delivered 0 times and counted by its lock; each injector's same
// datagram reaches the peer on another port (the attack was otherwise
// possible), and the network's own traffic flows before and after.
func TestAttackSegmentation(t *testing.T) {
	c := newCluster(t, 2)
	h1, h2 := c.hosts[0], c.hosts[1]
	const vni = 7651
	ids := createEverywhere(t, c.hosts, "seg", vni, "10.81.0.0/24")
	friend := mustRun(t, h1, "friend", ids[h1], "10.81.0.11/24")
	victim := mustRun(t, h2, "victim", ids[h2], "10.81.0.12/24")
	waitCounts(t, h1, vni, 1, 1, 5*time.Second)
	waitCounts(t, h2, vni, 1, 1, 5*time.Second)
	checkSegmentation(t, 4800, friend, victim, vni, segmentationInjectors(t, h1, h2, false))
}

// TestAttackSegmentation6 is TestAttackSegmentation on an IPv6-only
// underlay: the same injectors over IPv6 (a tenant behind NAT66), the same
// locks, the same controls.
func TestAttackSegmentation6(t *testing.T) {
	c := newCluster6(t, 2)
	h1, h2 := c.hosts[0], c.hosts[1]
	const vni = 7652
	ids := createEverywhere(t, c.hosts, "seg6", vni, "10.82.0.0/24")
	friend := mustRun(t, h1, "friend", ids[h1], "10.82.0.11/24")
	victim := mustRun(t, h2, "victim", ids[h2], "10.82.0.12/24")
	waitCounts(t, h1, vni, 1, 1, 5*time.Second)
	waitCounts(t, h2, vni, 1, 1, 5*time.Second)
	checkSegmentation(t, 4800, friend, victim, vni, segmentationInjectors(t, h1, h2, false))
}

// checkSegmentation runs every injector against the victim's network on
// port (the plain or the encrypted data port).
func checkSegmentation(t *testing.T, port uint16, friend, victim *lab.Container, vni int, injectors []injector) {
	// What the victim receives is judged by a capture inside it: echo
	// requests from the forged source. Its positive control: the
	// network's own pings are seen the same way.
	inbox, err := victim.Capture(ctxT(t), "icmp[icmptype] == icmp-echo")
	if err != nil {
		t.Fatal(err)
	}
	defer inbox.Stop()
	if r, err := friend.Ping(ctxT(t), victim.IP(), "-c", "5", "-i", "0.05", "-W", "1"); err != nil || r.Received != 5 {
		t.Fatalf("the network's own ping before: %+v %v", r, err)
	}
	from := func(src netip.Addr) func(ps lab.Packets) int {
		return func(ps lab.Packets) int {
			return len(ps.Where(func(p lab.Packet) bool { return p.Src == src }))
		}
	}
	if _, err := inbox.Wait(ctxT(t), 10*time.Second, func(ps lab.Packets) error {
		if n := from(friend.Addr.Addr())(ps); n < 5 {
			return fmt.Errorf("the capture inside the victim saw %d of the friend's 5 echo requests", n)
		}
		return nil
	}); err != nil {
		t.Fatalf("positive control of the victim's capture: %v", err)
	}
	victimMAC, err := net.ParseMAC(victim.MAC)
	if err != nil {
		t.Fatal(err)
	}
	forged := lab.Forgery{
		VNI: uint32(vni), DstMAC: victimMAC, DstIP: victim.Addr.Addr(),
		SrcMAC: net.HardwareAddr{0x02, 0, 0xde, 0xad, 0xbe, 0xef}, SrcIP: victim.Addr.Masked().Addr().Next().Next().Next(),
	}
	const count = 20
	for _, in := range injectors {
		t.Run(in.name, func(t *testing.T) {
			send := func(port uint16) lab.InjectResult {
				t.Helper()
				r, err := lab.Inject(ctxT(t), lab.Injection{NS: in.from.NS, UID: in.uid, Mode: in.mode, Src: in.src,
					Dst: netip.AddrPortFrom(in.to, port), Count: count, Payload: forged.Payload()})
				if err != nil {
					t.Fatal(err)
				}
				return r
			}
			// Positive control: the same datagrams to another port of the
			// victim's host arrive there.
			capt, err := victim.Host.Capture(ctxT(t), fmt.Sprintf("udp dst port %d", controlPort))
			if err != nil {
				t.Fatal(err)
			}
			if r := send(controlPort); r.Sent != count {
				t.Fatalf("control: the sender's kernel took %d of %d datagrams to port %d: %+v", r.Sent, count, controlPort, r)
			}
			if _, err := capt.Wait(ctxT(t), 10*time.Second, func(ps lab.Packets) error {
				if n := ps.CountUDP(controlPort); n < count {
					return fmt.Errorf("%d of the control's %d datagrams reached %s", n, count, victim.Host.Name)
				}
				return nil
			}); err != nil {
				t.Fatalf("positive control: %v", err)
			}
			capt.Stop()

			drops0 := drops(t, in.at, in.lock)
			r := send(port)
			// The lock's count is the positive signal that the datagrams
			// arrived where they are judged; then anything that got past
			// it has had time to reach the victim.
			var dropped uint64
			// The checks below say what fell short.
			_ = lab.WaitFor(ctxT(t), 10*time.Second, func() error {
				if dropped = drops(t, in.at, in.lock) - drops0; dropped < count {
					return fmt.Errorf("%d dropped", dropped)
				}
				return nil
			})
			time.Sleep(200 * time.Millisecond) // an absence (nothing delivered): no signal but time
			ps, err := inbox.Packets()
			if err != nil {
				t.Fatal(err)
			}
			delivered := from(forged.SrcIP)(ps)
			t.Logf("%s (uid %d, %s socket in %s): %d sent, %d refused by the sender's kernel; %s dropped %d under %q; the victim received %d",
				in.name, in.uid, in.mode, in.from.Name, r.Sent, r.Refused, in.at.Name, dropped, in.lock, delivered)
			if delivered != 0 {
				t.Errorf("the victim received %d forged echo requests, want 0", delivered)
			}
			if dropped < count {
				t.Errorf("%s's %q lock counted %d drops, want at least %d", in.at.Name, in.lock, dropped, count)
			}
			if in.local && r.Refused != count {
				t.Errorf("the sender's kernel refused %d of %d, want all", r.Refused, count)
			}
		})
	}
	// And the network still talks.
	reachFast(t, friend, victim.IP())
	reachFast(t, victim, friend.IP())
}
