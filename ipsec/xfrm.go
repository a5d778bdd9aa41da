package ipsec

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

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
	// UDP, if set, carries the SA's ESP in UDP (RFC 3948) between these
	// ports; nil is native ESP (IP protocol 50).
	UDP *UDPEncap
}

// UDPEncap is ESP in UDP: the sender's port and the receiver's.
type UDPEncap struct{ SrcPort, DstPort uint16 }

// Xfrm programs vxsec's xfrm states and policies for encrypted VXLAN, which
// travels on its own UDP port so that policies select it by port alone:
// plain networks to the same host stay plain.
type Xfrm struct {
	h     *netlink.Handle
	local netip.Addr
	// public is the address the Manager knows this host by (the advertise
	// address); it differs from local only behind NAT. SAs name it, the
	// kernel's carry local: what leaves is rewritten by the NAT, and what
	// arrives has been.
	public netip.Addr
	port   int
	// udpPort, if not 0, is where ESP in UDP arrives: sock is open on it
	// while the guard is in place.
	udpPort uint16
	// sockMu guards sock: Keepalives runs outside the Manager's lock,
	// which serialises the rest.
	sockMu sync.Mutex
	sock   *EncapSocket
}

// NewXfrm uses h (its namespace) for encrypted VXLAN from local to port.
func NewXfrm(h *netlink.Handle, local netip.Addr, port int) *Xfrm {
	return &Xfrm{h: h, local: local, public: local, port: port}
}

// BehindNAT makes x take SAs that name public (the host's advertise
// address, which a NAT in front of it forwards to local) as local's.
func (x *Xfrm) BehindNAT(public netip.Addr) *Xfrm {
	x.public = public
	return x
}

// Keepalives sends a NAT keepalive (EncapSocket.Keepalive) to each of to,
// from the ESP-in-UDP socket; nothing while it is closed.
func (x *Xfrm) Keepalives(to []netip.AddrPort) error {
	x.sockMu.Lock()
	defer x.sockMu.Unlock()
	if x.sock == nil {
		return nil
	}
	var errs []error
	for _, a := range to {
		errs = append(errs, x.sock.Keepalive(a))
	}
	return errors.Join(errs...)
}

// toKernel and fromKernel translate between the Manager's name of this
// host and the kernel's.
func (x *Xfrm) toKernel(a netip.Addr) netip.Addr {
	if a == x.public {
		return x.local
	}
	return a
}

func (x *Xfrm) fromKernel(a netip.Addr) netip.Addr {
	if a == x.local {
		return x.public
	}
	return a
}

// WithUDP makes x receive ESP in UDP on port (see EncapSocket) from
// EnsureGuard until RemoveAll. The socket is opened in the caller's
// network namespace, which must be h's.
func (x *Xfrm) WithUDP(port uint16) *Xfrm {
	x.udpPort = port
	return x
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
	if err := x.openSocket(); err != nil {
		return err
	}
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

func (x *Xfrm) openSocket() error {
	x.sockMu.Lock()
	defer x.sockMu.Unlock()
	if x.udpPort == 0 || x.sock != nil {
		return nil
	}
	sock, err := OpenEncapSocket(x.local, x.udpPort)
	if err != nil {
		return err
	}
	x.sock = sock
	return nil
}

// SetPeer installs the policies of one peer: outbound encrypted VXLAN to it
// must use the SA of outReqid; inbound from it must have come through an SA
// of inReqid (vxsec's inbound SAs all carry it, whatever their epochs, so
// old and new both pass during a rotation). Updating in place is what
// switches the outbound key.
//
// Why the inbound template names a reqid (Linux 6.1, net/xfrm/): xfrm_input
// finds the SA that decrypts an ESP packet by destination, SPI and protocol
// alone (xfrm_state_lookup; the source is not compared), and
// __xfrm_policy_check then matches that SA against the templates of the one
// inbound policy that selects the decrypted packet (after the SA's own
// selector, which vxsec's SAs and Docker's leave empty). xfrm_state_ok
// compares the protocol, the SPI and the reqid when the template names them
// ("x->props.reqid == tmpl->reqid || !tmpl->reqid") and the mode; in
// transport mode it compares no address. A template without a reqid thus
// accepts any transport-mode ESP SA to this host: one that another IPsec
// user installed between the same two addresses (Docker's overlay: reqid
// 0xD0C4E3, under a key every node of that cluster holds; strongSwan), or
// one without a selector between other addresses, carries forged UDP to
// the encrypted port into an encrypted network, and the firewall's "meta
// ipsec missing" rule cannot tell: the packet did come through an SA. With
// the reqid named, the kernel refuses it and counts XfrmInTmplMismatch.
//
// One template and one reqid for every SA a peer may send on: a policy's
// templates (up to XFRM_MAX_DEPTH) are a chain that the packet's secpath
// must satisfy in order (xfrm_policy_ok consumes one secpath entry per
// non-optional template), never alternatives, and an optional
// transport-mode template is satisfied by no SA at all, which would let
// cleartext in. So every inbound SA of vxsec's carries the Manager's
// inbound reqid, whatever its peer, epochs or run, and that is the one
// reqid every inbound template names. Shared across peers, it lets one
// member's SA carry a packet that spoofs another member's address; that
// gives a member nothing it cannot send from its own (any member may send
// any network's VXLAN), and it is what lets a restart adopt the inbound
// SAs of releases before the pin, which carried the same reqid.
func (x *Xfrm) SetPeer(peer netip.Addr, outReqid, inReqid uint32) error {
	if !IsOwnReqid(outReqid) || !IsOwnReqid(inReqid) {
		return fmt.Errorf("policies for peer %s: reqids %#x (out) and %#x (in) must both be vxsec's", peer, outReqid, inReqid)
	}
	out := &netlink.XfrmPolicy{
		Src: hostNet(x.local), Dst: hostNet(peer), Proto: netlink.Proto(unix.IPPROTO_UDP), DstPort: x.port,
		Dir: netlink.XFRM_DIR_OUT, Priority: PeerPriority, Action: netlink.XFRM_POLICY_ALLOW,
		Tmpls: []netlink.XfrmPolicyTmpl{{
			Src: net.IP(x.local.AsSlice()), Dst: net.IP(peer.AsSlice()),
			Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TRANSPORT, Reqid: int(outReqid),
		}},
	}
	in := inboundPolicy(x.local, peer, x.port, inReqid)
	for _, p := range []*netlink.XfrmPolicy{out, in} {
		if err := x.h.XfrmPolicyUpdate(p); err != nil {
			return fmt.Errorf("installing the %s policy for peer %s: %w", dirName(p.Dir), peer, err)
		}
	}
	return nil
}

// inboundPolicy is the per-peer inbound policy: UDP from peer to the
// encrypted port must have come through an ESP SA of reqid (0 would accept
// any SA: see SetPeer).
func inboundPolicy(local, peer netip.Addr, port int, reqid uint32) *netlink.XfrmPolicy {
	return &netlink.XfrmPolicy{
		Src: hostNet(peer), Dst: hostNet(local), Proto: netlink.Proto(unix.IPPROTO_UDP), DstPort: port,
		Dir: netlink.XFRM_DIR_IN, Priority: PeerPriority, Action: netlink.XFRM_POLICY_ALLOW,
		Tmpls: []netlink.XfrmPolicyTmpl{{
			Src: net.IP(peer.AsSlice()), Dst: net.IP(local.AsSlice()),
			Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TRANSPORT, Reqid: int(reqid),
		}},
	}
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
	name := sa
	sa.Src, sa.Dst = x.toKernel(sa.Src), x.toKernel(sa.Dst)
	st := &netlink.XfrmState{
		Src: net.IP(sa.Src.AsSlice()), Dst: net.IP(sa.Dst.AsSlice()),
		Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TRANSPORT,
		Spi: int(sa.SPI), Reqid: int(sa.Reqid),
		ESN: true, ReplayWindow: ReplayWindow,
		Aead: &netlink.XfrmStateAlgo{Name: "rfc4106(gcm(aes))", Key: sa.Key[:], ICVLen: ICVBits},
	}
	if sa.UDP != nil {
		st.Encap = &netlink.XfrmStateEncap{Type: netlink.XFRM_ENCAP_ESPINUDP, SrcPort: int(sa.UDP.SrcPort), DstPort: int(sa.UDP.DstPort),
			OriginalAddress: net.IP(make([]byte, len(sa.Src.AsSlice())))}
	}
	if err := x.h.XfrmStateAdd(st); err != nil {
		return fmt.Errorf("installing SA %s→%s spi %#x: %w", name.Src, name.Dst, sa.SPI, err)
	}
	return nil
}

// DelSA removes an SA; a missing one is not an error.
func (x *Xfrm) DelSA(src, dst netip.Addr, spi uint32) error {
	st := &netlink.XfrmState{Src: net.IP(x.toKernel(src).AsSlice()), Dst: net.IP(x.toKernel(dst).AsSlice()), Proto: netlink.XFRM_PROTO_ESP, Spi: int(spi)}
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
	x.sockMu.Lock()
	if x.sock != nil {
		errs = append(errs, x.sock.Close())
		x.sock = nil
	}
	x.sockMu.Unlock()
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

// State reads vxsec's SAs and policies back from the kernel, for a
// restarted daemon to adopt and for Repair to compare.
func (x *Xfrm) State() (KernelState, error) {
	states, policies, err := x.Owned()
	if err != nil {
		return KernelState{}, err
	}
	ks := KernelState{OutReqid: map[netip.Addr]uint32{}, InReqid: map[netip.Addr]uint32{}}
	for _, s := range states {
		src, ok1 := netip.AddrFromSlice(s.Src)
		dst, ok2 := netip.AddrFromSlice(s.Dst)
		if !ok1 || !ok2 {
			continue
		}
		ks.SAs = append(ks.SAs, KernelSA{Src: x.fromKernel(src.Unmap()), Dst: x.fromKernel(dst.Unmap()), SPI: uint32(s.Spi), Reqid: uint32(s.Reqid)})
	}
	for _, p := range policies {
		if p.Priority == PeerPriority && p.Dir == netlink.XFRM_DIR_IN && p.Src != nil {
			if src, ok := netip.AddrFromSlice(p.Src.IP); ok {
				// Anything but one required ESP transport template (an
				// optional one accepts cleartext) reads as 0, as does one
				// without a reqid (a release before the pin): not what
				// vxsec installs, so Activate and Repair reinstall it.
				var reqid uint32
				if t := p.Tmpls; len(t) == 1 && t[0].Proto == netlink.XFRM_PROTO_ESP && t[0].Mode == netlink.XFRM_MODE_TRANSPORT && t[0].Optional == 0 {
					reqid = uint32(t[0].Reqid)
				}
				ks.InReqid[src.Unmap()] = reqid
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

// SAStats is what the kernel counted on one SA of vxsec's.
type SAStats struct {
	Src, Dst netip.Addr
	SPI      uint32
	Bytes    uint64
	Packets  uint64
	// Replay counts packets refused as replayed (outside or behind the
	// window); IntegrityFailed those whose ICV did not verify.
	Replay          uint64
	IntegrityFailed uint64
}

// Stats reads the counters of vxsec's SAs, named as the Manager names
// them.
func (x *Xfrm) Stats() ([]SAStats, error) {
	states, _, err := x.Owned()
	if err != nil {
		return nil, err
	}
	var out []SAStats
	for _, s := range states {
		src, ok1 := netip.AddrFromSlice(s.Src)
		dst, ok2 := netip.AddrFromSlice(s.Dst)
		if !ok1 || !ok2 {
			continue
		}
		out = append(out, SAStats{
			Src: x.fromKernel(src.Unmap()), Dst: x.fromKernel(dst.Unmap()), SPI: uint32(s.Spi),
			Bytes: s.Statistics.Bytes, Packets: s.Statistics.Packets,
			Replay: uint64(s.Statistics.Replay), IntegrityFailed: uint64(s.Statistics.Failed),
		})
	}
	return out, nil
}
