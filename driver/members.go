package driver

import (
	"net/netip"
	"slices"

	"github.com/vxsec/vxsec/firewall"
)

// fwStateLocked is the firewall the desired state needs while a network
// exists. Until the cluster has settled after a start, the members the
// kernel had at start stay unless the cluster declared them gone: a
// daemon that has not rejoined yet knows only itself, and must not shut
// its peers out.
func (d *Driver) fwStateLocked() firewall.State {
	st := firewall.State{Active: true, DataPorts: []uint16{d.cfg.DataPort}, Members: d.members}
	if d.cfg.EncryptedPort != 0 {
		st.DataPorts = append(st.DataPorts, d.cfg.EncryptedPort)
		st.SecurePorts = []uint16{d.cfg.EncryptedPort}
		if d.cfg.ESPUDPPort != 0 {
			st.EncapPorts = []uint16{d.cfg.ESPUDPPort}
		}
	}
	if d.members == nil || d.settled() {
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

// applyFirewallOp makes the firewall active with the current members; the
// caller holds the operation lock, and a network exists or is being made.
func (d *Driver) applyFirewallOp() error {
	d.mu.Lock()
	st := d.fwStateLocked()
	d.membersDirty = false
	d.mu.Unlock()
	return d.cfg.Firewall.Apply(st)
}

// syncMembersOp gives the firewall the members the cluster changed.
func (d *Driver) syncMembersOp() {
	d.mu.Lock()
	dirty := d.membersDirty
	d.mu.Unlock()
	if !dirty || len(d.nets) == 0 {
		return
	}
	if err := d.applyFirewallOp(); err != nil {
		d.log.Error("updating the member firewall", "err", err)
	}
}
