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
	idx := link.Attrs().Index
	wantFDB := map[string]netip.Addr{}
	wantNeigh := map[netip.Addr]string{}
	for _, p := range peers {
		wantFDB[p.MAC.String()] = p.Host
		wantNeigh[p.IP] = p.MAC.String()
	}

	var errs []error
	fdb, err := d.h.NeighList(idx, unix.AF_BRIDGE)
	if err != nil {
		return fmt.Errorf("listing FDB of %s: %w", LinkName(n.VNI), err)
	}
	keptMACs := map[string]bool{}
	for _, e := range fdb {
		mac := e.HardwareAddr.String()
		host, _ := netip.AddrFromSlice(e.IP)
		host = host.Unmap()
		if want, ok := wantFDB[mac]; ok && want == host {
			delete(wantFDB, mac)
			keptMACs[mac] = true
			continue
		}
		if _, ok := wantFDB[mac]; !ok && keep(host) {
			keptMACs[mac] = true
			continue
		}
		if err := d.h.NeighDel(&e); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("removing FDB entry %s: %w", mac, err))
		}
	}
	for mac, host := range wantFDB {
		hw, _ := net.ParseMAC(mac)
		err := d.h.NeighSet(&netlink.Neigh{
			LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
			State: netlink.NUD_PERMANENT, HardwareAddr: hw, IP: net.IP(host.AsSlice()),
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("adding FDB entry %s → %s: %w", mac, host, err))
		}
		keptMACs[mac] = true
	}

	neighs, err := d.h.NeighList(idx, unix.AF_INET)
	if err != nil {
		return fmt.Errorf("listing neighbours of %s: %w", LinkName(n.VNI), err)
	}
	for _, e := range neighs {
		ip, _ := netip.AddrFromSlice(e.IP)
		ip = ip.Unmap()
		mac := e.HardwareAddr.String()
		if want, ok := wantNeigh[ip]; ok && want == mac && e.State&netlink.NUD_PERMANENT != 0 {
			delete(wantNeigh, ip)
			continue
		}
		if _, ok := wantNeigh[ip]; !ok && keptMACs[mac] {
			continue
		}
		if err := d.h.NeighDel(&e); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("removing neighbour %s: %w", ip, err))
		}
	}
	for ip, mac := range wantNeigh {
		hw, _ := net.ParseMAC(mac)
		err := d.h.NeighSet(&netlink.Neigh{
			LinkIndex: idx, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
			HardwareAddr: hw, IP: net.IP(ip.AsSlice()),
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("adding neighbour %s → %s: %w", ip, mac, err))
		}
	}
	return errors.Join(errs...)
}

// PeerCount is how many remote endpoints the device knows (FDB entries).
func (d *DataPath) PeerCount(n Network) (int, error) {
	link, err := d.h.LinkByName(LinkName(n.VNI))
	if err != nil {
		return 0, err
	}
	fdb, err := d.h.NeighList(link.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		return 0, err
	}
	return len(fdb), nil
}
