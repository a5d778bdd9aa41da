// Package firewall owns vxsec's nftables tables, through netlink, so the
// plugin image needs no iptables or nft binary.
//
// Drop is final in nftables whatever other tables say, so the tables are
// vxsec's own and never depend on rule order in anybody else's chains
// (the fault of CVE-2023-28840). They exist only while a vxsec network
// does, and are programmed before any VXLAN device exists.
package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the name of vxsec's tables, one per family it needs.
const TableName = "vxsec"

// OverlayIfPrefix is the prefix of every overlay device name in the host
// namespace; the host must accept nothing that arrives on one.
const OverlayIfPrefix = "vxsec-"

// nfARPIn is NF_ARP_IN: the ARP family numbers its hooks apart from inet.
const nfARPIn = 0

// State is the firewall vxsec wants.
type State struct {
	// Active is true while at least one vxsec network exists.
	Active bool
	// DataPorts are the UDP ports VXLAN arrives on.
	DataPorts []uint16
	// SecurePorts are the UDP ports (also in DataPorts) of encrypted VXLAN,
	// accepted only after IPsec decrypted it: cleartext sent there, even
	// from a member's address, is dropped.
	SecurePorts []uint16
	// Members are the cluster's hosts, the only ones VXLAN is accepted
	// from. Nil keeps the members the kernel has (a restarted daemon does
	// not know them yet, and must not drop its peers' traffic meanwhile).
	Members []netip.Addr
}

// Names of the member sets.
const (
	setMembers4 = "members4"
	setMembers6 = "members6"
)

// Firewall programs the tables in the namespace it was created in.
type Firewall struct {
	mu sync.Mutex
	// ports is the DataPorts of the tables this process built; nil until
	// it built them, so the first Apply of every run rebuilds.
	ports, secure []uint16
}

// New returns a Firewall.
func New() *Firewall { return &Firewall{} }

var families = []nftables.TableFamily{nftables.TableFamilyINet, nftables.TableFamilyARP}

// Apply makes the kernel's tables what s says, in one atomic transaction:
// an existing table is replaced whole, so there is no moment without rules.
//
// When only the members changed, just the sets are rewritten (still in one
// transaction), so the drop counters keep counting.
func (f *Firewall) Apply(s State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	existing, err := f.tables(conn)
	if err != nil {
		return err
	}
	if s.Active && existing[nftables.TableFamilyINet] && existing[nftables.TableFamilyARP] &&
		f.ports != nil && slices.Equal(f.ports, s.DataPorts) && slices.Equal(f.secure, s.SecurePorts) {
		if s.Members == nil {
			return nil
		}
		// Every Join lands here: reading the sets is much cheaper than a
		// transaction that rewrites them unchanged.
		if cur, err := f.currentMembers(conn); err == nil && sameAddrs(cur, s.Members) {
			return nil
		}
		inet := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
		for _, fam := range []bool{false, true} {
			set, err := conn.GetSetByName(inet, memberSetName(fam))
			if err != nil {
				return fmt.Errorf("finding member set: %w", err)
			}
			conn.FlushSet(set)
			if err := conn.SetAddElements(set, memberElements(s.Members, fam)); err != nil {
				return fmt.Errorf("updating member set: %w", err)
			}
		}
		if err := conn.Flush(); err != nil {
			return fmt.Errorf("updating nftables member sets: %w", err)
		}
		return nil
	}
	members := s.Members
	if members == nil && existing[nftables.TableFamilyINet] {
		if members, err = f.currentMembers(conn); err != nil {
			return err
		}
	}
	for _, fam := range families {
		if existing[fam] {
			conn.DelTable(&nftables.Table{Name: TableName, Family: fam})
		}
	}
	if s.Active {
		if err := addGuard(conn, s.DataPorts, s.SecurePorts, members); err != nil {
			return err
		}
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("programming nftables table %s: %w", TableName, err)
	}
	f.ports, f.secure = nil, nil
	if s.Active {
		f.ports, f.secure = slices.Clone(s.DataPorts), slices.Clone(s.SecurePorts)
		if f.ports == nil {
			f.ports = []uint16{}
		}
	}
	return nil
}

// currentMembers reads the member sets the kernel holds.
func (f *Firewall) currentMembers(conn *nftables.Conn) ([]netip.Addr, error) {
	inet := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	var out []netip.Addr
	for _, v6 := range []bool{false, true} {
		set, err := conn.GetSetByName(inet, memberSetName(v6))
		if err != nil {
			continue // an older table without sets: no members to keep
		}
		elems, err := conn.GetSetElements(set)
		if err != nil {
			return nil, fmt.Errorf("reading member set: %w", err)
		}
		for _, e := range elems {
			if a, ok := netip.AddrFromSlice(e.Key); ok {
				out = append(out, a)
			}
		}
	}
	return out, nil
}

// Members returns the member addresses the kernel holds, for status and tests.
func (f *Firewall) Members() ([]netip.Addr, error) {
	conn, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("opening nftables: %w", err)
	}
	return f.currentMembers(conn)
}

func memberSetName(v6 bool) string {
	if v6 {
		return setMembers6
	}
	return setMembers4
}

// sameAddrs reports whether a and b hold the same addresses, in any order.
func sameAddrs(a, b []netip.Addr) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, netip.Addr.Compare)
	slices.SortFunc(b, netip.Addr.Compare)
	return slices.Equal(a, b)
}

func memberElements(members []netip.Addr, v6 bool) []nftables.SetElement {
	var out []nftables.SetElement
	for _, m := range members {
		if m.Is6() == v6 {
			out = append(out, nftables.SetElement{Key: m.AsSlice()})
		}
	}
	return out
}

func (f *Firewall) tables(conn *nftables.Conn) (map[nftables.TableFamily]bool, error) {
	out := map[nftables.TableFamily]bool{}
	for _, fam := range families {
		ts, err := conn.ListTablesOfFamily(fam)
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("listing nftables tables: %w", err)
		}
		for _, t := range ts {
			if t.Name == TableName {
				out[fam] = true
			}
		}
	}
	return out, nil
}

// Present reports which of vxsec's tables exist, for checks and tests.
func (f *Firewall) Present() (bool, error) {
	conn, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("opening nftables: %w", err)
	}
	t, err := f.tables(conn)
	return len(t) > 0, err
}

// addGuard queues the tables: VXLAN is accepted only from members; the
// host neither receives (IP, IPv6 or ARP) nor forwards anything on an
// overlay device. Containers talk to each other below the host's IP stack,
// so the latter costs them nothing.
func addGuard(conn *nftables.Conn, ports, secure []uint16, members []netip.Addr) error {
	inet := conn.AddTable(&nftables.Table{Name: TableName, Family: nftables.TableFamilyINet})
	sets := map[bool]*nftables.Set{}
	for _, v6 := range []bool{false, true} {
		set := &nftables.Set{Table: inet, Name: memberSetName(v6), KeyType: nftables.TypeIPAddr}
		if v6 {
			set.KeyType = nftables.TypeIP6Addr
		}
		if err := conn.AddSet(set, memberElements(members, v6)); err != nil {
			return fmt.Errorf("adding member set: %w", err)
		}
		sets[v6] = set
	}
	in := conn.AddChain(&nftables.Chain{
		Name: "input", Table: inet, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityRef(-10),
	})
	for _, port := range secure {
		conn.AddRule(&nftables.Rule{Table: inet, Chain: in, Exprs: dropCleartext(port)})
	}
	if len(secure) > 0 {
		// The sender's own lock: encrypted VXLAN whose route carries no
		// xfrm transform (its policies are missing, flushed or broken)
		// never reaches the wire.
		post := conn.AddChain(&nftables.Chain{
			Name: "postrouting", Table: inet, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityRef(-10),
		})
		for _, port := range secure {
			conn.AddRule(&nftables.Rule{Table: inet, Chain: post, Exprs: dropUnencrypted(port)})
		}
	}
	for _, port := range ports {
		for _, v6 := range []bool{false, true} {
			conn.AddRule(&nftables.Rule{Table: inet, Chain: in, Exprs: dropNonMember(port, v6, sets[v6])})
		}
	}
	conn.AddRule(&nftables.Rule{Table: inet, Chain: in, Exprs: dropOnIf(expr.MetaKeyIIFNAME)})
	fwd := conn.AddChain(&nftables.Chain{
		Name: "forward", Table: inet, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityRef(-10),
	})
	conn.AddRule(&nftables.Rule{Table: inet, Chain: fwd, Exprs: dropOnIf(expr.MetaKeyIIFNAME)})
	conn.AddRule(&nftables.Rule{Table: inet, Chain: fwd, Exprs: dropOnIf(expr.MetaKeyOIFNAME)})

	arp := conn.AddTable(&nftables.Table{Name: TableName, Family: nftables.TableFamilyARP})
	arpIn := conn.AddChain(&nftables.Chain{
		Name: "input", Table: arp, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookRef(nfARPIn), Priority: nftables.ChainPriorityFilter,
	})
	conn.AddRule(&nftables.Rule{Table: arp, Chain: arpIn, Exprs: dropOnIf(expr.MetaKeyIIFNAME)})
	return nil
}

// dropNonMember is `meta nfproto ipv4 udp dport PORT ip saddr != @members4
// counter drop` (or its IPv6 twin).
func dropNonMember(port uint16, v6 bool, set *nftables.Set) []expr.Any {
	proto, saddrOff, saddrLen := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4)
	if v6 {
		proto, saddrOff, saddrLen = unix.NFPROTO_IPV6, 8, 16
	}
	return countedDrop(
		[]expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		},
		udpDport(port),
		[]expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: saddrOff, Len: saddrLen},
			&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID, Invert: true},
		},
	)
}

// udpDport is `udp dport PORT`.
func udpDport(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, port)},
	}
}

// countedDrop is a rule of the given matches, in order, ending in
// `counter drop`.
func countedDrop(matches ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, m := range matches {
		out = append(out, m...)
	}
	return append(out, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
}

// metaKeySecpath is NFT_META_SECPATH, which google/nftables does not name:
// one byte, 1 when the packet came through an IPsec SA.
const metaKeySecpath = expr.MetaKey(25)

// dropCleartext is `udp dport PORT meta secpath missing counter drop`:
// after ESP is removed a packet is seen again with its secpath set, so only
// what arrived in cleartext is dropped. The kernel's inbound policy refuses
// the same packets; this is the second lock, and it counts.
func dropCleartext(port uint16) []expr.Any {
	return countedDrop(udpDport(port), []expr.Any{
		&expr.Meta{Key: metaKeySecpath, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0}},
	})
}

// rtKeyXFRM is NFT_RT_XFRM: 1 when the packet's route is an xfrm bundle,
// i.e. IPsec will transform it before it leaves.
const rtKeyXFRM = expr.RtKey(4)

// dropUnencrypted is `udp dport PORT rt ipsec missing counter drop`, in
// postrouting: a packet bound for IPsec is seen here before its transform
// with its route set to the bundle, so only what would leave in cleartext
// is dropped (the ESP packet after the transform is no UDP).
func dropUnencrypted(port uint16) []expr.Any {
	return countedDrop(udpDport(port), []expr.Any{
		&expr.Rt{Key: rtKeyXFRM, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0}},
	})
}

// dropOnIf is `meta iifname|oifname "vxsec-*" counter drop`: comparing only
// the prefix's bytes is how nft spells a wildcard.
func dropOnIf(key expr.MetaKey) []expr.Any {
	return countedDrop([]expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(OverlayIfPrefix)},
	})
}
