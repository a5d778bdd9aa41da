package ipsec

import (
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// inNewNetns runs f with a netlink handle in a fresh network namespace, so
// the test touches nothing of the machine's. Needs root.
func inNewNetns(t *testing.T, f func(h *netlink.Handle)) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test programs xfrm policies in a network namespace: it needs root")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	defer netns.Set(orig)
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	f(h)
}

// TestPolicies programs and removes vxsec's policies. xfrm policies work on
// every kernel; SAs need ESP and GCM and are proven in the kernel lab.
func TestPolicies(t *testing.T) {
	inNewNetns(t, func(h *netlink.Handle) {
		local, peer := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")
		x := NewXfrm(h, local, 4801)
		// Somebody else's policy, which vxsec must leave alone.
		foreign := &netlink.XfrmPolicy{Src: hostNet(local), Dst: hostNet(peer), Dir: netlink.XFRM_DIR_OUT, Priority: 100,
			Tmpls: []netlink.XfrmPolicyTmpl{{Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TRANSPORT}}}
		if err := h.XfrmPolicyAdd(foreign); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ { // idempotent
			if err := x.EnsureGuard(); err != nil {
				t.Fatal(err)
			}
			if err := x.SetPeer(peer, Reqid(uint16(i+1))); err != nil {
				t.Fatal(err)
			}
		}
		_, own, err := x.Owned()
		if err != nil {
			t.Fatal(err)
		}
		if len(own) != 4 {
			t.Fatalf("own policies = %d, want 4 (guard in/out, peer in/out): %+v", len(own), own)
		}
		for _, p := range own {
			if p.Priority == PeerPriority && p.Dir == netlink.XFRM_DIR_OUT && p.Tmpls[0].Reqid != int(Reqid(2)) {
				t.Errorf("outbound policy not updated in place: reqid %#x", p.Tmpls[0].Reqid)
			}
			if p.Priority == GuardPriority && p.Action != netlink.XFRM_POLICY_BLOCK {
				t.Errorf("guard policy %v does not block", p)
			}
			if p.DstPort != 4801 {
				t.Errorf("policy %v selects port %d, want only the encrypted port 4801", p, p.DstPort)
			}
		}
		if err := x.DelPeer(peer); err != nil {
			t.Fatal(err)
		}
		if err := x.RemoveAll(); err != nil {
			t.Fatal(err)
		}
		_, own, _ = x.Owned()
		if len(own) != 0 {
			t.Fatalf("policies left after RemoveAll: %+v", own)
		}
		all, _ := h.XfrmPolicyList(netlink.FAMILY_ALL)
		if len(all) != 1 || all[0].Priority != 100 {
			t.Fatalf("somebody else's policy was touched: %+v", all)
		}
		// Without ESP/GCM, an SA cannot be installed: say so, never pretend.
		err = x.AddSA(SA{Src: local, Dst: peer, SPI: 0x1000, Reqid: Reqid(1)})
		if Probe() != nil && (err == nil || !strings.Contains(err.Error(), "installing SA")) {
			t.Fatalf("AddSA on a kernel without ESP/GCM: %v", err)
		}
		if err := x.AddSA(SA{Src: local, Dst: peer, SPI: 0x1000, Reqid: 5}); err == nil {
			t.Fatal("AddSA with a foreign reqid: want an error")
		}
	})
}
