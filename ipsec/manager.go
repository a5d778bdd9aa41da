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
	// refused counts the re-announced pairs refused (see refuseLocked) in
	// this Manager's life; refuseLog rate-limits their log lines.
	refused   uint64
	refuseLog struct {
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
		if r, ok := ks.OutReqid[peer]; !ok || ks.InReqid[peer] != inReqid || (m.out[peer] != nil && r != m.out[peer].reqid) {
			m.log.Warn("policies missing or changed in the kernel: reinstalling them", "peer", peer,
				"inbound_reqid", fmt.Sprintf("%#x", ks.InReqid[peer]))
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
		a.Keys = append(a.Keys, announce.Key{Epoch: e.kp.Epoch, Public: e.kp.Public()})
	}
	for k, sa := range m.in {
		a.SPIs = append(a.SPIs, announce.SPI{Peer: k.peer, PeerEpoch: k.peerEpoch, Epoch: k.epoch, SPI: sa.spi})
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
			// Never an SPI this epoch received on before: the key, bound
			// to the SPI, is new even if the peer re-announces an epoch
			// whose SA went, so nothing recorded under the old SA replays
			// into the new one.
			spi, err := AllocSPI(func(spi uint32) bool { return m.inboundSPIInUse(spi) || e.inSPIs[spi] })
			if err != nil {
				return err
			}
			key, err := SAKey(e.kp, m.cfg.Local, Peer{Host: p.Host, Epoch: pk.Epoch, Public: pk.Public}, false, spi)
			if err != nil {
				return err
			}
			e.inSPIs[spi] = true
			if err := m.cfg.Kernel.AddSA(SA{Src: p.Host, Dst: m.cfg.Local, SPI: spi, Reqid: inReqid, Key: key}); err != nil {
				return err
			}
			m.in[k] = &inSA{spi: spi, peerPublic: pk.Public}
		}
	}

	// Outbound: the newest pair of epochs the peer has acknowledged, and
	// never an older one than a pair this host has sent on, as long as
	// that pair is live (its own epoch held, the peer's key still
	// announced): a host only moves forward, and the peer relies on it
	// (epochNeeded erases an epoch once this host says it uses a newer
	// one), so an announcement that withdraws the pair in use (a bug, a
	// forgery), or an SA lost here, cannot move this host back onto a key
	// the peer may be dropping. Among equals the pair in use stays.
	cur := m.out[p.Host]
	current := func(s *announce.SPI) bool {
		return cur != nil && !cur.legacy && cur.epoch == s.PeerEpoch && cur.peerEpoch == s.Epoch &&
			cur.spi == s.SPI && bytes.Equal(cur.peerPublic, keys[s.Epoch])
	}
	floorEpoch, floorPeerEpoch := m.sentFloor(p.Host, keys)
	var best *announce.SPI
	for i := range p.SPIs {
		s := &p.SPIs[i]
		if s.Peer != m.cfg.Local || m.epochByNumber(s.PeerEpoch) == nil || keys[s.Epoch] == nil || m.burned[burnKey{p.Host, s.SPI}] {
			continue
		}
		if s.PeerEpoch < floorEpoch || (s.PeerEpoch == floorEpoch && s.Epoch < floorPeerEpoch) {
			continue
		}
		if best == nil || s.PeerEpoch > best.PeerEpoch || (s.PeerEpoch == best.PeerEpoch && s.Epoch > best.Epoch) ||
			(s.PeerEpoch == best.PeerEpoch && s.Epoch == best.Epoch && current(s)) {
			best = s
		}
	}
	// Never the same key twice: a pair of epochs and an SPI this epoch has
	// sent on already (the peer re-announced it, by a bug, a forgery or
	// malice, or it is back from a partition with what it had then) would
	// start ESP's sequence numbers, and so GCM's nonces, again under that
	// key. Refused: nothing is installed and the current SA stays.
	if best != nil && !current(best) {
		if e := m.epochByNumber(best.PeerEpoch); e.sent[sentKey{p.Host, best.Epoch, best.SPI}] != nil {
			m.refuseLocked(e, p.Host, best, now)
			best = nil
		}
	}
	switch {
	case best != nil && !current(best):
		e := m.epochByNumber(best.PeerEpoch)
		key, err := SAKey(e.kp, m.cfg.Local, Peer{Host: p.Host, Epoch: best.Epoch, Public: keys[best.Epoch]}, true, best.SPI)
		if err != nil {
			return err
		}
		e.sent[sentKey{p.Host, best.Epoch, best.SPI}] = keys[best.Epoch] // before the kernel has it: an attempt counts
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
		if err := m.cfg.Kernel.SetPeer(p.Host, reqid, inReqid); err != nil {
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
		if err := m.cfg.Kernel.SetPeer(p.Host, reqid, inReqid); err != nil {
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

// sentFloor is the newest pair of epochs (own, peer's) this host has sent
// to peer on, among its live epochs, whose peer key keys still has; zeros
// if none.
func (m *Manager) sentFloor(peer netip.Addr, keys map[uint64][]byte) (epoch, peerEpoch uint64) {
	for _, e := range m.epochs {
		for id, pub := range e.sent {
			if id.peer != peer || !bytes.Equal(keys[id.peerEpoch], pub) {
				continue
			}
			if e.kp.Epoch > epoch || (e.kp.Epoch == epoch && id.peerEpoch > peerEpoch) {
				epoch, peerEpoch = e.kp.Epoch, id.peerEpoch
			}
		}
	}
	return epoch, peerEpoch
}

// refuseLocked refuses a pair of epochs and an SPI that e has sent on before
// (see syncPeer): counted and logged once each, the log rate-limited. If e
// is the newest epoch, a new one starts, so that the peer acknowledges an
// SPI under it and this host gets a fresh key to move to (the pair the peer
// offers may be the only one it can still receive on, as after a flap);
// otherwise the newest epoch, not yet acknowledged, is that fresh key. So a
// peer makes at most one epoch start per newest epoch, and none while the
// host holds refuseEpochsMax epochs (peers bound the keys a host may
// publish; this leaves room below that bound): the next sync after some
// drained tries again.
func (m *Manager) refuseLocked(e *epoch, peer netip.Addr, s *announce.SPI, now time.Time) {
	id := sentKey{peer, s.Epoch, s.SPI}
	if !e.refused[id] {
		e.refused[id] = true
		m.refused++
		if now.Sub(m.refuseLog.last) >= refuseLogEvery {
			m.log.Warn("refused a re-announced pair of epochs and SPI: this host sent on that key before, and a new SA under it would repeat ESP sequence numbers and GCM nonces",
				"peer", peer, "epoch", s.PeerEpoch, "peer_epoch", s.Epoch, "spi", fmt.Sprintf("%#x", s.SPI),
				"refused_total", m.refused, "not_logged_since_last", m.refuseLog.suppressed)
			m.refuseLog.last, m.refuseLog.suppressed = now, 0
		} else {
			m.refuseLog.suppressed++
		}
	}
	if e == m.newest() && len(m.epochs) < refuseEpochsMax {
		if err := m.newEpochLocked(); err != nil {
			m.log.Error("starting a new epoch after a refused re-announcement", "err", err)
		}
	}
}

// refuseEpochsMax: see refuseLocked.
const refuseEpochsMax = 8

// refuseLogEvery is the least time between two log lines of refusals.
const refuseLogEvery = time.Minute

// peerUsing is what p says it sends to local with, if it says.
func peerUsing(p PeerInfo, local netip.Addr) *announce.Using {
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
	Inbound   int        `json:"InboundSAs"`
}

// Status reports the epochs and, per peer, the SAs in use.
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Status{Active: m.active, Legacy: len(m.legacy), Refused: m.refused}
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
