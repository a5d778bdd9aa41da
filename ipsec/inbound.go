package ipsec

import (
	"bytes"
	"net/netip"
	"time"

	"github.com/vxsec/vxsec/announce"
)

// syncInbound installs one inbound SA per peer epoch × own epoch, each
// before its SPI is published: the publication (the announcement Sync
// returns) is the acknowledgement that this host can receive on that key,
// and the peer sends on no key before it is acknowledged. An SA of a peer
// epoch now announced with another key is replaced: its key derives from
// the one the peer no longer holds.
//
// The receiver chooses how each SA of its takes packets, native ESP or ESP
// in UDP, because xfrm delivers on an SA only what arrives as the SA was
// made (xfrm_input compares the encapsulation: XfrmInStateMismatch); the
// SPI carries the choice to the sender. The choice is made once per SA;
// it changes only with new SAs: a host changes its mode by restarting,
// which brings new epochs, and in auto mode SetNativeESP starts an epoch
// when what it saw of a peer's native ESP changes. The old SAs drain.
func (m *Manager) syncInbound(p PeerInfo) error {
	udp, _ := m.receiveUDPWhy(p.Host, encapOf(p))
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
			key, err := SAKey(e.kp, m.cfg.Local, Peer{Host: p.Host, Epoch: pk.Epoch, Public: pk.Public, ID: pk.ID}, false, spi)
			if err != nil {
				return err
			}
			e.inSPIs[spi] = true
			sa := SA{Src: p.Host, Dst: m.cfg.Local, SPI: spi, Reqid: inReqid, Key: key}
			if udp {
				sa.UDP = &UDPEncap{SrcPort: p.UDP, DstPort: m.cfg.UDPPort}
			}
			if err := m.cfg.Kernel.AddSA(sa); err != nil {
				return err
			}
			m.in[k] = &inSA{spi: spi, peerPublic: pk.Public, udp: udp}
		}
	}
	return nil
}

// receiveUDPWhy is whether this host takes the peer's ESP in UDP, and
// why: when either end asks for it, or, in auto mode, when the peer's
// native ESP has not been seen to arrive; and only when both ends can (a
// release before ESP in UDP announces no port, and sends native ESP
// whatever the SPI says).
func (m *Manager) receiveUDPWhy(peer netip.Addr, pe peerEncap) (bool, string) {
	switch {
	case m.cfg.UDPPort == 0:
		return false, "native ESP: this host has no ESP-in-UDP port"
	case pe.port == 0:
		return false, "native ESP: the peer's release has no ESP in UDP"
	case m.cfg.UDPAlways:
		return true, "ESP in UDP: this host asks for it (VXSEC_ESP_ENCAP=udp)"
	case m.cfg.UDPAuto && m.cfg.BehindNAT:
		return true, "ESP in UDP: this host is behind NAT (its advertise address is not its own)"
	case pe.nat:
		return true, "ESP in UDP: the peer is behind NAT (its advertise address is not its own)"
	case pe.encap == announce.EncapUDP:
		return true, "ESP in UDP: the peer asks for it (VXSEC_ESP_ENCAP=udp there)"
	case m.cfg.UDPAuto && !m.native[peer]:
		return true, "ESP in UDP: no native ESP from the peer arrived in the last " + nativeWindow + " (IP protocol 50 dropped on the path, or not probed yet)"
	case m.cfg.UDPAuto:
		return false, "native ESP: the peer's native ESP arrives (VXSEC_ESP_ENCAP=auto)"
	}
	return false, "native ESP: neither end asks for ESP in UDP (VXSEC_ESP_ENCAP=esp)"
}

// encapOf is what a peer's table says of ESP in UDP.
func encapOf(p PeerInfo) peerEncap {
	return peerEncap{port: p.UDP, encap: p.Encap, nat: p.NAT}
}

// nativeWindow is how recent SetNativeESP's evidence is (for messages).
const nativeWindow = "20 s"

// SetNativeESP records the peers whose native ESP reached this host lately
// (firewall.ESPSeen). A record not yet complete (the firewall's sets were
// just made, at a start or a rebuild, and have not heard every member
// yet) only adds peers: a peer missing from it is no evidence.
//
// In auto mode, when the choice it makes for a peer differs from the one
// its newest inbound SA was made with, a new epoch starts (at most once
// per encapSwitchEvery): its SAs, made under the new choice, take over
// make before break, as in a rotation. It reports whether it started one;
// the caller then syncs.
func (m *Manager) SetNativeESP(peers []netip.Addr, complete bool) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	next := map[netip.Addr]bool{}
	for _, p := range peers {
		next[p] = true
	}
	if !complete {
		for p := range m.native {
			next[p] = true
		}
	}
	m.native = next
	if !m.active || !m.cfg.UDPAuto || len(m.epochs) == 0 {
		return false
	}
	now := m.cfg.Now()
	if !m.encapSwitched.IsZero() && now.Sub(m.encapSwitched) < encapSwitchEvery {
		return false
	}
	newest := m.newest().kp.Epoch
	for k, sa := range m.in {
		if k.epoch != newest {
			continue
		}
		pe, ok := m.peerEncap[k.peer]
		if !ok {
			continue
		}
		if want, why := m.receiveUDPWhy(k.peer, pe); want != sa.udp {
			if err := m.newEpochLocked(); err != nil {
				m.log.Error("starting an epoch to change a peer's encapsulation", "peer", k.peer, "err", err)
				return false
			}
			m.encapSwitched = now
			m.log.Info("changing how a peer's ESP is received: a new epoch carries it", "peer", k.peer, "udp", want, "why", why)
			return true
		}
	}
	return false
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
