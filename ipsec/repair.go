package ipsec

import (
	"fmt"
	"net/netip"
	"slices"
)

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
	// A superseded SA removed early costs nothing more than its packets.
	m.retiring = slices.DeleteFunc(m.retiring, func(r retiringOut) bool { return !have[id{m.cfg.Local, r.peer, r.spi}] })
	for sa := range m.legacy {
		if !have[id{sa.Src, sa.Dst, sa.SPI}] {
			delete(m.legacy, sa)
		}
	}
	return nil
}
