package driver

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/vxsec/vxsec/announce"
	"github.com/vxsec/vxsec/vxlan"
)

// settleAfter is how long after start entries of hosts whose tables have
// not arrived are kept: long enough for the cluster to be pulled from, so
// a restart loses nothing; after it, the cluster's view is the truth.
const settleAfter = 20 * time.Second

// The cluster's side of the driver (gossip.Sink): remote tables become
// the networks' static FDB and neighbour entries, in passes run by Run.

// SetRemote installs what a host published. A host of the other address
// family is not installed: a VXLAN device
// sends from one underlay address, so IPv4 and IPv6 hosts cannot reach
// each other's endpoints (docs/ipv6.md), and saying so beats an FDB entry
// the kernel refuses on every pass.
func (d *Driver) SetRemote(t announce.Table) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if local := d.cfg.Underlay.Addr; local.IsValid() && t.Host.Is4() != local.Is4() {
		if !d.otherFamily[t.Host] {
			d.otherFamily[t.Host] = true
			d.log.Warn("a member's underlay address is of the other IP family: its endpoints are unreachable from this host "+
				"(a vxsec cluster is all IPv4 or all IPv6: set VXSEC_ADVERTISE_ADDR to an address of one family on every host)",
				"member", t.Host, "local", local)
		}
		return
	}
	old, had := d.remote[t.Host]
	if had && !old.Version.Less(t.Version) {
		return
	}
	d.remote[t.Host] = t
	if had {
		d.noteClaimsLocked(&old, t)
	} else {
		d.noteClaimsLocked(nil, t)
	}
	d.counts.tables.Add(1)
	if d.pendingSince.IsZero() {
		d.pendingSince = time.Now()
	}
	d.peersChanged()
}

// DropRemote forgets a host: its endpoints leave every network at once.
func (d *Driver) DropRemote(host netip.Addr) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.remote, host)
	d.dropClaimsLocked(host)
	d.dropped[host] = true
	d.droppedSince = true
	d.peersChanged()
}

// SetMembers updates the hosts VXLAN is accepted from; the firewall gets
// them in the next pass.
func (d *Driver) SetMembers(addrs []netip.Addr) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, a := range addrs {
		delete(d.dropped, a)
	}
	if d.members != nil && slices.Equal(d.members, addrs) && !d.droppedSince {
		return // member events that change no address: keep the kernel as is
	}
	d.droppedSince = false
	d.members = append([]netip.Addr{}, addrs...)
	d.membersDirty = true
	d.peersChanged()
}

// peerBatch is the least time between two passes that apply remote tables:
// a burst of tables (a host joining a large cluster) costs one pass over
// the kernel instead of one per table.
const peerBatch = 50 * time.Millisecond

// maxPeerBatch bounds the spacing a slow pass may impose on the next.
const maxPeerBatch = time.Second

// peersChanged schedules a pass of applyPeers.
func (d *Driver) peersChanged() {
	select {
	case d.peersDirty <- struct{}{}:
	default:
	}
}

// applyPeers runs until ctx ends, applying remote tables: a change after a
// quiet spell at once, a burst in batches. A pass costs in proportion to
// every entry of every network, so passes start at least peerBatch, and
// at least four times the last pass's duration (up to maxPeerBatch),
// apart: passes take at most a fifth of the time, and on a busy host,
// where they are slow, batches grow and passes get fewer. (With 50 lab
// hosts on 2 CPUs, twice gave 36-39 passes a host and every entry
// everywhere 5.6-6.0 s after the first endpoint; four times, 22-24 passes
// and 5.3 s; eight, 17 passes, but a longer tail after the last change.)
func (d *Driver) applyPeers(ctx context.Context) {
	var start time.Time
	var took time.Duration
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.peersDirty:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(start.Add(min(max(peerBatch, 4*took), maxPeerBatch)))):
		}
		start = time.Now()
		d.mu.Lock()
		pending := d.pendingSince
		d.pendingSince = time.Time{}
		d.mu.Unlock()
		d.syncPeers()
		took = time.Since(start)
		d.counts.passes.Add(1)
		if !pending.IsZero() {
			d.counts.applyLag.Store(int64(time.Since(pending)))
		}
		if d.lock(ctx) != nil {
			return
		}
		d.syncMembersOp()
		d.syncIPsecOp()
		d.unlock()
	}
}

// peerPlan is one network's remote entries as the desired state has them.
type peerPlan struct {
	net   vxlan.Network
	peers []vxlan.Peer
}

// syncPeers makes every network's static entries match what the cluster
// published. The plan is made under the driver's lock and carried out
// without it: with many hosts the kernel work is the long part, and API
// calls and arriving tables must not wait for it. Only applyPeers calls
// it, so passes never overtake each other.
func (d *Driver) syncPeers() {
	settled := d.settled()
	d.mu.Lock()
	known := map[netip.Addr]bool{}
	for host := range d.remote {
		known[host] = true
	}
	dropped := maps.Clone(d.dropped)
	var plans []peerPlan
	for _, n := range d.sortedNets() {
		plans = append(plans, peerPlan{net: d.dpNetwork(n), peers: d.peersLocked(n)})
	}
	d.mu.Unlock()
	keep := func(host netip.Addr) bool {
		return !known[host] && !dropped[host] && !settled
	}
	for _, p := range plans {
		if err := d.cfg.DataPath.SetPeers(p.net, p.peers, keep); err != nil {
			d.log.Error("installing remote endpoints", "network", p.net.ID, "err", err)
		}
	}
}

func findVNI(t announce.Table, vni uint32) (announce.Network, bool) {
	for _, rn := range t.Networks {
		if rn.VNI == vni {
			return rn, true
		}
	}
	return announce.Network{}, false
}

// conflicts says why a remote network of the same VNI is not the same
// network as n, or "" when it is.
func conflicts(n *Network, rn announce.Network) string {
	if rn.Encrypted != n.Options.Encrypted {
		return "one is encrypted and the other is not"
	}
	if !samePrefixes(n.Subnets, rn.Subnets) {
		return fmt.Sprintf("subnets %v differ from %v", rn.Subnets, n.Subnets)
	}
	return ""
}

func samePrefixes(a, b []netip.Prefix) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[netip.Prefix]bool{}
	for _, p := range a {
		seen[p] = true
	}
	for _, p := range b {
		if !seen[p] {
			return false
		}
	}
	return true
}

// clusterConflict refuses a network that another host already runs,
// under the same VNI, as a different network.
func (d *Driver) clusterConflict(n *Network) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for host, t := range d.remote {
		rn, ok := findVNI(t, n.VNI)
		if !ok {
			continue
		}
		if why := conflicts(n, rn); why != "" {
			return fmt.Errorf("vni %d is already used in the cluster by network %s on host %s, and it is not the same network (%s); choose another %s",
				n.VNI, short(rn.ID), host, why, OptVNI)
		}
	}
	return nil
}
