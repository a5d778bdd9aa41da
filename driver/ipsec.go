package driver

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"time"

	"github.com/vxsec/vxsec/gossip"
	"github.com/vxsec/vxsec/ipsec"
)

// Encrypted networks: their VXLAN goes to EncryptedPort, which the xfrm
// guard policies and the firewall's secpath rule close before any such
// device exists; per-peer SAs, negotiated through the tables, open it
// pair by pair. The Manager is active exactly while this host has an
// encrypted network.

func (d *Driver) encryptedCount() int {
	n := 0
	for _, nw := range d.nets {
		if nw.Options.Encrypted {
			n++
		}
	}
	return n
}

// checkEncryption refuses an encrypted network this host cannot
// carry: no IPsec manager, no cluster secret, or a kernel without ESP/GCM.
func (d *Driver) checkEncryption() error {
	if d.cfg.IPsec == nil {
		return errors.New("--opt encrypted: this vxsec daemon runs without IPsec; nothing was created")
	}
	if !d.cfg.Authenticated {
		return errors.New("--opt encrypted: the vxsec cluster has no secret, so peers (and the keys negotiated with them) " +
			"would be unauthenticated; nothing was created. Set VXSEC_SECRET (from `vxsec secret`) on every host, " +
			"or create the network without --opt encrypted")
	}
	return nil
}

// activateIPsecLocked makes the guard exist before an encrypted device.
func (d *Driver) activateIPsecLocked() error {
	if err := d.cfg.IPsec.Activate(); err != nil {
		return fmt.Errorf("programming IPsec before the encrypted network's device: %w", err)
	}
	return nil
}

// deactivateIPsecLocked removes every xfrm state and policy of vxsec's once
// no encrypted network is left.
func (d *Driver) deactivateIPsecLocked() {
	if d.cfg.IPsec == nil || d.encryptedCount() > 0 {
		return
	}
	if !d.cfg.IPsec.Active() && d.ipsecClean {
		return
	}
	if err := d.cfg.IPsec.Deactivate(); err != nil {
		d.log.Error("removing IPsec state", "err", err)
		return
	}
	d.ipsecClean = true
	d.publishIfIPsecChangedLocked()
}

// syncIPsecLocked runs the negotiation against the tables the cluster
// gave, and publishes this host's side when it changed.
func (d *Driver) syncIPsecLocked() {
	if d.cfg.IPsec == nil || !d.cfg.IPsec.Active() {
		return
	}
	var peers []ipsec.PeerInfo
	for host, t := range d.remote {
		if len(t.Keys) > 0 {
			peers = append(peers, peerInfo(host, t))
		}
	}
	settled := time.Since(d.started) > settleAfter
	if _, err := d.cfg.IPsec.Sync(peers, settled); err != nil {
		d.log.Error("programming IPsec SAs", "err", err)
	}
	d.publishIfIPsecChangedLocked()
}

// repairIPsecLocked makes the next sync restore SAs and policies missing
// from the kernel (the periodic reconcile's part for IPsec).
func (d *Driver) repairIPsecLocked() {
	if d.cfg.IPsec == nil {
		return
	}
	if err := d.cfg.IPsec.Repair(); err != nil {
		d.log.Error("checking IPsec state in the kernel", "err", err)
	}
}

func (d *Driver) publishIfIPsecChangedLocked() {
	a := d.cfg.IPsec.Announcement()
	if reflect.DeepEqual(a, d.announced) {
		return
	}
	d.publishLocked()
}

// Rotate starts a new key epoch now; the switch to it happens pair by pair
// as peers acknowledge it.
func (d *Driver) Rotate() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cfg.IPsec == nil {
		return errors.New("this vxsec daemon runs without IPsec")
	}
	if n := len(d.cfg.IPsec.Announcement().Keys); n >= gossip.MaxKeysPerHost {
		return fmt.Errorf("this host has %d live IPsec key epochs, the limit per host (gossip.MaxKeysPerHost, %d): every other host refuses a table with more; "+
			"wait for the peers to move to the newest (old epochs retire within %v)", n, gossip.MaxKeysPerHost, ipsec.DefaultDrainMax)
	}
	if err := d.cfg.IPsec.Rotate(); err != nil {
		return err
	}
	d.log.Info("rotating IPsec keys")
	d.syncIPsecLocked()
	return nil
}

// addIPsecLocked puts this host's side of the negotiation in its table.
func (d *Driver) addIPsecLocked(t *gossip.Table) {
	if d.cfg.IPsec == nil {
		return
	}
	a := d.cfg.IPsec.Announcement()
	d.announced = a
	for _, k := range a.Keys {
		t.Keys = append(t.Keys, gossip.KeyRecord{Epoch: k.Epoch, Public: k.Public})
	}
	for _, s := range a.SPIs {
		t.SPIs = append(t.SPIs, gossip.SPIRecord{Peer: s.Peer, PeerEpoch: s.PeerEpoch, Epoch: s.Epoch, SPI: s.SPI})
	}
	for _, u := range a.Using {
		t.Using = append(t.Using, gossip.UsingRecord{Peer: u.Peer, Epoch: u.Epoch, PeerEpoch: u.PeerEpoch, SPI: u.SPI})
	}
}

func peerInfo(host netip.Addr, t gossip.Table) ipsec.PeerInfo {
	p := ipsec.PeerInfo{Host: host}
	for _, k := range t.Keys {
		p.Keys = append(p.Keys, ipsec.PublicKey{Epoch: k.Epoch, Public: k.Public})
	}
	for _, s := range t.SPIs {
		p.SPIs = append(p.SPIs, ipsec.InboundSPI{Peer: s.Peer, PeerEpoch: s.PeerEpoch, Epoch: s.Epoch, SPI: s.SPI})
	}
	for _, u := range t.Using {
		p.Using = append(p.Using, ipsec.Using{Peer: u.Peer, Epoch: u.Epoch, PeerEpoch: u.PeerEpoch, SPI: u.SPI})
	}
	return p
}
