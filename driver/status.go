package driver

import (
	"github.com/vxsec/vxsec/ipsec"
)

// Status is what `VxSec.Status` reports.
type Status struct {
	Node string `json:"Node"`
	// Local is the host's own underlay address when it is behind NAT
	// (Node, its advertise address, is the NAT's); empty otherwise.
	Local    string          `json:"Local,omitempty"`
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
// The kernel is asked without any of the driver's locks.
func (d *Driver) Status() Status {
	st := Status{Node: d.cfg.Underlay.Addr.String()}
	if d.cfg.Underlay.BehindNAT() {
		st.Local = d.cfg.Underlay.Local.String()
	}
	d.mu.Lock()
	nets := d.sortedNets()
	d.mu.Unlock()
	for _, n := range nets {
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
