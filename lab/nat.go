package lab

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/vxsec/vxsec/config"
)

// NAT is the router in front of a host made by AddHostBehindNAT.
type NAT struct {
	// NS is the router's namespace; Public its address on the switch,
	// which the host advertises; Private the host's own address, behind it.
	NS      string
	Public  netip.Addr
	Private netip.Addr
}

// NATForwards are the ports a NAT in front of a vxsec host forwards to it:
// the gossip port (TCP and UDP), the data port and the ESP-in-UDP port
// (UDP), at their defaults. The encrypted port is not among them: its
// VXLAN travels only inside ESP in UDP.
var NATForwards = struct{ TCP, UDP []int }{
	TCP: []int{config.DefaultGossipPort},
	UDP: []int{config.DefaultGossipPort, config.DefaultDataPort, config.DefaultESPUDPPort},
}

// AddHostBehindNAT makes a host that sits behind a NAT router, as a cloud
// instance behind its provider's 1:1 NAT or a host behind a router that
// forwards ports: the router namespace takes the next underlay address on
// the switch (the host's Addr, which it advertises) and masquerades what
// the host sends; it forwards NATForwards to the host, whose only link is
// to the router, with the private address 198.19.<index>.2 (RFC 2544's
// other half) and its default route through it. Nothing else reaches the
// host from the switch. IPv4 only.
func (l *Lab) AddHostBehindNAT(ctx context.Context, name string) (*Host, error) {
	if l.cfg.IPv6 {
		return nil, fmt.Errorf("lab: hosts behind NAT are IPv4 only")
	}
	l.mu.Lock()
	n := len(l.hosts) + 1
	l.mu.Unlock()
	if n > maxHosts {
		return nil, fmt.Errorf("lab: at most %d hosts", maxHosts)
	}
	public := l.Underlay().Addr()
	for i := 0; i < n; i++ {
		public = public.Next()
	}
	idx := int(public.As4()[3])
	nat := &NAT{
		NS:      fmt.Sprintf("%s-%s-nat", l.name, name),
		Public:  public,
		Private: netip.AddrFrom4([4]byte{198, 19, byte(idx), 2}),
	}
	gw := netip.AddrFrom4([4]byte{198, 19, byte(idx), 1})
	h, err := l.newHost(name, public)
	if err != nil {
		return nil, err
	}
	h.NAT = nat
	// The router is an outsider of the lab's (Close removes it); it is
	// wired to the switch as a host is, with the host's port name.
	l.mu.Lock()
	l.nodes = append(l.nodes, &Host{lab: l, Name: name + "-nat", NS: nat.NS, Addr: public})
	l.mu.Unlock()
	if err := l.wire(ctx, nat.NS, public, fmt.Sprintf("p%d", idx), true); err != nil {
		return nil, err
	}
	dnat := fmt.Sprintf("add rule ip natgw pre iifname eth0 ip daddr %s tcp dport { %s } dnat to %s; ", public, ports(NATForwards.TCP), nat.Private) +
		fmt.Sprintf("add rule ip natgw pre iifname eth0 ip daddr %s udp dport { %s } dnat to %s; ", public, ports(NATForwards.UDP), nat.Private)
	steps := [][]string{
		{"ip", "netns", "add", h.NS},
		{"ip", "-n", nat.NS, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", h.NS},
		addrAdd(nat.NS, netip.PrefixFrom(gw, 24), "lan0"),
		{"ip", "-n", nat.NS, "link", "set", "lan0", "up"},
		addrAdd(h.NS, netip.PrefixFrom(nat.Private, 24), "eth0"),
		{"ip", "-n", h.NS, "link", "set", "eth0", "up"},
		{"ip", "-n", h.NS, "link", "set", "lo", "up"},
		{"ip", "-n", h.NS, "route", "add", "default", "via", gw.String()},
		{"ip", "netns", "exec", nat.NS, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"ip", "netns", "exec", nat.NS, "nft", "add table ip natgw; " +
			"add chain ip natgw pre { type nat hook prerouting priority -100; }; " +
			"add chain ip natgw post { type nat hook postrouting priority 100; }; " + dnat +
			fmt.Sprintf("add rule ip natgw post oifname eth0 ip saddr %s masquerade", netip.PrefixFrom(gw, 24).Masked())},
	}
	for _, s := range steps {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return nil, err
		}
	}
	l.mu.Lock()
	l.hosts = append(l.hosts, h)
	l.mu.Unlock()
	return h, nil
}

func ports(p []int) string {
	s := ""
	for i, v := range p {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprint(v)
	}
	return s
}
