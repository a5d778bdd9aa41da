package vxlan

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// Underlay describes the host's side of the tunnel.
type Underlay struct {
	Addr      netip.Addr
	Interface string
	MTU       int
}

// FindUnderlay returns the interface that holds addr, or, when addr is not
// valid, the first global address of the interface of the default route.
func FindUnderlay(addr netip.Addr) (Underlay, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return Underlay{}, fmt.Errorf("listing devices: %w", err)
	}
	if addr.IsValid() {
		for _, l := range links {
			addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
			if err != nil {
				continue
			}
			for _, a := range addrs {
				if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr {
					return Underlay{Addr: addr, Interface: l.Attrs().Name, MTU: l.Attrs().MTU}, nil
				}
			}
		}
		return Underlay{}, fmt.Errorf("advertise address %s is not an address of this host", addr)
	}
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlink.RouteList(nil, family)
		if err != nil {
			return Underlay{}, fmt.Errorf("listing routes: %w", err)
		}
		for _, r := range routes {
			if r.Dst != nil && !isDefault(r.Dst) {
				continue
			}
			link, err := netlink.LinkByIndex(r.LinkIndex)
			if err != nil {
				continue
			}
			addrs, err := netlink.AddrList(link, family)
			if err != nil {
				continue
			}
			for _, a := range addrs {
				ip, ok := netip.AddrFromSlice(a.IP)
				if ok && ip.Unmap().IsGlobalUnicast() {
					return Underlay{Addr: ip.Unmap(), Interface: link.Attrs().Name, MTU: link.Attrs().MTU}, nil
				}
			}
		}
	}
	return Underlay{}, errors.New("no default route with a global address: set the advertise address (VXSEC_ADVERTISE_ADDR)")
}

func isDefault(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}
