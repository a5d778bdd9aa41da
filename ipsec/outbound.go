package ipsec

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/vxsec/vxsec/announce"
)

// syncOutbound sends to the peer with the newest pair of epochs the peer
// has acknowledged, so that this host never sends on a key the peer cannot
// decrypt (make before break), and never with an older one than a pair
// this host has sent on, as long as that pair is live (its own epoch held,
// the peer's key still announced): a host only moves forward, and the peer
// relies on it (epochNeeded erases an epoch once this host says it uses a
// newer one), so an announcement that withdraws the pair in use (a bug, a
// forgery), or an SA lost here, cannot move this host back onto a key the
// peer may be dropping. Among equals the pair in use stays.
func (m *Manager) syncOutbound(p PeerInfo, keys map[uint64][]byte, now time.Time) error {
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
		if s.UDP && p.UDP == 0 {
			continue // ESP in UDP to no port: a malformed table
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
	// The kernel picks among the SAs of the policy's reqid by their age in
	// whole seconds: while the SA superseded last time still holds the
	// slot the next one would take (its grace), the pair in use stays,
	// which the peer keeps receiving on as long as this host says it
	// sends on it. The Sync that removes it (Due) makes the switch.
	if best != nil && !current(best) && m.slotHeld(p.Host, nextSlot(cur), now) {
		m.log.Debug("outbound switch waits for the superseded SA's grace", "peer", p.Host)
		best = nil
	}
	switch {
	case best != nil && !current(best):
		e := m.epochByNumber(best.PeerEpoch)
		key, err := SAKey(e.kp, m.cfg.Local, Peer{Host: p.Host, Epoch: best.Epoch, Public: keys[best.Epoch], ID: p.keyID(best.Epoch)}, true, best.SPI)
		if err != nil {
			return err
		}
		e.sent[sentKey{p.Host, best.Epoch, best.SPI}] = keys[best.Epoch] // before the kernel has it: an attempt counts
		reqid := nextSlot(cur)
		// An SPI is used for one SA only, ever: a second SA under it would
		// start its sequence numbers, and so GCM's nonces, again under the
		// same key. A step that fails half-way burns the SPI, and a new
		// epoch makes the peer choose fresh ones.
		sa := SA{Src: m.cfg.Local, Dst: p.Host, SPI: best.SPI, Reqid: reqid, Key: key}
		if best.UDP {
			src := m.cfg.UDPPort
			if src == 0 {
				src = p.UDP
			}
			sa.UDP = &UDPEncap{SrcPort: src, DstPort: p.UDP}
		}
		if err := m.cfg.Kernel.AddSA(sa); err != nil {
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
			m.retireOutLocked(p.Host, cur.spi, cur.reqid, now)
		}
		m.out[p.Host] = &outSA{epoch: best.PeerEpoch, peerEpoch: best.Epoch, peerPublic: keys[best.Epoch], spi: best.SPI, reqid: reqid,
			bound: boundTo(e.kp, p.keyID(best.Epoch)), udp: best.UDP, why: m.encapWhy(p, best.UDP), since: now}
		m.rekeys[p.Host]++
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
	return nil
}

// encapWhy says what chose the encapsulation the peer's SPI asks for:
// the peer makes the SA that receives it, and chooses.
func (m *Manager) encapWhy(p PeerInfo, udp bool) string {
	switch {
	case udp && m.cfg.UDPAlways:
		return "ESP in UDP: this host asks for it (VXSEC_ESP_ENCAP=udp)"
	case udp && m.cfg.UDPAuto && m.cfg.BehindNAT:
		return "ESP in UDP: this host is behind NAT (its advertise address is not its own)"
	case udp && p.NAT:
		return "ESP in UDP: the peer is behind NAT (its advertise address is not its own)"
	case udp && p.Encap == announce.EncapUDP:
		return "ESP in UDP: the peer asks for it (VXSEC_ESP_ENCAP=udp there)"
	case udp:
		return "ESP in UDP: the peer receives it so (auto there: this host's native ESP does not reach it, or was not probed yet)"
	case m.cfg.UDPAlways && p.UDP == 0:
		return "native ESP although this host asks for ESP in UDP: the peer's release has no ESP in UDP"
	case m.cfg.UDPAlways:
		return "native ESP although this host asks for ESP in UDP: the peer has not made SAs for it yet"
	}
	return "native ESP: the peer receives it so"
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
// (see syncOutbound): counted and logged once each, the log rate-limited. If e
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

// retireOutLocked removes an outbound SA the policy no longer selects, a
// grace after the switch (ManagerConfig.Grace).
func (m *Manager) retireOutLocked(peer netip.Addr, spi, reqid uint32, now time.Time) {
	m.retiring = append(m.retiring, retiringOut{peer: peer, spi: spi, reqid: reqid, since: now})
	m.dropRetiring(now)
}

// nextSlot is the reqid the next outbound SA after cur takes.
func nextSlot(cur *outSA) uint32 {
	if cur != nil && cur.reqid == Reqid(slotOutA) {
		return Reqid(slotOutB)
	}
	return Reqid(slotOutA)
}

// slotHeld reports whether a superseded outbound SA to peer of reqid is
// still in its grace.
func (m *Manager) slotHeld(peer netip.Addr, reqid uint32, now time.Time) bool {
	for _, r := range m.retiring {
		if r.peer == peer && r.reqid == reqid && now.Sub(r.since) < m.cfg.Grace {
			return true
		}
	}
	return false
}

// dropRetiring removes the superseded outbound SAs whose grace has passed.
func (m *Manager) dropRetiring(now time.Time) {
	m.retiring = slices.DeleteFunc(m.retiring, func(r retiringOut) bool {
		if now.Sub(r.since) < m.cfg.Grace {
			return false
		}
		if err := m.cfg.Kernel.DelSA(m.cfg.Local, r.peer, r.spi); err != nil {
			m.log.Warn("removing superseded outbound SA", "peer", r.peer, "err", err)
		}
		return true
	})
}
