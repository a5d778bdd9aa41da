package driver

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/vxsec/vxsec/firewall"
	"github.com/vxsec/vxsec/gossip"
	"github.com/vxsec/vxsec/ipsec"
	"github.com/vxsec/vxsec/vxlan"
)

// Publisher takes this host's table to the cluster.
type Publisher interface {
	Publish(gossip.Table)
}

// settleAfter is how long after start entries of hosts whose tables have
// not arrived are kept: long enough for the cluster to be pulled from, so
// a restart loses nothing; after it, the cluster's view is the truth.
const settleAfter = 20 * time.Second

var _ gossip.Sink = (*Driver)(nil)

// SetRemote installs what a host published.
func (d *Driver) SetRemote(t gossip.Table) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if old, ok := d.remote[t.Host]; ok && !old.Version.Less(t.Version) {
		return
	}
	d.remote[t.Host] = t
	d.peersChangedLocked()
}

// DropRemote forgets a host: its endpoints leave every network at once.
func (d *Driver) DropRemote(host netip.Addr) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.remote, host)
	d.dropped[host] = true
	d.droppedSince = true
	d.peersChangedLocked()
}

// SetMembers updates the hosts VXLAN is accepted from.
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
	if len(d.nets) == 0 {
		return
	}
	if err := d.cfg.Firewall.Apply(d.fwState()); err != nil {
		d.log.Error("updating the member firewall", "err", err)
	}
}

// fwState is the firewall the desired state needs. Until the cluster has
// settled after a start, the members the kernel had at start stay unless
// the cluster declared them gone: a daemon that has not rejoined yet knows
// only itself, and must not shut its peers out.
func (d *Driver) fwState() firewall.State {
	st := firewall.State{Active: len(d.nets) > 0, DataPorts: []uint16{d.cfg.DataPort}, Members: d.members}
	if d.cfg.EncryptedPort != 0 {
		st.DataPorts = append(st.DataPorts, d.cfg.EncryptedPort)
		st.SecurePorts = []uint16{d.cfg.EncryptedPort}
	}
	if d.members == nil || time.Since(d.started) > settleAfter {
		return st
	}
	seen := map[netip.Addr]bool{}
	var members []netip.Addr
	for _, a := range append(append([]netip.Addr{}, d.members...), d.bootMembers...) {
		if !seen[a] && !d.dropped[a] {
			seen[a] = true
			members = append(members, a)
		}
	}
	slices.SortFunc(members, func(a, b netip.Addr) int { return a.Compare(b) })
	st.Members = members
	return st
}

// publishLocked hands the cluster this host's table.
func (d *Driver) publishLocked() {
	if d.cfg.Cluster == nil {
		return
	}
	d.cfg.Cluster.Publish(d.tableLocked())
}

// Table is this host's table as the cluster should see it now.
func (d *Driver) Table() gossip.Table {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.tableLocked()
}

func (d *Driver) tableLocked() gossip.Table {
	t := gossip.Table{Host: d.cfg.Underlay.Addr}
	for _, n := range d.sortedNets() {
		t.Networks = append(t.Networks, gossip.NetworkRecord{
			ID: n.ID, VNI: n.VNI, Subnets: n.Subnets, Encrypted: n.Options.Encrypted, Created: n.Created,
		})
		for _, ep := range n.sortedEndpoints() {
			t.Endpoints = append(t.Endpoints, gossip.EndpointRecord{
				VNI: n.VNI, IP: ep.Address.Addr(), MAC: ep.MAC, Created: ep.Created,
			})
		}
	}
	d.addIPsecLocked(&t)
	return t
}

func (n *Network) sortedEndpoints() []*Endpoint {
	out := make([]*Endpoint, 0, len(n.Endpoints))
	for _, ep := range n.Endpoints {
		out = append(out, ep)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// peerBatch is the least time between two passes that apply remote tables:
// a burst of tables (a host joining a large cluster) costs one pass over
// the kernel instead of one per table.
const peerBatch = 50 * time.Millisecond

// maxPeerBatch bounds the spacing a slow pass may impose on the next.
const maxPeerBatch = time.Second

// peersChangedLocked schedules applying the remote tables to the kernel.
func (d *Driver) peersChangedLocked() {
	select {
	case d.peersDirty <- struct{}{}:
	default:
	}
}

// applyPeers runs until ctx ends, applying remote tables: a change after a
// quiet spell at once, a burst in batches. A pass costs in proportion to
// every entry of every network, so passes start at least peerBatch, and
// at least twice the last pass's duration (up to maxPeerBatch), apart: on
// a busy host, where passes are slow, batches grow and passes get fewer.
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
		case <-time.After(time.Until(start.Add(min(max(peerBatch, 2*took), maxPeerBatch)))):
		}
		start = time.Now()
		d.syncPeers()
		took = time.Since(start)
		d.mu.Lock()
		d.syncIPsecLocked()
		d.mu.Unlock()
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
	d.mu.Lock()
	settled := time.Since(d.started) > settleAfter
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

// peersLocked lists the remote endpoints of a network. A host whose network
// of this VNI conflicts with ours contributes nothing, and of two endpoints
// claiming one address the earlier one wins (a local one always does).
func (d *Driver) peersLocked(n *Network) []vxlan.Peer {
	local := map[netip.Addr]bool{}
	for _, ep := range n.Endpoints {
		local[ep.Address.Addr()] = true
	}
	type cand struct {
		peer    vxlan.Peer
		created time.Time
	}
	best := map[netip.Addr]cand{}
	for host, t := range d.remote {
		if rn, ok := findVNI(t, n.VNI); !ok || conflicts(n, rn) != "" {
			continue
		}
		for _, ep := range t.Endpoints {
			if ep.VNI != n.VNI || local[ep.IP] {
				continue
			}
			c := cand{vxlan.Peer{IP: ep.IP, MAC: ep.MAC, Host: host}, ep.Created}
			if b, ok := best[ep.IP]; ok && (b.created.Before(c.created) || b.created.Equal(c.created) && b.peer.Host.Less(host)) {
				continue
			}
			best[ep.IP] = c
		}
	}
	out := make([]vxlan.Peer, 0, len(best))
	for _, c := range best {
		out = append(out, c.peer)
	}
	return out
}

func findVNI(t gossip.Table, vni uint32) (gossip.NetworkRecord, bool) {
	for _, rn := range t.Networks {
		if rn.VNI == vni {
			return rn, true
		}
	}
	return gossip.NetworkRecord{}, false
}

// conflicts says why a remote network of the same VNI is not the same
// network as n, or "" when it is.
func conflicts(n *Network, rn gossip.NetworkRecord) string {
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

// clusterConflictLocked refuses a network that another host already runs,
// under the same VNI, as a different network.
func (d *Driver) clusterConflictLocked(n *Network) error {
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

// addressConflictLocked refuses an address another host's endpoint holds in
// the same network.
func (d *Driver) addressConflictLocked(n *Network, addr netip.Addr, created time.Time) error {
	for host, t := range d.remote {
		if rn, ok := findVNI(t, n.VNI); !ok || conflicts(n, rn) != "" {
			continue
		}
		for _, ep := range t.Endpoints {
			if ep.VNI == n.VNI && ep.IP == addr && !created.Before(ep.Created) {
				return fmt.Errorf("address %s is already used in network vni %d by an endpoint on host %s; give containers on different hosts distinct addresses (e.g. --ip-range per host)",
					addr, n.VNI, host)
			}
		}
	}
	return nil
}

// Status is what `VxSec.Status` reports.
type Status struct {
	Node     string          `json:"Node"`
	Members  []gossip.Member `json:"Members"`
	Networks []NetworkStatus `json:"Networks"`
	IPsec    *ipsec.Status   `json:"IPsec,omitempty"`
}

// NetworkStatus counts a network's endpoints.
type NetworkStatus struct {
	ID     string `json:"ID"`
	VNI    uint32 `json:"VNI"`
	Local  int    `json:"Local"`
	Remote int    `json:"Remote"`
}

// Status reports the desired state's shape and what the kernel holds.
func (d *Driver) Status() Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := Status{Node: d.cfg.Underlay.Addr.String()}
	for _, n := range d.sortedNets() {
		remote, err := d.cfg.DataPath.PeerCount(d.dpNetwork(n))
		if err != nil {
			remote = -1
		}
		st.Networks = append(st.Networks, NetworkStatus{ID: n.ID, VNI: n.VNI, Local: len(n.Endpoints), Remote: remote})
	}
	if d.cfg.IPsec != nil {
		is := d.cfg.IPsec.Status()
		st.IPsec = &is
	}
	return st
}
