package ipsec

import "net/netip"

// retiringKey names a superseded outbound SA.
type retiringKey struct {
	peer  netip.Addr
	spi   uint32
	reqid uint32
}

// retireOutboundLocked removes a superseded outbound SA once OutboundGrace
// has passed: make before break on the sending side. The policy already
// selects its successor (another reqid slot), so nothing new is bound to
// it; what was bound before the switch still leaves through it.
func (m *Manager) retireOutboundLocked(peer netip.Addr, spi, reqid uint32) {
	if m.cfg.OutboundGrace <= 0 {
		if err := m.cfg.Kernel.DelSA(m.cfg.Local, peer, spi); err != nil {
			m.log.Warn("removing superseded outbound SA", "peer", peer, "err", err)
		}
		return
	}
	if m.retiring == nil {
		m.retiring = map[retiringKey]func() bool{}
	}
	k := retiringKey{peer, spi, reqid}
	m.retiring[k] = m.cfg.AfterFunc(m.cfg.OutboundGrace, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if _, ok := m.retiring[k]; !ok {
			return // removed meanwhile (its slot reused, the peer dropped, deactivated)
		}
		delete(m.retiring, k)
		if err := m.cfg.Kernel.DelSA(m.cfg.Local, peer, spi); err != nil {
			m.log.Warn("removing superseded outbound SA", "peer", peer, "err", err)
		}
	})
}

// stopRetiringLocked stops the timers of the retiring SAs drop selects and
// forgets them; drop removes them from the kernel itself if it must.
func (m *Manager) stopRetiringLocked(drop func(retiringKey) bool) {
	for k, stop := range m.retiring {
		if drop(k) {
			stop()
			delete(m.retiring, k)
		}
	}
}
