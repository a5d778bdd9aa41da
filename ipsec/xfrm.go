package ipsec

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Ownership marks. Every SA of vxsec's carries a reqid in its range, every
// policy one of its priorities: a restart finds and repairs exactly its own
// state and touches nobody else's.
const (
	reqidBase = 0x7a5e0000
	reqidMask = 0xffff0000
	// PeerPriority is the per-peer policies'; GuardPriority the catch-all
	// block policies', which the per-peer ones win over (lower is first).
	PeerPriority  = 0x7a5e
	GuardPriority = 0x7a5f
	// ReplayWindow is the anti-replay window in packets, with ESN.
	ReplayWindow = 128
)

// IsOwnReqid reports whether a reqid is in vxsec's range.
func IsOwnReqid(reqid uint32) bool { return reqid&reqidMask == reqidBase }

// Reqid makes a reqid of vxsec's from a 16-bit slot.
func Reqid(slot uint16) uint32 { return reqidBase | uint32(slot) }

// SA is one direction of one pair in one epoch.
type SA struct {
	Src, Dst netip.Addr
	SPI      uint32
	Reqid    uint32
	Key      [KeyMaterial]byte
}

// Xfrm programs vxsec's xfrm states and policies for encrypted VXLAN, which
// travels on its own UDP port so that policies select it by port alone:
// plain networks to the same host stay plain.
type Xfrm struct {
	h     *netlink.Handle
	local netip.Addr
	port  int
}

// NewXfrm uses h (its namespace) for encrypted VXLAN from local to port.
func NewXfrm(h *netlink.Handle, local netip.Addr, port int) *Xfrm {
	return &Xfrm{h: h, local: local, port: port}
}

func hostNet(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
}

func anyNet(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: net.IP(make([]byte, len(a.AsSlice()))), Mask: net.CIDRMask(0, a.BitLen())}
}

// EnsureGuard installs the catch-all policies that make the encrypted port
// fail closed: nothing leaves to it and nothing arrives on it unless a
// per-peer policy with an SA carries it. They exist before any device.
func (x *Xfrm) EnsureGuard() error {
	for _, dir := range []netlink.Dir{netlink.XFRM_DIR_OUT, netlink.XFRM_DIR_IN} {
		p := &netlink.XfrmPolicy{
			Src: anyNet(x.local), Dst: anyNet(x.local), Proto: netlink.Proto(unix.IPPROTO_UDP), DstPort: x.port,
			Dir: dir, Priority: GuardPriority, Action: netlink.XFRM_POLICY_BLOCK,
		}
		if err := x.h.XfrmPolicyUpdate(p); err != nil {
			return fmt.Errorf("installing the %s guard policy for UDP %d: %w", dirName(dir), x.port, err)
		}
	}
	return nil
}

// SetPeer installs the policies of one peer: outbound encrypted VXLAN to it
// must use the SA of outReqid; inbound from it must have come through an
// SA between the two (any epoch, so old and new both pass during a
// rotation). Updating in place is what switches the outbound key.
func (x *Xfrm) SetPeer(peer netip.Addr, outReqid uint32) error {
	out := &netlink.XfrmPolicy{
		Src: hostNet(x.local), Dst: hostNet(peer), Proto: netlink.Proto(unix.IPPROTO_UDP), DstPort: x.port,
		Dir: netlink.XFRM_DIR_OUT, Priority: PeerPriority, Action: netlink.XFRM_POLICY_ALLOW,
		Tmpls: []netlink.XfrmPolicyTmpl{{
			Src: net.IP(x.local.AsSlice()), Dst: net.IP(peer.AsSlice()),
			Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TRANSPORT, Reqid: int(outReqid),
		}},
	}
	in := &netlink.XfrmPolicy{
		Src: hostNet(peer), Dst: hostNet(x.local), Proto: netlink.Proto(unix.IPPROTO_UDP), DstPort: x.port,
		Dir: netlink.XFRM_DIR_IN, Priority: PeerPriority, Action: netlink.XFRM_POLICY_ALLOW,
		Tmpls: []netlink.XfrmPolicyTmpl{{
			Src: net.IP(peer.AsSlice()), Dst: net.IP(x.local.AsSlice()),
			Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TRANSPORT,
		}},
	}
	for _, p := range []*netlink.XfrmPolicy{out, in} {
		if err := x.h.XfrmPolicyUpdate(p); err != nil {
			return fmt.Errorf("installing the %s policy for peer %s: %w", dirName(p.Dir), peer, err)
		}
	}
	return nil
}

// DelPeer removes a peer's policies; traffic to it then meets the guard.
func (x *Xfrm) DelPeer(peer netip.Addr) error {
	var errs []error
	for _, p := range []*netlink.XfrmPolicy{
		{Src: hostNet(x.local), Dst: hostNet(peer), Proto: netlink.Proto(unix.IPPROTO_UDP), DstPort: x.port, Dir: netlink.XFRM_DIR_OUT},
		{Src: hostNet(peer), Dst: hostNet(x.local), Proto: netlink.Proto(unix.IPPROTO_UDP), DstPort: x.port, Dir: netlink.XFRM_DIR_IN},
	} {
		if err := x.h.XfrmPolicyDel(p); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("removing the %s policy for peer %s: %w", dirName(p.Dir), peer, err))
		}
	}
	return errors.Join(errs...)
}

// AddSA installs an SA: ESP transport, rfc4106(gcm(aes)) with a 256-bit key
// and the full ICV, ESN with a replay window.
func (x *Xfrm) AddSA(sa SA) error {
	if !IsOwnReqid(sa.Reqid) {
		return fmt.Errorf("reqid %#x is not vxsec's", sa.Reqid)
	}
	st := &netlink.XfrmState{
		Src: net.IP(sa.Src.AsSlice()), Dst: net.IP(sa.Dst.AsSlice()),
		Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TRANSPORT,
		Spi: int(sa.SPI), Reqid: int(sa.Reqid),
		ESN: true, ReplayWindow: ReplayWindow,
		Aead: &netlink.XfrmStateAlgo{Name: "rfc4106(gcm(aes))", Key: sa.Key[:], ICVLen: ICVBits},
	}
	if err := x.h.XfrmStateAdd(st); err != nil {
		return fmt.Errorf("installing SA %s→%s spi %#x: %w", sa.Src, sa.Dst, sa.SPI, err)
	}
	return nil
}

// DelSA removes an SA; a missing one is not an error.
func (x *Xfrm) DelSA(src, dst netip.Addr, spi uint32) error {
	st := &netlink.XfrmState{Src: net.IP(src.AsSlice()), Dst: net.IP(dst.AsSlice()), Proto: netlink.XFRM_PROTO_ESP, Spi: int(spi)}
	if err := x.h.XfrmStateDel(st); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("removing SA %s→%s spi %#x: %w", src, dst, spi, err)
	}
	return nil
}

// Owned lists vxsec's states and policies in the kernel.
func (x *Xfrm) Owned() ([]netlink.XfrmState, []netlink.XfrmPolicy, error) {
	states, err := x.h.XfrmStateList(netlink.FAMILY_ALL)
	if err != nil {
		return nil, nil, fmt.Errorf("listing xfrm states: %w", err)
	}
	var own []netlink.XfrmState
	for _, s := range states {
		if IsOwnReqid(uint32(s.Reqid)) {
			own = append(own, s)
		}
	}
	policies, err := x.h.XfrmPolicyList(netlink.FAMILY_ALL)
	if err != nil {
		return nil, nil, fmt.Errorf("listing xfrm policies: %w", err)
	}
	var ownP []netlink.XfrmPolicy
	for _, p := range policies {
		if p.Priority == PeerPriority || p.Priority == GuardPriority {
			ownP = append(ownP, p)
		}
	}
	return own, ownP, nil
}

// RemoveAll deletes every state and policy of vxsec's: what deleting the
// last encrypted network leaves behind is nothing.
func (x *Xfrm) RemoveAll() error {
	states, policies, err := x.Owned()
	if err != nil {
		return err
	}
	var errs []error
	for i := range policies {
		if err := x.h.XfrmPolicyDel(&policies[i]); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("removing policy: %w", err))
		}
	}
	for i := range states {
		if err := x.h.XfrmStateDel(&states[i]); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("removing state: %w", err))
		}
	}
	return errors.Join(errs...)
}

func dirName(d netlink.Dir) string {
	switch d {
	case netlink.XFRM_DIR_IN:
		return "inbound"
	case netlink.XFRM_DIR_OUT:
		return "outbound"
	}
	return "forward"
}

// State reads vxsec's SAs and outbound policies back from the kernel, for
// a restarted daemon to adopt.
func (x *Xfrm) State() (KernelState, error) {
	states, policies, err := x.Owned()
	if err != nil {
		return KernelState{}, err
	}
	ks := KernelState{OutReqid: map[netip.Addr]uint32{}, InPeers: map[netip.Addr]bool{}}
	for _, s := range states {
		src, ok1 := netip.AddrFromSlice(s.Src)
		dst, ok2 := netip.AddrFromSlice(s.Dst)
		if !ok1 || !ok2 {
			continue
		}
		ks.SAs = append(ks.SAs, KernelSA{Src: src.Unmap(), Dst: dst.Unmap(), SPI: uint32(s.Spi), Reqid: uint32(s.Reqid)})
	}
	for _, p := range policies {
		if p.Priority == PeerPriority && p.Dir == netlink.XFRM_DIR_IN && p.Src != nil {
			if src, ok := netip.AddrFromSlice(p.Src.IP); ok {
				ks.InPeers[src.Unmap()] = true
			}
		}
		if p.Priority != PeerPriority || p.Dir != netlink.XFRM_DIR_OUT || len(p.Tmpls) != 1 || p.Dst == nil {
			continue
		}
		dst, ok := netip.AddrFromSlice(p.Dst.IP)
		if !ok {
			continue
		}
		ks.OutReqid[dst.Unmap()] = uint32(p.Tmpls[0].Reqid)
	}
	return ks, nil
}
