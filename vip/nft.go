package vip

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is vxsec's table in a container's network namespace.
const TableName = "vxsec_vip"

// chainName is its one chain, at the NAT hook of locally sent packets: the
// container is the client, and its connections to a VIP start there.
const chainName = "out"

// Program makes vxsec's table in the network namespace open as fd hold
// the DNAT of services, in one transaction: any table there before is
// replaced. No service removes the table.
func Program(fd int, services []Service) error {
	c, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		return fmt.Errorf("netlink to the namespace's nftables: %w", err)
	}
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}
	// Add, then delete, then add again: one transaction whatever was there.
	c.AddTable(t)
	c.DelTable(t)
	if len(services) > 0 {
		c.AddTable(t)
		ch := c.AddChain(&nftables.Chain{Name: chainName, Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest})
		for _, s := range services {
			for _, r := range rules(s) {
				c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r})
			}
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("programming %d service VIPs: %w", len(services), err)
	}
	return nil
}

// rules DNAT the service's VIP to one of its n backends, each with
// probability 1/n: the i-th rule (from 0) takes the packet with probability
// 1/(n-i), the way iptables' statistic cascade does, so every comparison is
// against zero and the byte order of numgen's register never matters. The
// last backend takes what is left. A service without backends gets no rule:
// its VIP answers nothing, as Docker's does.
func rules(s Service) [][]expr.Any {
	if !s.VIP.Is4() {
		return nil
	}
	vip := s.VIP.As4()
	n := len(s.Backends)
	var out [][]expr.Any
	for i, b := range s.Backends {
		if !b.Is4() {
			continue
		}
		addr := b.As4()
		r := []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: vip[:]},
		}
		if i < n-1 {
			r = append(r,
				&expr.Numgen{Register: 1, Modulus: uint32(n - i), Type: unix.NFT_NG_RANDOM},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 0, 0, 0}})
		}
		r = append(r,
			&expr.Immediate{Register: 1, Data: addr[:]},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1})
		out = append(out, r)
	}
	return out
}

// Service is one service's VIP on one network and its tasks' addresses
// there, sorted.
type Service struct {
	Network  string
	Name     string
	VIP      netip.Addr
	Backends []netip.Addr
}
