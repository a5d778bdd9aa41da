package ipsec

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vxsec/vxsec/internal/testutil"
)

// inNewNetns runs f with a netlink handle in a fresh network namespace, so
// the test touches nothing of the machine's. Needs root.
func inNewNetns(t *testing.T, f func(h *netlink.Handle)) {
	t.Helper()
	testutil.InNewNetns(t, func(ns netns.NsHandle) {
		h, err := netlink.NewHandleAt(ns)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		f(h)
	})
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
		// The inbound policy as releases before the pin installed it: its
		// template accepts an SA of any reqid. SetPeer pins it in place.
		if err := h.XfrmPolicyAdd(inboundPolicy(local, peer, 4801, 0)); err != nil {
			t.Fatal(err)
		}
		ks, err := x.State()
		if err != nil {
			t.Fatal(err)
		}
		if r, ok := ks.InReqid[peer]; !ok || r != 0 {
			t.Fatalf("State of an unpinned inbound policy: InReqid %#x (present %v), want 0", r, ok)
		}
		for i := 0; i < 2; i++ { // idempotent
			if err := x.EnsureGuard(); err != nil {
				t.Fatal(err)
			}
			if err := x.SetPeer(peer, Reqid(uint16(i+1)), inReqid); err != nil {
				t.Fatal(err)
			}
		}
		// Never an inbound template that accepts any SA, nor another
		// user's reqid.
		for _, in := range []uint32{0, 0xD0C4E3} {
			if err := x.SetPeer(peer, Reqid(1), in); err == nil {
				t.Fatalf("SetPeer with inbound reqid %#x: want an error", in)
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
			if p.Priority == PeerPriority && p.Dir == netlink.XFRM_DIR_IN {
				if len(p.Tmpls) != 1 || p.Tmpls[0].Reqid != int(inReqid) || p.Tmpls[0].Proto != netlink.XFRM_PROTO_ESP ||
					p.Tmpls[0].Mode != netlink.XFRM_MODE_TRANSPORT || p.Tmpls[0].Optional != 0 {
					t.Errorf("inbound policy's template: %+v, want one required ESP transport template of reqid %#x", p.Tmpls, inReqid)
				}
			}
			if p.Priority == GuardPriority && p.Action != netlink.XFRM_POLICY_BLOCK {
				t.Errorf("guard policy %v does not block", p)
			}
			if p.DstPort != 4801 {
				t.Errorf("policy %v selects port %d, want only the encrypted port 4801", p, p.DstPort)
			}
		}
		ks, err = x.State()
		if err != nil {
			t.Fatal(err)
		}
		if ks.InReqid[peer] != inReqid || ks.OutReqid[peer] != Reqid(2) {
			t.Fatalf("State: InReqid %#x, OutReqid %#x; want %#x, %#x", ks.InReqid[peer], ks.OutReqid[peer], inReqid, Reqid(2))
		}
		// An optional template accepts cleartext, whatever reqid it names:
		// State reports it as not pinned, so that Repair reinstalls it.
		optional := inboundPolicy(local, peer, 4801, inReqid)
		optional.Tmpls[0].Optional = 1
		if err := h.XfrmPolicyUpdate(optional); err != nil {
			t.Fatal(err)
		}
		if ks, err = x.State(); err != nil || ks.InReqid[peer] != 0 {
			t.Fatalf("State of an optional inbound template: InReqid %#x (%v), want 0", ks.InReqid[peer], err)
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
