package driver

import (
	"maps"
	"slices"
	"strings"

	"github.com/vxsec/vxsec/announce"
)

// This host's side for the cluster (gossip.Local): the table it announces,
// built from the desired state, and a signal when it changed.

// Snapshot is this host's table as the cluster should see it now.
func (d *Driver) Snapshot() announce.Table {
	d.mu.Lock()
	defer d.mu.Unlock()
	t := announce.Table{Host: d.cfg.Underlay.Addr, IPsec: d.announced}
	for _, n := range d.sortedNets() {
		t.Networks = append(t.Networks, announce.Network{
			ID: n.ID, VNI: n.VNI, Subnets: n.Subnets, Encrypted: n.Options.Encrypted, Created: n.Created,
		})
		for _, ep := range n.sortedEndpoints() {
			t.Endpoints = append(t.Endpoints, announce.Endpoint{
				VNI: n.VNI, IP: ep.Address.Addr(), MAC: ep.MAC, Created: ep.Created,
			})
		}
	}
	return t
}

// Changed is signalled after Snapshot may have changed.
func (d *Driver) Changed() <-chan struct{} { return d.changed }

func (d *Driver) notify() {
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

func (n *Network) sortedEndpoints() []*Endpoint {
	return slices.SortedFunc(maps.Values(n.Endpoints), func(a, b *Endpoint) int { return strings.Compare(a.ID, b.ID) })
}
