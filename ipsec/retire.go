package ipsec

import (
	"errors"
	"net/netip"
	"slices"
	"time"
)

// retireEpochs erases own epochs that nobody sends to any more.
func (m *Manager) retireEpochs(peers []PeerInfo, now time.Time) {
	newest := m.newest()
	for _, e := range slices.Clone(m.epochs[:len(m.epochs)-1]) {
		if now.Sub(e.superseded) <= m.cfg.DrainMax {
			if m.epochNeeded(e, newest, peers) {
				e.unneeded = time.Time{}
				continue
			}
			// Nobody sends to it any more, as they say: what they sent
			// just before saying so may still be on its way.
			if e.unneeded.IsZero() {
				e.unneeded = now
			}
			if now.Sub(e.unneeded) < m.cfg.Grace {
				continue
			}
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
	m.retiring = slices.DeleteFunc(m.retiring, func(r retiringOut) bool {
		if r.peer != peer {
			return false
		}
		if err := m.cfg.Kernel.DelSA(m.cfg.Local, peer, r.spi); err != nil {
			errs = append(errs, err)
		}
		return true
	})
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
