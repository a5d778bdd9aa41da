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
	// Addr is the address the host advertises: its name in the cluster,
	// and where peers send to.
	Addr netip.Addr
	// Local is the address of Interface the host sends from and binds
	// to: Addr, unless the host is behind NAT (BehindNAT).
	Local     netip.Addr
	Interface string
	MTU       int
}

// BehindNAT reports whether the advertised address is not the host's own:
// a router in front of it forwards what peers send to Addr to Local, and
// rewrites what leaves from Local to come from Addr.
func (u Underlay) BehindNAT() bool { return u.Local.IsValid() && u.Local != u.Addr }

// FindUnderlay returns the interface that holds addr, or, when addr is not
// valid, the first global address of the interface of the default route.
// An addr that is not the host's own is taken as a public address a NAT in
// front of the host forwards to it: the default route's address of the
// same family is then Local.
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
					return Underlay{Addr: addr, Local: addr, Interface: l.Attrs().Name, MTU: l.Attrs().MTU}, nil
				}
			}
		}
		u, err := defaultRoute(addr.Is6())
		if err != nil {
			return Underlay{}, fmt.Errorf("advertise address %s is not an address of this host, so it must be the public address of a NAT in front of it, "+
				"and the host needs a default route over %s with an address of its own to reach it: %w", addr, familyName(addr.Is6()), err)
		}
		u.Addr = addr
		return u, nil
	}
	for _, v6 := range []bool{false, true} {
		if u, err := defaultRoute(v6); err == nil {
			return u, nil
		}
	}
	return Underlay{}, errors.New("no default route with a global address: set the advertise address (VXSEC_ADVERTISE_ADDR)")
}

func familyName(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

// defaultRoute is the first global address of the interface of a default
// route of one family.
func defaultRoute(v6 bool) (Underlay, error) {
	family := netlink.FAMILY_V4
	if v6 {
		family = netlink.FAMILY_V6
	}
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
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap().IsGlobalUnicast() {
				return Underlay{Addr: ip.Unmap(), Local: ip.Unmap(), Interface: link.Attrs().Name, MTU: link.Attrs().MTU}, nil
			}
		}
	}
	return Underlay{}, errors.New("no default route with a global address")
}

func isDefault(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}
