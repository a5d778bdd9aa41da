package ipsec

import (
	"bytes"
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
// SPI carries the choice to the sender. The choice is made once per SA: a
// host changes its mode only by restarting, which brings new epochs, and
// so new SAs made under the new choice while the old drain.
func (m *Manager) syncInbound(p PeerInfo) error {
	udp := m.receiveUDP(p)
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

// receiveUDP is whether this host takes the peer's ESP in UDP: when
// either end asks for it, and both ends can (a release before ESP in UDP
// announces no port, and sends native ESP whatever the SPI says).
func (m *Manager) receiveUDP(p PeerInfo) bool {
	return m.cfg.UDPPort != 0 && p.UDP != 0 && (m.cfg.UDPAlways || p.Encap == announce.EncapUDP)
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
