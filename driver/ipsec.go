package driver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"time"

	"github.com/vxsec/vxsec/announce"
	"github.com/vxsec/vxsec/firewall"
	"github.com/vxsec/vxsec/ipsec"
)

// Encrypted networks: their VXLAN goes to EncryptedPort, which the xfrm
// guard policies and the firewall's secpath rule close before any such
// device exists; per-peer SAs, negotiated through the tables, open it
// pair by pair. The keys are active exactly while this host has an
// encrypted network. Every method here that reaches the keys runs with the
// operation lock held (the names end in Op).

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
// carry: no IPsec manager, no cluster secret, no host identities, or a
// kernel without ESP/GCM.
func (d *Driver) checkEncryption() error {
	if d.cfg.IPsec == nil {
		return errors.New("--opt encrypted: this vxsec daemon runs without IPsec; nothing was created")
	}
	if !d.cfg.Authenticated {
		return errors.New("--opt encrypted: the vxsec cluster has no secret, so peers (and the keys negotiated with them) " +
			"would be unauthenticated; nothing was created. Set VXSEC_SECRET (from `vxsec secret`) on every host, " +
			"or create the network without --opt encrypted")
	}
	if !d.cfg.Identified {
		return errors.New("--opt encrypted: the hosts of this vxsec cluster have no identities, so any holder of the cluster " +
			"secret could speak for a host and sit in the middle of its keys; nothing was created. Give every host an identity " +
			"(`vxsec ca init`, `vxsec ca issue`, VXSEC_IDENTITY_DIR, with VXSEC_IDENTITY=required; in swarm mode leave VXSEC_SECRET " +
			"unset and the swarm node certificates are the identities), or create the network without --opt encrypted")
	}
	return nil
}

// activateIPsecOp makes the guard exist before an encrypted device.
func (d *Driver) activateIPsecOp() error {
	// Activate leaves state to remove, even when it fails part way.
	d.ipsecClean = false
	if err := d.cfg.IPsec.Activate(); err != nil {
		return fmt.Errorf("programming IPsec before the encrypted network's device: %w", err)
	}
	d.setAnnounced(d.cfg.IPsec.Announcement())
	return nil
}

// deactivateIPsecOp removes every xfrm state and policy of vxsec's once
// no encrypted network is left.
func (d *Driver) deactivateIPsecOp() {
	if !d.ipsecLeftOp() {
		return
	}
	if err := d.cfg.IPsec.Deactivate(); err != nil {
		d.log.Error("removing IPsec state", "err", err)
		return
	}
	d.ipsecClean = true
	d.setAnnounced(announce.IPsec{})
}

// ipsecLeftOp reports whether xfrm state of vxsec's may be in the kernel
// that no encrypted network needs.
func (d *Driver) ipsecLeftOp() bool {
	return d.cfg.IPsec != nil && d.encryptedCount() == 0 && (d.cfg.IPsec.Active() || !d.ipsecClean)
}

// syncIPsecOp runs the negotiation against the tables the cluster gave,
// and publishes this host's side when it changed.
func (d *Driver) syncIPsecOp() {
	if d.cfg.IPsec == nil || !d.cfg.IPsec.Active() {
		return
	}
	var peers []ipsec.PeerInfo
	d.mu.Lock()
	for host, t := range d.remote {
		if len(t.Keys) > 0 {
			peers = append(peers, ipsec.PeerInfo{Host: host, IPsec: t.IPsec})
		}
	}
	d.mu.Unlock()
	a, err := d.cfg.IPsec.Sync(peers, d.settled())
	if err != nil {
		d.log.Error("programming IPsec SAs", "err", err)
	}
	d.setAnnounced(a)
	d.setIPsecDue(d.cfg.IPsec.Due())
}

// setIPsecDue tells Run when the keys next owe a Sync.
func (d *Driver) setIPsecDue(at time.Time) {
	d.mu.Lock()
	same := at.Equal(d.ipsecDue)
	d.ipsecDue = at
	d.mu.Unlock()
	if !same {
		select {
		case d.ipsecDueChanged <- struct{}{}:
		default:
		}
	}
}

// probeESP sends a round of native ESP probes to the peers with keys, and
// gives the keys what native ESP arrived from whom. Sending and reading
// the firewall take no lock the API calls need; the keys take the
// operation lock.
func (d *Driver) probeESP(ctx context.Context, seq uint32) {
	if d.cfg.IPsec == nil {
		return
	}
	if err := d.lock(ctx); err != nil {
		return
	}
	active := d.cfg.IPsec.Active()
	d.unlock()
	if !active {
		return // no encrypted network here: no peer needs to hear from this host
	}
	var peers []netip.Addr
	d.mu.Lock()
	for host, t := range d.remote {
		if len(t.Keys) > 0 {
			peers = append(peers, host)
		}
	}
	d.mu.Unlock()
	if len(peers) == 0 {
		return
	}
	if err := d.cfg.ProbeESP(d.cfg.Underlay.Local, peers, seq); err != nil && seq%60 == 1 {
		// Peers in auto mode then receive from this host in UDP.
		d.log.Warn("sending native ESP probes (logged every 60th round)", "err", err)
	}
	if d.cfg.Keepalive != nil {
		// Read under the keys' own lock, sent under none.
		if err := d.cfg.Keepalive(d.cfg.IPsec.NATKeepalives()); err != nil && seq%60 == 1 {
			d.log.Warn("sending NAT keepalives (logged every 60th round)", "err", err)
		}
	}
	seen, since, err := d.cfg.Firewall.ESPSeen()
	if err != nil {
		d.log.Error("reading which members' native ESP arrived", "err", err)
		return
	}
	if err := d.lock(ctx); err != nil {
		return
	}
	defer d.unlock()
	complete := d.now().Sub(since) >= firewall.ESPSeenFor
	if d.cfg.IPsec.Active() && d.cfg.IPsec.SetNativeESP(seen, complete) {
		d.syncIPsecOp()
	}
}

// repairIPsecOp makes the next sync restore SAs and policies missing
// from the kernel (the periodic reconcile's part for IPsec).
func (d *Driver) repairIPsecOp() {
	if d.cfg.IPsec == nil {
		return
	}
	if err := d.cfg.IPsec.Repair(); err != nil {
		d.log.Error("checking IPsec state in the kernel", "err", err)
	}
}

// setAnnounced records this host's side of the negotiation for Snapshot,
// and tells the cluster when it changed.
func (d *Driver) setAnnounced(a announce.IPsec) {
	d.mu.Lock()
	same := reflect.DeepEqual(a, d.announced)
	d.announced = a
	d.mu.Unlock()
	if !same {
		d.notify()
	}
}

// Rotate starts a new key epoch now; the switch to it happens pair by pair
// as peers acknowledge it.
func (d *Driver) Rotate(ctx context.Context) error {
	if d.cfg.IPsec == nil {
		return errors.New("this vxsec daemon runs without IPsec")
	}
	if err := d.lock(ctx); err != nil {
		return err
	}
	defer d.unlock()
	if n := len(d.cfg.IPsec.Announcement().Keys); n >= announce.MaxKeysPerHost {
		return fmt.Errorf("this host has %d live IPsec key epochs, the limit per host (announce.MaxKeysPerHost, %d): every other host refuses a table with more; "+
			"wait for the peers to move to the newest (old epochs retire within %v)", n, announce.MaxKeysPerHost, ipsec.DefaultDrainMax)
	}
	if err := d.cfg.IPsec.Rotate(); err != nil {
		return err
	}
	d.log.Info("rotating IPsec keys")
	d.syncIPsecOp()
	return nil
}
