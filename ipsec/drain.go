package ipsec

import (
	"bytes"
	"net/netip"
	"time"

	"github.com/vxsec/vxsec/announce"
)

// drainInbound removes the inbound SAs no longer wanted once the peer
// sends on another: make before break, as the peer switches keys only
// after it has seen the new SPI published, and until it says it has, it
// may still send on the old one. DrainMax bounds the wait for a peer that
// never says.
func (m *Manager) drainInbound(p PeerInfo, keys map[uint64][]byte, now time.Time) error {
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
		switch {
		case now.Sub(sa.unwanted) > m.cfg.DrainMax:
		case using != nil && using.SPI != sa.spi:
			// The peer sends on another: packets it bound to this one may
			// still be on their way (see ManagerConfig.Grace).
			if sa.replaced.IsZero() {
				sa.replaced = now
			}
			if now.Sub(sa.replaced) < m.cfg.Grace {
				continue
			}
		default:
			continue
		}
		if err := m.cfg.Kernel.DelSA(p.Host, m.cfg.Local, sa.spi); err != nil {
			return err
		}
		delete(m.in, k)
	}
	return nil
}

// peerUsing is what p says it sends to local with, if it says.
func peerUsing(p PeerInfo, local netip.Addr) *announce.Using {
	for i := range p.Using {
		if p.Using[i].Peer == local {
			return &p.Using[i]
		}
	}
	return nil
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
		// Outbound legacy SAs go when replaced (syncOutbound); inbound ones
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
