package ipsec

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/vxsec/vxsec/announce"
)

// The negotiation, as each host runs it against what the others publish
// (announce.IPsec is what each host publishes):
//
//   - A host publishes the public keys of its live epochs. For every peer
//     epoch × own epoch it installs an inbound SA, with an SPI it chose,
//     and publishes that SPI: the publication is the acknowledgement that
//     it can receive on that key.
//   - A host sends to a peer with the newest of its own epochs for which
//     the peer has published an SPI, so it never sends on a key the peer
//     cannot decrypt (make before break). It publishes what it uses.
//   - An inbound SA no longer wanted stays until the peer publishes that it
//     sends on another; an own epoch rotated out stays until no peer sends
//     to it any more. Then its SAs go and its private key is erased.
//   - A host only moves forward: it never sends on an older pair of epochs
//     than one it has sent on while that one is live. And no key is
//     installed twice: an own epoch remembers every pair and SPI it has
//     sent on and every SPI it has received on, for as long as it lives, so
//     a pair re-announced after it was used (a bug, a forgery, malice, a
//     peer back from a partition) gets nothing, and a new epoch to move to
//     (refuseLocked), never a second SA whose sequence numbers, and so GCM
//     nonces, start again under the same key.
//
// DrainMax bounds both waits for a peer that never confirms (one that died,
// or a bug): afterwards the old key goes anyway, so a silent peer cannot
// keep an old key alive for ever.

// PeerInfo is another host's latest announcement.
type PeerInfo struct {
	Host netip.Addr
	announce.IPsec
}

// keyID is the identity the peer bound its epoch to ("" for none).
func (p PeerInfo) keyID(epoch uint64) string {
	for _, k := range p.Keys {
		if k.Epoch == epoch {
			return k.ID
		}
	}
	return ""
}

// Kernel is the xfrm programming the Manager needs; *Xfrm is the real one.
type Kernel interface {
	EnsureGuard() error
	SetPeer(peer netip.Addr, outReqid, inReqid uint32) error
	DelPeer(peer netip.Addr) error
	AddSA(SA) error
	DelSA(src, dst netip.Addr, spi uint32) error
	State() (KernelState, error)
	RemoveAll() error
}

// KernelSA identifies an SA of vxsec's found in the kernel.
type KernelSA struct {
	Src, Dst netip.Addr
	SPI      uint32
	Reqid    uint32
}

// KernelState is vxsec's xfrm state as the kernel has it.
type KernelState struct {
	SAs []KernelSA
	// OutReqid is the reqid each peer's outbound policy selects.
	OutReqid map[netip.Addr]uint32
	// InReqid is the reqid each peer's inbound policy's template requires,
	// for the peers that have one (0: any SA, as releases before the pin
	// left it).
	InReqid map[netip.Addr]uint32
}

// Reqid slots: every inbound SA carries slotIn, and every peer's inbound
// policy accepts only an SA of that reqid (see Xfrm.SetPeer for why one, and
// why the template must name it); outbound SAs to a peer alternate between
// two, and moving the peer's outbound policy from one to the other is the
// atomic switch of keys.
const (
	slotIn   = 0
	slotOutA = 1
	slotOutB = 2
)

// inReqid is the reqid of every inbound SA and of every inbound template.
// Releases before the pin gave their inbound SAs the same one: a restart
// that adopts them and pins the template loses none of their packets.
const inReqid uint32 = reqidBase | slotIn

// DefaultDrainMax: see the package comment on the negotiation.
const DefaultDrainMax = 2 * time.Minute

// ManagerConfig is what a Manager is built from.
type ManagerConfig struct {
	Local    netip.Addr
	Kernel   Kernel
	Log      *slog.Logger
	DrainMax time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Identity names this host's identity at the moment (see KeyPair.ID);
	// nil or "" binds the epochs made meanwhile to none.
	Identity func() string
	// UDPPort is where this host receives ESP in UDP (the Kernel's socket,
	// Xfrm.WithUDP); 0: it receives native ESP only.
	UDPPort uint16
	// UDPAlways asks for ESP in UDP both ways with every peer that has it
	// (VXSEC_ESP_ENCAP=udp): where IP protocol 50 does not pass.
	UDPAlways bool
	// UDPAuto (VXSEC_ESP_ENCAP=auto) receives in UDP from every peer whose
	// native ESP has not been seen to arrive (SetNativeESP), natively from
	// the others.
	UDPAuto bool
	// BehindNAT (the advertise address is not the host's own, in auto
	// mode): ESP in UDP both ways with every peer, whatever the probes
	// say, since a NAT passes UDP and may not pass ESP; announced, so that
	// peers ask for it too, and with keepalives (NATKeepalives).
	BehindNAT bool
	// Grace is how long an SA stays in the kernel after the switch away
	// from it: packets already bound to it (past the policy lookup, or
	// queued) still leave on it and are still received. Both ends wait,
	// the receiver from the moment it learns of the switch, so it holds
	// the SA at least as long as the sender may use it. Removals happen at
	// Syncs: Due says when the next one is owed. Zero removes at once.
	Grace time.Duration
}

// DefaultGrace: see ManagerConfig.Grace. Under a full TCP stream, removing
// the old SA at once lost about 2 packets per 10 rotations (the kernel's
// XfrmOutStateInvalid, then XfrmInNoStates with the sender alone waiting);
// packets in flight in the stack take microseconds, so a second is ample.
const DefaultGrace = time.Second

// encapSwitchEvery bounds how often a change of the native ESP seen
// (SetNativeESP) may start an epoch: a path that flaps costs one
// rotation per period, not one per probe.
const encapSwitchEvery = 10 * time.Second

// Manager derives vxsec's SAs and policies from this host's epochs and its
// peers' announcements. Sync is idempotent and keeps what the kernel had
// before a restart until the peers have re-keyed.
type Manager struct {
	cfg ManagerConfig
	log *slog.Logger

	mu     sync.Mutex
	active bool
	epochs []*epoch // oldest first; the last is the newest
	in     map[inKey]*inSA
	out    map[netip.Addr]*outSA
	// policies are the peers whose policies are installed.
	policies map[netip.Addr]bool
	// legacy are SAs found in the kernel at start, of a previous run (or
	// left by a failed step): kept until their peer has re-keyed.
	legacy      map[KernelSA]bool
	legacySince time.Time
	// burned are outbound SPIs never to be used again (see burnLocked).
	burned map[burnKey]bool
	// retiring are superseded outbound SAs, kept for the grace.
	retiring []retiringOut
	// native are the peers whose native ESP reached this host lately
	// (SetNativeESP); peerEncap what each peer last said of ESP in UDP;
	// encapSwitched when a change of them last started an epoch.
	native        map[netip.Addr]bool
	peerEncap     map[netip.Addr]peerEncap
	encapSwitched time.Time
	// refused counts the re-announced pairs refused (see refuseLocked) in
	// this Manager's life; refuseLog rate-limits their log lines.
	refused uint64
	// rotations and lastRotation: see Status; rekeys: PeerStatus.Rekeys.
	rotations    uint64
	lastRotation time.Time
	rekeys       map[netip.Addr]uint64
	refuseLog    struct {
		last       time.Time
		suppressed int
	}
}

type epoch struct {
	kp         *KeyPair
	superseded time.Time // zero while newest

	// What this epoch's key pair has keyed, remembered as long as it lives
	// (once it is erased nothing derives from it again). An SA's key is a
	// function of the two key pairs, both epochs, the direction and the
	// SPI: under one own epoch, the peer, its epoch and the SPI name it.
	// sent are the outbound SAs installed (or attempted), refused the ones
	// a peer re-announced after they were used; inSPIs the SPIs an inbound
	// SA was installed on, never chosen again under this epoch.
	sent    map[sentKey][]byte // the peer's public key of its epoch
	refused map[sentKey]bool
	inSPIs  map[uint32]bool
	// unneeded is when it was first found needed by nobody (zero while
	// needed): it is erased a grace later.
	unneeded time.Time
}

// retiringOut is an outbound SA the policy no longer selects, and since
// when.
type retiringOut struct {
	peer       netip.Addr
	spi, reqid uint32
	since      time.Time
}

// sentKey names an outbound SA's key under one own epoch. The peer's public
// key is not in it: a peer that reuses an epoch number (its clock set back)
// with another key and the same SPI is refused too, which costs a new epoch
// and is safe.
type sentKey struct {
	peer      netip.Addr
	peerEpoch uint64
	spi       uint32
}

type inKey struct {
	peer             netip.Addr
	peerEpoch, epoch uint64
}

type inSA struct {
	spi uint32
	// udp: made for ESP in UDP (the kernel delivers on it nothing else).
	udp bool
	// peerPublic is the peer's key it was derived from: a peer restarted
	// with its clock set back may reuse an epoch number, never a key.
	peerPublic []byte
	unwanted   time.Time // when it stopped being wanted; zero while wanted
	// replaced is when the peer was first seen sending on another SA
	// (zero until then): it goes a grace later.
	replaced time.Time
}

// peerEncap is what a peer announces of ESP in UDP.
type peerEncap struct {
	port  uint16
	encap string
	nat   bool
}

type burnKey struct {
	peer netip.Addr
	spi  uint32
}

type outSA struct {
	epoch, peerEpoch uint64
	peerPublic       []byte
	// bound is the peer's identity the SA's key is bound to ("": the
	// address-bound schedule).
	bound      string
	spi, reqid uint32
	legacy     bool
	// udp: the SA sends ESP in UDP; why says what chose the encapsulation.
	udp bool
	why string
	// since is when it took over (for metrics: the pair's key age).
	since time.Time
}

// NewManager returns an inactive Manager: it touches the kernel only once
// Activate is called.
func NewManager(cfg ManagerConfig) *Manager {
	if cfg.DrainMax == 0 {
		cfg.DrainMax = DefaultDrainMax
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Manager{cfg: cfg, log: cfg.Log.With("component", "ipsec")}
}

// Active reports whether the Manager holds keys and programs the kernel.
func (m *Manager) Active() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.active
}

// Activate installs the guard policies (fail closed before any encrypted
// device exists), adopts what a previous run left in the kernel, and makes
// a fresh epoch. Calling it again is a no-op.
func (m *Manager) Activate() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.active {
		return m.cfg.Kernel.EnsureGuard()
	}
	if err := m.cfg.Kernel.EnsureGuard(); err != nil {
		return err
	}
	ks, err := m.cfg.Kernel.State()
	if err != nil {
		return err
	}
	m.in, m.out, m.policies, m.legacy = map[inKey]*inSA{}, map[netip.Addr]*outSA{}, map[netip.Addr]bool{}, map[KernelSA]bool{}
	m.burned, m.peerEncap, m.retiring = map[burnKey]bool{}, map[netip.Addr]peerEncap{}, nil
	if m.rekeys == nil {
		m.rekeys = map[netip.Addr]uint64{}
	}
	m.legacySince = m.cfg.Now()
	for _, sa := range ks.SAs {
		m.legacy[sa] = true
	}
	// A previous run's outbound SAs keep carrying traffic until the peer
	// has acknowledged this run's keys: the outbound policies keep the
	// reqid they select.
	peers := map[netip.Addr]bool{}
	for peer := range ks.OutReqid {
		peers[peer] = true
	}
	for peer := range ks.InReqid {
		peers[peer] = true
	}
	pinned, unpinned := 0, 0
	for peer := range peers {
		reqid, ok := ks.OutReqid[peer]
		if !ok {
			// Only an inbound policy: the outbound one goes in selecting an
			// SA that does not exist yet, which drops as the guard did.
			reqid = Reqid(slotOutA)
		}
		for _, sa := range ks.SAs {
			if sa.Src == m.cfg.Local && sa.Dst == peer && sa.Reqid == reqid {
				m.out[peer] = &outSA{spi: sa.SPI, reqid: reqid, legacy: true}
				delete(m.legacy, sa)
			}
		}
		if m.out[peer] == nil {
			m.out[peer] = &outSA{reqid: reqid, legacy: true}
		}
		if ok && ks.InReqid[peer] == inReqid {
			m.policies[peer] = true
			continue
		}
		// An inbound policy that accepts any SA (as a release before the
		// pin installed it), or none: pinned now, in place. The outbound
		// policy is rewritten as it was. The previous run's inbound SAs
		// carry inReqid too, so none of their packets is refused.
		if err := m.cfg.Kernel.SetPeer(peer, reqid, inReqid); err != nil {
			m.log.Error("pinning the inbound policy to vxsec's reqid (retried at the next sync)", "peer", peer, "err", err)
			unpinned++
			continue
		}
		m.policies[peer] = true
		pinned++
	}
	foreignIn := 0
	for _, sa := range ks.SAs {
		if sa.Dst == m.cfg.Local && sa.Reqid != inReqid {
			foreignIn++ // no release made one: its packets meet the template's refusal
		}
	}
	if err := m.newEpochLocked(); err != nil {
		return err
	}
	m.active = true
	m.log.Info("IPsec active", "epoch", m.newest().kp.Epoch, "adopted_sas", len(ks.SAs), "adopted_peers", len(peers),
		"inbound_policies_pinned", pinned, "inbound_policies_not_pinned", unpinned, "adopted_inbound_sas_of_another_reqid", foreignIn)
	return nil
}

// Deactivate removes every state and policy of vxsec's and forgets all
// keys: what the last encrypted network leaves behind is nothing.
func (m *Manager) Deactivate() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.epochs {
		e.kp.Erase()
	}
	m.epochs, m.in, m.out, m.policies, m.legacy, m.retiring = nil, nil, nil, nil, nil, nil
	m.active = false
	return m.cfg.Kernel.RemoveAll()
}

// Rotate starts a new epoch. Its keys are used as each peer acknowledges
// them (at the next Syncs); the old epoch drains and is erased after.
func (m *Manager) Rotate() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.active {
		return errors.New("no encrypted network on this host: nothing to rotate")
	}
	return m.newEpochLocked()
}

func (m *Manager) newEpochLocked() error {
	n := uint64(m.cfg.Now().UnixNano())
	if len(m.epochs) > 0 && n <= m.newest().kp.Epoch {
		n = m.newest().kp.Epoch + 1
	}
	kp, err := NewKeyPair(n)
	if err != nil {
		return err
	}
	if m.cfg.Identity != nil {
		kp.ID = m.cfg.Identity()
	}
	if len(m.epochs) > 0 {
		m.newest().superseded = m.cfg.Now()
		m.rotations++
		m.lastRotation = m.cfg.Now()
	}
	m.epochs = append(m.epochs, &epoch{kp: kp, sent: map[sentKey][]byte{}, refused: map[sentKey]bool{}, inSPIs: map[uint32]bool{}})
	return nil
}

func (m *Manager) newest() *epoch { return m.epochs[len(m.epochs)-1] }

func (m *Manager) epochByNumber(n uint64) *epoch {
	for _, e := range m.epochs {
		if e.kp.Epoch == n {
			return e
		}
	}
	return nil
}

// announce.IPsec is what this host publishes now; empty while inactive.
func (m *Manager) Announcement() announce.IPsec {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.announcementLocked()
}

func (m *Manager) announcementLocked() announce.IPsec {
	var a announce.IPsec
	if !m.active {
		return a
	}
	for _, e := range m.epochs {
		a.Keys = append(a.Keys, announce.Key{Epoch: e.kp.Epoch, Public: e.kp.Public(), ID: e.kp.ID})
	}
	a.UDP = m.cfg.UDPPort
	if m.cfg.UDPAlways && m.cfg.UDPPort != 0 { // auto asks nothing of its peers...
		a.Encap = announce.EncapUDP
	}
	if m.cfg.UDPAuto && m.cfg.BehindNAT && m.cfg.UDPPort != 0 { // ...unless behind NAT
		a.Encap, a.NAT = announce.EncapUDP, true
	}
	for k, sa := range m.in {
		a.SPIs = append(a.SPIs, announce.SPI{Peer: k.peer, PeerEpoch: k.peerEpoch, Epoch: k.epoch, SPI: sa.spi, UDP: sa.udp})
	}
	sort.Slice(a.SPIs, func(i, j int) bool {
		x, y := a.SPIs[i], a.SPIs[j]
		if x.Peer != y.Peer {
			return x.Peer.Less(y.Peer)
		}
		if x.PeerEpoch != y.PeerEpoch {
			return x.PeerEpoch < y.PeerEpoch
		}
		return x.Epoch < y.Epoch
	})
	for peer, o := range m.out {
		// A previous run's SA is announced too, with its epochs unknown
		// (zero): the peer must keep the key it receives on, and any
		// epoch that key might belong to, until this host has re-keyed.
		if o.spi != 0 {
			a.Using = append(a.Using, announce.Using{Peer: peer, Epoch: o.epoch, PeerEpoch: o.peerEpoch, SPI: o.spi})
		}
	}
	sort.Slice(a.Using, func(i, j int) bool { return a.Using[i].Peer.Less(a.Using[j].Peer) })
	return a
}

// Sync makes the kernel match this host's epochs and the peers'
// announcements, and returns this host's new announcement. Peers absent
// from peers are removed only when settled (after a restart the cluster
// has not told yet who is there). Errors are per peer: the others are
// still programmed, and a peer that failed stays fail-closed (its
// outbound policy has no usable SA, its inbound needs ESP).
func (m *Manager) Sync(peers []PeerInfo, settled bool) (announce.IPsec, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.active {
		return announce.IPsec{}, nil
	}
	now := m.cfg.Now()
	m.dropRetiring(now) // first: a switch may wait for a slot (syncOutbound)
	var errs []error
	present := map[netip.Addr]bool{}
	for _, p := range peers {
		if p.Host == m.cfg.Local || len(p.Keys) == 0 {
			continue
		}
		present[p.Host] = true
		if err := m.syncPeer(p, now); err != nil {
			errs = append(errs, fmt.Errorf("peer %s: %w", p.Host, err))
		}
	}
	m.retireEpochs(peers, now)
	if settled {
		for _, peer := range m.knownPeers() {
			if !present[peer] {
				if err := m.dropPeer(peer); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	m.dropLegacy(peers, settled, now)
	m.dropRetiring(now)
	return m.announcementLocked(), errors.Join(errs...)
}

// Due is when a Sync next owes a removal that waits for its grace (an
// outbound SA switched away from, an inbound SA or an epoch the peers
// moved past); zero if none waits. Until a Sync runs, what waits stays.
func (m *Manager) Due() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.active || m.cfg.Grace <= 0 {
		return time.Time{}
	}
	var due time.Time
	at := func(since time.Time) {
		if !since.IsZero() && (due.IsZero() || since.Add(m.cfg.Grace).Before(due)) {
			due = since.Add(m.cfg.Grace)
		}
	}
	for _, r := range m.retiring {
		at(r.since)
	}
	for _, sa := range m.in {
		at(sa.replaced)
	}
	for _, e := range m.epochs {
		at(e.unneeded)
	}
	return due
}

// syncPeer runs the negotiation with one peer, its three steps in the
// order the comment at the top of this file gives them: the inbound SAs
// (syncInbound), the outbound SA (syncOutbound), and the inbound SAs no
// longer wanted (drainInbound). A step that fails ends this peer's sync
// with its error; the next Sync starts again from the first step.
func (m *Manager) syncPeer(p PeerInfo, now time.Time) error {
	m.peerEncap[p.Host] = encapOf(p)
	keys := map[uint64][]byte{}
	for _, k := range p.Keys {
		keys[k.Epoch] = k.Public
	}
	if err := m.syncInbound(p); err != nil {
		return err
	}
	if err := m.syncOutbound(p, keys, now); err != nil {
		return err
	}
	return m.drainInbound(p, keys, now)
}

func (m *Manager) knownPeers() []netip.Addr {
	seen := map[netip.Addr]bool{}
	for p := range m.policies {
		seen[p] = true
	}
	for p := range m.out {
		seen[p] = true
	}
	for k := range m.in {
		seen[k.peer] = true
	}
	out := make([]netip.Addr, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out
}

// Status is the negotiation as `vxsec status` shows it.
type Status struct {
	Active bool `json:"Active"`
	// Rotations counts the epochs this host started after its first, since
	// the daemon started (rotations, and re-keys to change an
	// encapsulation); LastRotation is when the newest began.
	Rotations    uint64       `json:"Rotations"`
	LastRotation time.Time    `json:"LastRotation,omitzero"`
	Epochs       []uint64     `json:"Epochs,omitempty"`
	Peers        []PeerStatus `json:"Peers,omitempty"`
	Legacy       int          `json:"LegacySAs,omitempty"`
	// Refused counts the pairs of epochs and SPIs that peers re-announced
	// after this host had sent on them, refused rather than keyed again
	// (each pair once), since the daemon started.
	Refused uint64 `json:"RefusedReannouncements"`
}

// PeerStatus is one peer's keys as this host uses them.
type PeerStatus struct {
	Host      netip.Addr `json:"Host"`
	Epoch     uint64     `json:"Epoch,omitempty"`
	PeerEpoch uint64     `json:"PeerEpoch,omitempty"`
	SPI       uint32     `json:"OutSPI,omitempty"`
	// Identity is the peer identity the outbound SA's key is bound to,
	// with this host's; empty for the address-bound schedule.
	Identity string `json:"Identity,omitempty"`
	Inbound  int    `json:"InboundSAs"`
	// Since is when the outbound SA took over; Rekeys counts the outbound
	// SAs installed for the peer since the daemon started.
	Since  time.Time `json:"Since,omitzero"`
	Rekeys uint64    `json:"Rekeys"`
	// Encap is how the outbound SA travels, "esp" (IP protocol 50) or
	// "udp" (ESP in UDP), and EncapWhy what chose it (the peer, which
	// makes the SA that receives it).
	Encap    string `json:"Encap,omitempty"`
	EncapWhy string `json:"EncapWhy,omitempty"`
	// InEncap is how this host receives from the peer on its newest epoch,
	// and InEncapWhy why (this host's choice).
	InEncap    string `json:"InEncap,omitempty"`
	InEncapWhy string `json:"InEncapWhy,omitempty"`
}

// NATKeepalives is where a host behind NAT sends its keepalives (Xfrm.Keepalives):
// the ESP-in-UDP port of every peer it has an SA in UDP with. Nothing for
// a host not behind NAT: its peers reach it without.
func (m *Manager) NATKeepalives() []netip.AddrPort {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.active || !m.cfg.BehindNAT {
		return nil
	}
	to := map[netip.Addr]bool{}
	for peer, o := range m.out {
		if o.udp {
			to[peer] = true
		}
	}
	for k, sa := range m.in {
		if sa.udp {
			to[k.peer] = true
		}
	}
	var out []netip.AddrPort
	for peer := range to {
		if pe := m.peerEncap[peer]; pe.port != 0 {
			out = append(out, netip.AddrPortFrom(peer, pe.port))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr().Less(out[j].Addr()) })
	return out
}

// Status reports the epochs and, per peer, the SAs in use.
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Status{Active: m.active, Legacy: len(m.legacy), Refused: m.refused, Rotations: m.rotations, LastRotation: m.lastRotation}
	for _, e := range m.epochs {
		s.Epochs = append(s.Epochs, e.kp.Epoch)
	}
	for _, peer := range m.knownPeers() {
		ps := PeerStatus{Host: peer}
		if o := m.out[peer]; o != nil {
			ps.Epoch, ps.PeerEpoch, ps.SPI, ps.Identity, ps.Since = o.epoch, o.peerEpoch, o.spi, o.bound, o.since
			ps.Rekeys = m.rekeys[peer]
			if o.spi != 0 && !o.legacy {
				ps.Encap, ps.EncapWhy = "esp", o.why
				if o.udp {
					ps.Encap = "udp"
				}
			}
		}
		for k := range m.in {
			if k.peer == peer {
				ps.Inbound++
			}
		}
		if pe, ok := m.peerEncap[peer]; ok && len(m.epochs) > 0 {
			udp, why := m.receiveUDPWhy(peer, pe)
			ps.InEncap, ps.InEncapWhy = "esp", why
			if udp {
				ps.InEncap = "udp"
			}
		}
		s.Peers = append(s.Peers, ps)
	}
	return s
}
