package vxlan

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Peer is a remote endpoint: its address and MAC, and the host it is on.
type Peer struct {
	IP   netip.Addr
	MAC  net.HardwareAddr
	Host netip.Addr
}

// installed is what SetPeers last left on one network's device: its FDB
// entries (MAC → host) and permanent neighbour entries (IP → MAC). It is
// read from the kernel when SetPeers finds none for the device's current
// index, and dropped on any error and at every Reconcile, so that drift
// made behind vxsec's back is repaired at the next full pass while a burst
// of cluster changes costs only its own netlink calls, not two dumps of
// every entry per batch (which, with 50 hosts, was most of the CPU).
type installed struct {
	index int
	fdb   map[MAC48]netip.Addr
	neigh map[netip.Addr]MAC48
}

// MAC48 is an Ethernet MAC as a map key. A pass compares every entry of a
// network, in the driver's claims and in SetPeers; keyed by the MAC's
// text, formatting and hashing strings was a third of its cost. A MAC
// that is not 6 bytes can have no FDB entry.
type MAC48 [6]byte

// ToMAC48 is hw as a key, if it is 6 bytes.
func ToMAC48(hw net.HardwareAddr) (MAC48, bool) {
	if len(hw) != len(MAC48{}) {
		return MAC48{}, false
	}
	return MAC48(hw), true
}

// HW is the MAC as netlink takes it.
func (m MAC48) HW() net.HardwareAddr { return net.HardwareAddr(m[:]) }

func (m MAC48) String() string { return m.HW().String() }

// SetPeers makes the network device's static entries match peers: an FDB
// entry sends a MAC to its host; a neighbour entry lets the device answer
// ARP for its IP (proxy). Entries of hosts for which keep returns true are
// left alone even if peers lacks them: after a restart, a host whose table
// has not arrived yet keeps its traffic flowing.
func (d *DataPath) SetPeers(n Network, peers []Peer, keep func(host netip.Addr) bool) error {
	link, err := d.h.LinkByName(LinkName(n.VNI))
	if err != nil {
		return fmt.Errorf("network %s has no device %s: %w", n.ID, LinkName(n.VNI), err)
	}
	if link.Attrs().Alias != aliasNetwork+n.ID {
		return fmt.Errorf("device %s is not network %s's", LinkName(n.VNI), n.ID)
	}
	d.peersMu.Lock()
	defer d.peersMu.Unlock()
	cur, err := d.installedLocked(n.VNI, link.Attrs().Index)
	if err != nil {
		return err
	}
	if err := d.setPeers(cur, peers, keep); err != nil {
		// What failed may be half done: read the kernel next time.
		delete(d.peers, n.VNI)
		return err
	}
	return nil
}

// installedLocked returns the device's entries, from the kernel unless
// SetPeers has left them on this very device since the last Reconcile.
func (d *DataPath) installedLocked(vni uint32, idx int) (*installed, error) {
	if cur, ok := d.peers[vni]; ok && cur.index == idx {
		return cur, nil
	}
	cur := &installed{index: idx, fdb: map[MAC48]netip.Addr{}, neigh: map[netip.Addr]MAC48{}}
	fdb, err := d.h.NeighList(idx, unix.AF_BRIDGE)
	if err != nil {
		return nil, fmt.Errorf("listing FDB of %s: %w", LinkName(vni), err)
	}
	for _, e := range fdb {
		host, _ := netip.AddrFromSlice(e.IP)
		if m, ok := ToMAC48(e.HardwareAddr); ok {
			cur.fdb[m] = host.Unmap()
		}
	}
	neighs, err := d.h.NeighList(idx, unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("listing neighbours of %s: %w", LinkName(vni), err)
	}
	var errs []error
	for _, e := range neighs {
		ip, _ := netip.AddrFromSlice(e.IP)
		if m, ok := ToMAC48(e.HardwareAddr); ok && e.State&netlink.NUD_PERMANENT != 0 {
			cur.neigh[ip.Unmap()] = m
			continue
		}
		// Not ours: the device learns nothing, and only static entries
		// are answered from.
		if err := d.h.NeighDel(&e); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("removing neighbour %s: %w", ip, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	d.peers[vni] = cur
	return cur, nil
}

// setPeers changes the device's entries from cur to peers, keeping cur up
// to date with every change that succeeded.
func (d *DataPath) setPeers(cur *installed, peers []Peer, keep func(host netip.Addr) bool) error {
	var errs []error
	wantFDB := make(map[MAC48]netip.Addr, len(peers))
	wantNeigh := make(map[netip.Addr]MAC48, len(peers))
	for _, p := range peers {
		m, ok := ToMAC48(p.MAC)
		if !ok {
			errs = append(errs, fmt.Errorf("remote endpoint %s: MAC %q is not 6 bytes", p.IP, p.MAC))
			continue
		}
		wantFDB[m] = p.Host
		wantNeigh[p.IP] = m
	}
	keptMACs := make(map[MAC48]bool, len(cur.fdb))
	for mac, host := range cur.fdb {
		if want, ok := wantFDB[mac]; ok && want == host {
			delete(wantFDB, mac)
			keptMACs[mac] = true
			continue
		}
		if _, ok := wantFDB[mac]; !ok && keep(host) {
			keptMACs[mac] = true
			continue
		}
		err := d.h.NeighDel(&netlink.Neigh{
			LinkIndex: cur.index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
			HardwareAddr: mac.HW(), IP: net.IP(host.AsSlice()),
		})
		if err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("removing FDB entry %s: %w", mac.HW(), err))
			continue
		}
		delete(cur.fdb, mac)
	}
	for mac, host := range wantFDB {
		err := d.h.NeighSet(&netlink.Neigh{
			LinkIndex: cur.index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
			State: netlink.NUD_PERMANENT, HardwareAddr: mac.HW(), IP: net.IP(host.AsSlice()),
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("adding FDB entry %s → %s: %w", mac.HW(), host, err))
			continue
		}
		cur.fdb[mac] = host
		keptMACs[mac] = true
	}
	for ip, mac := range cur.neigh {
		if want, ok := wantNeigh[ip]; ok && want == mac {
			delete(wantNeigh, ip)
			continue
		}
		if _, ok := wantNeigh[ip]; !ok && keptMACs[mac] {
			continue
		}
		err := d.h.NeighDel(&netlink.Neigh{
			LinkIndex: cur.index, Family: unix.AF_INET, HardwareAddr: mac.HW(), IP: net.IP(ip.AsSlice()),
		})
		if err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("removing neighbour %s: %w", ip, err))
			continue
		}
		delete(cur.neigh, ip)
	}
	for ip, mac := range wantNeigh {
		err := d.h.NeighSet(&netlink.Neigh{
			LinkIndex: cur.index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
			HardwareAddr: mac.HW(), IP: net.IP(ip.AsSlice()),
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("adding neighbour %s → %s: %w", ip, mac.HW(), err))
			continue
		}
		cur.neigh[ip] = mac
	}
	return errors.Join(errs...)
}

// Peers lists the remote endpoints the device holds: every permanent
// neighbour entry whose MAC has an FDB entry, with the host it sends to.
func (d *DataPath) Peers(n Network) ([]Peer, error) {
	link, err := d.h.LinkByName(LinkName(n.VNI))
	if err != nil {
		return nil, fmt.Errorf("network %s has no device %s: %w", n.ID, LinkName(n.VNI), err)
	}
	d.peersMu.Lock()
	defer d.peersMu.Unlock()
	cur, err := d.installedLocked(n.VNI, link.Attrs().Index)
	if err != nil {
		return nil, err
	}
	var out []Peer
	for ip, mac := range cur.neigh {
		host, ok := cur.fdb[mac]
		if !ok {
			continue
		}
		out = append(out, Peer{IP: ip, MAC: mac.HW(), Host: host})
	}
	return out, nil
}

// PeerCount is how many remote endpoints the device holds (FDB entries):
// what SetPeers installed, or the kernel's count if it has not run on the
// device since the last Reconcile.
func (d *DataPath) PeerCount(n Network) (int, error) {
	link, err := d.h.LinkByName(LinkName(n.VNI))
	if err != nil {
		return 0, err
	}
	d.peersMu.Lock()
	defer d.peersMu.Unlock()
	if cur, ok := d.peers[n.VNI]; ok && cur.index == link.Attrs().Index {
		return len(cur.fdb), nil
	}
	fdb, err := d.h.NeighList(link.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		return 0, err
	}
	return len(fdb), nil
}
