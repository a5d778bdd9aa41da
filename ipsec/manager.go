package ipsec

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"
)

// The negotiation, as each host runs it against what the others publish
// (see Announcement):
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
//
// DrainMax bounds both waits for a peer that never confirms (one that died,
// or a bug): afterwards the old key goes anyway, so a silent peer cannot
// keep an old key alive for ever.

// PublicKey is one live epoch's public key of a host.
type PublicKey struct {
	Epoch  uint64
	Public []byte
}

// InboundSPI says: "I receive from Peer's epoch PeerEpoch, under my epoch
// Epoch, on SPI" — installed before it is published.
type InboundSPI struct {
	Peer      netip.Addr
	PeerEpoch uint64
	Epoch     uint64
	SPI       uint32
}

// Using says: "I send to Peer with my epoch Epoch and its PeerEpoch, on
// the SPI it chose".
type Using struct {
	Peer      netip.Addr
	Epoch     uint64
	PeerEpoch uint64
	SPI       uint32
}

// Announcement is what a host publishes for the negotiation.
type Announcement struct {
	Keys  []PublicKey
	SPIs  []InboundSPI
	Using []Using
}

// PeerInfo is another host's latest announcement.
type PeerInfo struct {
	Host netip.Addr
	Announcement
}

// Kernel is the xfrm programming the Manager needs; *Xfrm is the real one.
type Kernel interface {
	EnsureGuard() error
	SetPeer(peer netip.Addr, outReqid uint32) error
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
	// InPeers are the peers with an inbound policy.
	InPeers map[netip.Addr]bool
}

// Reqid slots: inbound SAs share one (the inbound template matches any);
// outbound SAs to a peer alternate between two, and moving the peer's
// outbound policy from one to the other is the atomic switch of keys.
const (
	slotIn   = 0
	slotOutA = 1
	slotOutB = 2
)

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
}

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
}

type epoch struct {
	kp         *KeyPair
	superseded time.Time // zero while newest
}

type inKey struct {
	peer             netip.Addr
	peerEpoch, epoch uint64
}

type inSA struct {
	spi uint32
	// peerPublic is the peer's key it was derived from: a peer restarted
	// with its clock set back may reuse an epoch number, never a key.
	peerPublic []byte
	unwanted   time.Time // when it stopped being wanted; zero while wanted
}

type burnKey struct {
	peer netip.Addr
	spi  uint32
}

// burnLocked retires an outbound SPI for good and starts a new epoch, so
// that the peer acknowledges fresh SPIs to send on.
func (m *Manager) burnLocked(peer netip.Addr, spi uint32) {
	if m.burned[burnKey{peer, spi}] {
		return
	}
	m.burned[burnKey{peer, spi}] = true
	if err := m.newEpochLocked(); err != nil {
		m.log.Error("starting a new epoch after an SA was lost", "err", err)
	}
}

type outSA struct {
	epoch, peerEpoch uint64
	peerPublic       []byte
	spi, reqid       uint32
	legacy           bool
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
	m.burned = map[burnKey]bool{}
	m.legacySince = m.cfg.Now()
	for _, sa := range ks.SAs {
		m.legacy[sa] = true
	}
	// A previous run's outbound SAs keep carrying traffic until the peer
	// has acknowledged this run's keys: the policies stay as they are.
	for peer, reqid := range ks.OutReqid {
		m.policies[peer] = true
		for _, sa := range ks.SAs {
			if sa.Src == m.cfg.Local && sa.Dst == peer && sa.Reqid == reqid {
				m.out[peer] = &outSA{spi: sa.SPI, reqid: reqid, legacy: true}
				delete(m.legacy, sa)
			}
		}
		if m.out[peer] == nil {
			m.out[peer] = &outSA{reqid: reqid, legacy: true}
		}
	}
	if err := m.newEpochLocked(); err != nil {
		return err
	}
	m.active = true
	m.log.Info("IPsec active", "epoch", m.newest().kp.Epoch, "adopted_sas", len(ks.SAs), "adopted_peers", len(ks.OutReqid))
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
	m.epochs, m.in, m.out, m.policies, m.legacy = nil, nil, nil, nil, nil
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
	if len(m.epochs) > 0 {
		m.newest().superseded = m.cfg.Now()
	}
	m.epochs = append(m.epochs, &epoch{kp: kp})
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

// Repair compares the kernel with what the Manager installed and forgets
// what is missing there, so that the next Sync puts it back: an SA or a
// policy deleted behind vxsec's back is restored (an inbound SA under a new
// SPI, which the peer then switches to), never silently absent.
func (m *Manager) Repair() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.active {
		return nil
	}
	if err := m.cfg.Kernel.EnsureGuard(); err != nil {
		return err
	}
	ks, err := m.cfg.Kernel.State()
	if err != nil {
		return err
	}
	type id struct {
		src, dst netip.Addr
		spi      uint32
	}
	have := map[id]bool{}
	for _, sa := range ks.SAs {
		have[id{sa.Src, sa.Dst, sa.SPI}] = true
	}
	for k, sa := range m.in {
		if !have[id{k.peer, m.cfg.Local, sa.spi}] {
			m.log.Warn("inbound SA missing from the kernel: replacing it", "peer", k.peer, "spi", fmt.Sprintf("%#x", sa.spi))
			delete(m.in, k)
		}
	}
	for peer, o := range m.out {
		if o.spi != 0 && !have[id{m.cfg.Local, peer, o.spi}] {
			m.log.Warn("outbound SA missing from the kernel: re-keying (its SPI is never used again)", "peer", peer, "spi", fmt.Sprintf("%#x", o.spi))
			delete(m.out, peer)
			m.burnLocked(peer, o.spi)
		}
	}
	for peer := range m.policies {
		if r, ok := ks.OutReqid[peer]; !ok || !ks.InPeers[peer] || (m.out[peer] != nil && r != m.out[peer].reqid) {
			m.log.Warn("policies missing or changed in the kernel: reinstalling them", "peer", peer)
			delete(m.policies, peer)
		}
	}
	for sa := range m.legacy {
		if !have[id{sa.Src, sa.Dst, sa.SPI}] {
			delete(m.legacy, sa)
		}
	}
	return nil
}

// Announcement is what this host publishes now; empty while inactive.
func (m *Manager) Announcement() Announcement {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.announcementLocked()
}

func (m *Manager) announcementLocked() Announcement {
	var a Announcement
	if !m.active {
		return a
	}
	for _, e := range m.epochs {
		a.Keys = append(a.Keys, PublicKey{Epoch: e.kp.Epoch, Public: e.kp.Public()})
	}
	for k, sa := range m.in {
		a.SPIs = append(a.SPIs, InboundSPI{Peer: k.peer, PeerEpoch: k.peerEpoch, Epoch: k.epoch, SPI: sa.spi})
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
			a.Using = append(a.Using, Using{Peer: peer, Epoch: o.epoch, PeerEpoch: o.peerEpoch, SPI: o.spi})
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
func (m *Manager) Sync(peers []PeerInfo, settled bool) (Announcement, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.active {
		return Announcement{}, nil
	}
	now := m.cfg.Now()
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
	return m.announcementLocked(), errors.Join(errs...)
}

func (m *Manager) syncPeer(p PeerInfo, now time.Time) error {
	keys := map[uint64][]byte{}
	for _, k := range p.Keys {
		keys[k.Epoch] = k.Public
	}
	// Inbound: one SA per peer epoch × own epoch, installed before its SPI
	// is published.
	for _, pk := range p.Keys {
		for _, e := range m.epochs {
			k := inKey{peer: p.Host, peerEpoch: pk.Epoch, epoch: e.kp.Epoch}
			if sa := m.in[k]; sa != nil {
				if bytes.Equal(sa.peerPublic, pk.Public) {
					sa.unwanted = time.Time{}
					continue
				}
				// Same epoch number, another key: the peer restarted with
				// its clock set back. Its old SAs are legacy to it now.
				if err := m.cfg.Kernel.DelSA(p.Host, m.cfg.Local, sa.spi); err != nil {
					return err
				}
				delete(m.in, k)
			}
			spi, err := AllocSPI(m.inboundSPIInUse)
			if err != nil {
				return err
			}
			key, err := SAKey(e.kp, m.cfg.Local, Peer{Host: p.Host, Epoch: pk.Epoch, Public: pk.Public}, false, spi)
			if err != nil {
				return err
			}
			if err := m.cfg.Kernel.AddSA(SA{Src: p.Host, Dst: m.cfg.Local, SPI: spi, Reqid: Reqid(slotIn), Key: key}); err != nil {
				return err
			}
			m.in[k] = &inSA{spi: spi, peerPublic: pk.Public}
		}
	}

	// Outbound: the newest pair of epochs the peer has acknowledged.
	var best *InboundSPI
	for i := range p.SPIs {
		s := &p.SPIs[i]
		if s.Peer != m.cfg.Local || m.epochByNumber(s.PeerEpoch) == nil || keys[s.Epoch] == nil || m.burned[burnKey{p.Host, s.SPI}] {
			continue
		}
		if best == nil || s.PeerEpoch > best.PeerEpoch || (s.PeerEpoch == best.PeerEpoch && s.Epoch > best.Epoch) {
			best = s
		}
	}
	cur := m.out[p.Host]
	switch {
	case best != nil && (cur == nil || cur.legacy || cur.epoch != best.PeerEpoch || cur.peerEpoch != best.Epoch ||
		cur.spi != best.SPI || !bytes.Equal(cur.peerPublic, keys[best.Epoch])):
		e := m.epochByNumber(best.PeerEpoch)
		key, err := SAKey(e.kp, m.cfg.Local, Peer{Host: p.Host, Epoch: best.Epoch, Public: keys[best.Epoch]}, true, best.SPI)
		if err != nil {
			return err
		}
		reqid := Reqid(slotOutA)
		if cur != nil && cur.reqid == reqid {
			reqid = Reqid(slotOutB)
		}
		// An SPI is used for one SA only, ever: a second SA under it would
		// start its sequence numbers, and so GCM's nonces, again under the
		// same key. A step that fails half-way burns the SPI, and a new
		// epoch makes the peer choose fresh ones.
		if err := m.cfg.Kernel.AddSA(SA{Src: m.cfg.Local, Dst: p.Host, SPI: best.SPI, Reqid: reqid, Key: key}); err != nil {
			m.burnLocked(p.Host, best.SPI)
			return err
		}
		if err := m.cfg.Kernel.SetPeer(p.Host, reqid); err != nil {
			m.cfg.Kernel.DelSA(m.cfg.Local, p.Host, best.SPI)
			m.burnLocked(p.Host, best.SPI)
			return err
		}
		m.policies[p.Host] = true
		if cur != nil && cur.spi != 0 && cur.spi != best.SPI {
			if err := m.cfg.Kernel.DelSA(m.cfg.Local, p.Host, cur.spi); err != nil {
				m.log.Warn("removing superseded outbound SA", "peer", p.Host, "err", err)
			}
		}
		m.out[p.Host] = &outSA{epoch: best.PeerEpoch, peerEpoch: best.Epoch, peerPublic: keys[best.Epoch], spi: best.SPI, reqid: reqid}
		m.log.Debug("outbound SA switched", "peer", p.Host, "epoch", best.PeerEpoch, "peer_epoch", best.Epoch, "spi", fmt.Sprintf("%#x", best.SPI))
	case !m.policies[p.Host]:
		// Nothing acknowledged yet (or the policies were lost): the policy
		// goes in anyway, selecting the SA in use or one that does not
		// exist yet, so that nothing leaves in cleartext.
		reqid := Reqid(slotOutA)
		if cur != nil {
			reqid = cur.reqid
		}
		if err := m.cfg.Kernel.SetPeer(p.Host, reqid); err != nil {
			return err
		}
		m.policies[p.Host] = true
	}

	// Inbound SAs no longer wanted go once the peer sends on another.
	using := peerUsing(p, m.cfg.Local)
	for k, sa := range m.in {
		if k.peer != p.Host {
			continue
		}
		wanted := bytes.Equal(keys[k.peerEpoch], sa.peerPublic) && m.epochByNumber(k.epoch) != nil
		if wanted {
			continue
		}
		if sa.unwanted.IsZero() {
			sa.unwanted = now
		}
		inUse := using != nil && using.SPI == sa.spi
		if (using != nil && !inUse) || now.Sub(sa.unwanted) > m.cfg.DrainMax {
			if err := m.cfg.Kernel.DelSA(p.Host, m.cfg.Local, sa.spi); err != nil {
				return err
			}
			delete(m.in, k)
		}
	}
	return nil
}

// peerUsing is what p says it sends to local with, if it says.
func peerUsing(p PeerInfo, local netip.Addr) *Using {
	for i := range p.Using {
		if p.Using[i].Peer == local {
			return &p.Using[i]
		}
	}
	return nil
}

// retireEpochs erases own epochs that nobody sends to any more.
func (m *Manager) retireEpochs(peers []PeerInfo, now time.Time) {
	newest := m.newest()
	for _, e := range slices.Clone(m.epochs[:len(m.epochs)-1]) {
		if now.Sub(e.superseded) <= m.cfg.DrainMax && m.epochNeeded(e, newest, peers) {
			continue
		}
		for k, sa := range m.in {
			if k.epoch == e.kp.Epoch {
				if err := m.cfg.Kernel.DelSA(k.peer, m.cfg.Local, sa.spi); err != nil {
					m.log.Warn("removing a retired epoch's SA", "peer", k.peer, "err", err)
					continue
				}
				delete(m.in, k)
			}
		}
		e.kp.Erase()
		m.epochs = slices.DeleteFunc(m.epochs, func(x *epoch) bool { return x == e })
		m.log.Info("epoch retired, its private key erased", "epoch", e.kp.Epoch)
	}
}

// epochNeeded: an own epoch stays while this host sends with it, or a peer
// does or might: one that says it uses this epoch or an older one, or says
// nothing and has not acknowledged the newest epoch (it may not have seen
// it yet).
func (m *Manager) epochNeeded(e, newest *epoch, peers []PeerInfo) bool {
	for _, o := range m.out {
		if !o.legacy && o.epoch == e.kp.Epoch {
			return true
		}
	}
	for _, p := range peers {
		if p.Host == m.cfg.Local || len(p.Keys) == 0 {
			continue
		}
		if u := peerUsing(p, m.cfg.Local); u != nil {
			// A peer only moves forward, but it may move to any epoch it
			// has seen acknowledged, and what it says it uses lags what it
			// does: only an epoch it has moved past is safe to erase.
			if u.PeerEpoch <= e.kp.Epoch {
				return true
			}
			continue
		}
		acked := false
		for _, s := range p.SPIs {
			if s.Peer == m.cfg.Local && s.PeerEpoch == newest.kp.Epoch {
				acked = true
				break
			}
		}
		if !acked {
			return true
		}
	}
	return false
}

// dropLegacy removes a previous run's SAs once their peer sends on this
// run's keys (or is gone, or DrainMax passed).
func (m *Manager) dropLegacy(peers []PeerInfo, settled bool, now time.Time) {
	rekeyed := map[netip.Addr]bool{}
	present := map[netip.Addr]bool{}
	for _, p := range peers {
		present[p.Host] = true
		if u := peerUsing(p, m.cfg.Local); u != nil {
			for k, sa := range m.in {
				if k.peer == p.Host && sa.spi == u.SPI {
					rekeyed[p.Host] = true
				}
			}
		}
	}
	expired := now.Sub(m.legacySince) > m.cfg.DrainMax
	for sa := range m.legacy {
		peer := sa.Src
		if peer == m.cfg.Local {
			peer = sa.Dst
		}
		// Outbound legacy SAs go when replaced (syncPeer); inbound ones
		// when the peer has moved to this run's keys.
		if !(rekeyed[peer] || expired || (settled && !present[peer])) {
			continue
		}
		if o := m.out[peer]; o != nil && o.spi == sa.SPI && sa.Src == m.cfg.Local {
			continue
		}
		if err := m.cfg.Kernel.DelSA(sa.Src, sa.Dst, sa.SPI); err != nil {
			m.log.Warn("removing a previous run's SA", "src", sa.Src, "dst", sa.Dst, "err", err)
			continue
		}
		delete(m.legacy, sa)
	}
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

// dropPeer removes a peer's policies and SAs: a host gone from the cluster
// leaves nothing behind. Its traffic meets the guard policies meanwhile.
func (m *Manager) dropPeer(peer netip.Addr) error {
	var errs []error
	if err := m.cfg.Kernel.DelPeer(peer); err != nil {
		errs = append(errs, err)
	}
	delete(m.policies, peer)
	if o := m.out[peer]; o != nil && o.spi != 0 {
		if err := m.cfg.Kernel.DelSA(m.cfg.Local, peer, o.spi); err != nil {
			errs = append(errs, err)
		}
	}
	delete(m.out, peer)
	for k, sa := range m.in {
		if k.peer == peer {
			if err := m.cfg.Kernel.DelSA(peer, m.cfg.Local, sa.spi); err != nil {
				errs = append(errs, err)
				continue
			}
			delete(m.in, k)
		}
	}
	m.log.Info("peer's SAs and policies removed", "peer", peer)
	return errors.Join(errs...)
}

func (m *Manager) inboundSPIInUse(spi uint32) bool {
	for _, sa := range m.in {
		if sa.spi == spi {
			return true
		}
	}
	for sa := range m.legacy {
		if sa.Dst == m.cfg.Local && sa.SPI == spi {
			return true
		}
	}
	return false
}

// Status is the negotiation as `vxsec status` shows it.
type Status struct {
	Active bool         `json:"Active"`
	Epochs []uint64     `json:"Epochs,omitempty"`
	Peers  []PeerStatus `json:"Peers,omitempty"`
	Legacy int          `json:"LegacySAs,omitempty"`
}

// PeerStatus is one peer's keys as this host uses them.
type PeerStatus struct {
	Host      netip.Addr `json:"Host"`
	Epoch     uint64     `json:"Epoch,omitempty"`
	PeerEpoch uint64     `json:"PeerEpoch,omitempty"`
	SPI       uint32     `json:"OutSPI,omitempty"`
	Inbound   int        `json:"InboundSAs"`
}

// Status reports the epochs and, per peer, the SAs in use.
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Status{Active: m.active, Legacy: len(m.legacy)}
	for _, e := range m.epochs {
		s.Epochs = append(s.Epochs, e.kp.Epoch)
	}
	for _, peer := range m.knownPeers() {
		ps := PeerStatus{Host: peer}
		if o := m.out[peer]; o != nil {
			ps.Epoch, ps.PeerEpoch, ps.SPI = o.epoch, o.peerEpoch, o.spi
		}
		for k := range m.in {
			if k.peer == peer {
				ps.Inbound++
			}
		}
		s.Peers = append(s.Peers, ps)
	}
	return s
}
