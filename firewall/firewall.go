package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/vxsec/vxsec/pathprobe"
	"github.com/vxsec/vxsec/vxlan"
)

// TableName is the name of vxsec's tables, one per family it needs.
const TableName = "vxsec"

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
	// EncapPorts are the UDP ports ESP in UDP arrives on: accepted only
	// from members, like VXLAN (what decrypts there meets SecurePorts'
	// rules as native ESP's does).
	EncapPorts []uint16
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

// ESPSeenFor is how long a member stays in the sets of members whose
// native ESP (IP protocol 50) reached this host (ESPSeen), after the last
// such packet: data or a probe (package espprobe sends one every
// espprobe.Every).
const ESPSeenFor = 20 * time.Second

// PathSeenFor is how long a member stays in the sets of members whose path
// probes (package pathprobe, one round every pathprobe.Every) reached this
// host's data port, after the last one.
const PathSeenFor = 20 * time.Second

// pathSetName names the sets of members whose small (full false) or
// full-size path probes arrived.
func pathSetName(full, v6 bool) string {
	name := "path"
	if full {
		name = "pathfull"
	}
	if v6 {
		return name + "6"
	}
	return name + "4"
}

func espSetName(v6 bool) string {
	if v6 {
		return "esp6"
	}
	return "esp4"
}

// Firewall programs the tables in the namespace it was created in.
type Firewall struct {
	mu sync.Mutex
	// ports is the DataPorts of the tables this process built; nil until
	// it built them, so the first Apply of every run rebuilds.
	ports, secure, encap []uint16
	// builtAt is when the tables holding the ESP and path sets were built:
	// a younger record than ESPSeenFor has not heard every member yet.
	builtAt time.Time
}

// New returns a Firewall.
func New() *Firewall { return &Firewall{} }

// open returns one netlink connection for all of a call's requests, and
// its closer. A Conn made without AsLasting dials a socket, and seeds a
// random source, for each request: the check at every Join makes six.
func open() (*nftables.Conn, func(), error) {
	conn, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, nil, fmt.Errorf("opening nftables: %w", err)
	}
	return conn, func() { conn.CloseLasting() }, nil
}

var families = []nftables.TableFamily{nftables.TableFamilyINet, nftables.TableFamilyARP}

// Apply makes the kernel's tables what s says, in one atomic transaction:
// an existing table is replaced whole, so there is no moment without rules.
//
// When only the members changed, just the sets are rewritten (still in one
// transaction), so the drop counters keep counting.
func (f *Firewall) Apply(s State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	conn, done, err := open()
	if err != nil {
		return err
	}
	defer done()
	existing, err := f.tables(conn)
	if err != nil {
		return err
	}
	if s.Active && existing[nftables.TableFamilyINet] && existing[nftables.TableFamilyARP] &&
		f.ports != nil && slices.Equal(f.ports, s.DataPorts) && slices.Equal(f.secure, s.SecurePorts) && slices.Equal(f.encap, s.EncapPorts) {
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
		if err := addGuard(conn, s.DataPorts, s.SecurePorts, s.EncapPorts, members); err != nil {
			return err
		}
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("programming nftables table %s: %w", TableName, err)
	}
	f.ports, f.secure, f.encap = nil, nil, nil
	f.builtAt = time.Now()
	if s.Active {
		f.ports, f.secure, f.encap = slices.Clone(s.DataPorts), slices.Clone(s.SecurePorts), slices.Clone(s.EncapPorts)
		if f.ports == nil {
			f.ports = []uint16{}
		}
	}
	return nil
}

// currentMembers reads the member sets the kernel holds.
func (f *Firewall) currentMembers(conn *nftables.Conn) ([]netip.Addr, error) {
	// An older table without sets has no members to keep.
	return setAddrs(conn, memberSetName)
}

// setAddrs reads the addresses of the table's set named name(false) and
// name(true) (IPv4, IPv6); a missing set holds none.
func setAddrs(conn *nftables.Conn, name func(v6 bool) string) ([]netip.Addr, error) {
	inet := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	var out []netip.Addr
	for _, v6 := range []bool{false, true} {
		set, err := conn.GetSetByName(inet, name(v6))
		if err != nil {
			continue
		}
		elems, err := conn.GetSetElements(set)
		if err != nil {
			return nil, fmt.Errorf("reading set %s: %w", name(v6), err)
		}
		for _, e := range elems {
			if a, ok := netip.AddrFromSlice(e.Key); ok {
				out = append(out, a)
			}
		}
	}
	return out, nil
}

// ESPSeen returns the members whose native ESP reached this host in the
// last ESPSeenFor (none while no encrypted port is guarded), and since
// when the sets have been recording: until ESPSeenFor after that, a member
// missing from them may just not have been heard yet.
func (f *Firewall) ESPSeen() ([]netip.Addr, time.Time, error) {
	f.mu.Lock()
	since := f.builtAt
	f.mu.Unlock()
	conn, done, err := open()
	if err != nil {
		return nil, since, err
	}
	defer done()
	// No set: no encrypted network, or a table of an older release.
	addrs, err := setAddrs(conn, espSetName)
	return addrs, since, err
}

// PathRecord is what this host's firewall recorded of members' path
// probes (package pathprobe).
type PathRecord struct {
	// Recording is true while the sets exist: while a vxsec network does.
	Recording bool
	// Since is when the sets were made: until PathSeenFor after it, a
	// member missing from them may just not have been heard yet.
	Since time.Time
	// Small and Full are the members whose small and full-size probes
	// arrived in the last PathSeenFor.
	Small, Full []netip.Addr
}

// PathSeen returns the record of members' path probes.
func (f *Firewall) PathSeen() (PathRecord, error) {
	f.mu.Lock()
	rec := PathRecord{Since: f.builtAt, Recording: f.ports != nil}
	f.mu.Unlock()
	if !rec.Recording {
		return rec, nil
	}
	conn, done, err := open()
	if err != nil {
		return rec, err
	}
	defer done()
	if rec.Small, err = setAddrs(conn, func(v6 bool) string { return pathSetName(false, v6) }); err != nil {
		return rec, err
	}
	if rec.Full, err = setAddrs(conn, func(v6 bool) string { return pathSetName(true, v6) }); err != nil {
		return rec, err
	}
	return rec, nil
}

// Members returns the member addresses the kernel holds, for status and tests.
func (f *Firewall) Members() ([]netip.Addr, error) {
	conn, done, err := open()
	if err != nil {
		return nil, err
	}
	defer done()
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
	conn, done, err := open()
	if err != nil {
		return false, err
	}
	defer done()
	t, err := f.tables(conn)
	return len(t) > 0, err
}

// Locks name the guard's rules by what each one stops; a rule's name is its
// nftables comment, so `vxsec status`, `nft list` and the tests all count
// the same thing.
const (
	// LockNonMember drops VXLAN from an address that is no cluster member.
	LockNonMember = "non-member"
	// LockSpoofedMember drops VXLAN that claims a member's address but
	// arrived on an interface the route back to that member does not use
	// (a container on this host forging a peer's address).
	LockSpoofedMember = "spoofed-member"
	// LockCleartext drops encrypted-port VXLAN that did not come through an
	// IPsec SA.
	LockCleartext = "cleartext"
	// LockUnencrypted drops encrypted-port VXLAN about to leave without an
	// IPsec transform.
	LockUnencrypted = "unencrypted-out"
	// LockLocalInjection drops VXLAN written by a socket of this host's
	// namespace (any user's UDP or raw socket) to a member or to this host.
	LockLocalInjection = "local-injection"
	// LockForwardedInjection drops VXLAN this host would forward to a
	// member (a container of any other network, NATed or routed).
	LockForwardedInjection = "forwarded-injection"
	// LockOverlayDevice drops what the host would receive or forward on an
	// overlay device.
	LockOverlayDevice = "overlay-device"
)

// Locks lists every lock, in the order status shows them.
func Locks() []string {
	return []string{LockNonMember, LockSpoofedMember, LockCleartext, LockUnencrypted,
		LockLocalInjection, LockForwardedInjection, LockOverlayDevice}
}

// addGuard queues the tables: VXLAN is accepted only from members, on the
// interface that leads back to them, and leaves only when the kernel's VXLAN
// devices made it; the host neither receives (IP, IPv6 or ARP) nor forwards
// anything on an overlay device. Containers talk to each other below the
// host's IP stack, so the latter costs them nothing.
func addGuard(conn *nftables.Conn, ports, secure, encap []uint16, members []netip.Addr) error {
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
	chain := func(name string, hook *nftables.ChainHook) *nftables.Chain {
		return conn.AddChain(&nftables.Chain{
			Name: name, Table: inet, Type: nftables.ChainTypeFilter,
			Hooknum: hook, Priority: nftables.ChainPriorityRef(-10),
		})
	}
	add := func(c *nftables.Chain, lock string, matches ...[]expr.Any) {
		conn.AddRule(&nftables.Rule{Table: inet, Chain: c, Exprs: countedDrop(matches...),
			UserData: userdata.AppendString(nil, userdata.TypeComment, lock)})
	}
	in := chain("input", nftables.ChainHookInput)
	for _, port := range secure {
		add(in, LockCleartext, udpDport(port), secpathMissing())
	}
	if len(secure) > 0 {
		// Which members' native ESP arrives: no verdict, only a dynamic
		// set each such packet refreshes (ESPSeen), so that the kernel,
		// not a copy of every ESP packet to user space, keeps the record.
		for _, v6 := range []bool{false, true} {
			seen := &nftables.Set{Table: inet, Name: espSetName(v6), KeyType: nftables.TypeIPAddr,
				Dynamic: true, HasTimeout: true, Timeout: ESPSeenFor}
			if v6 {
				seen.KeyType = nftables.TypeIP6Addr
			}
			if err := conn.AddSet(seen, nil); err != nil {
				return fmt.Errorf("adding ESP set: %w", err)
			}
			exprs := append(append(nfproto(v6), l4proto(unix.IPPROTO_ESP)...), saddrIn(v6, sets[v6], false)...)
			exprs = append(exprs, &expr.Dynset{SrcRegKey: 1, SetName: seen.Name, SetID: seen.ID,
				Operation: uint32(unix.NFT_DYNSET_OP_UPDATE), Timeout: ESPSeenFor})
			conn.AddRule(&nftables.Rule{Table: inet, Chain: in, Exprs: exprs,
				UserData: userdata.AppendString(nil, userdata.TypeComment, "esp-seen")})
		}
	}
	if len(secure) > 0 {
		// The sender's own lock: encrypted VXLAN whose route carries no
		// xfrm transform (its policies are missing, flushed or broken)
		// never reaches the wire.
		post := chain("postrouting", nftables.ChainHookPostrouting)
		for _, port := range secure {
			add(post, LockUnencrypted, udpDport(port), rtIPsecMissing())
		}
	}
	for _, port := range ports {
		for _, v6 := range []bool{false, true} {
			add(in, LockNonMember, nfproto(v6), udpDport(port), saddrIn(v6, sets[v6], true))
		}
		// Strict reverse path for the data port alone: the host's own
		// rp_filter is the admin's (and Docker's) business, and loose or
		// off on many hosts.
		add(in, LockSpoofedMember, udpDport(port), reversePathMissing())
	}
	for _, port := range encap {
		for _, v6 := range []bool{false, true} {
			add(in, LockNonMember, nfproto(v6), udpDport(port), saddrIn(v6, sets[v6], true))
		}
	}
	// Path probes from members (package pathprobe) to the plain data
	// ports: no verdict, only dynamic sets each probe refreshes
	// (PathSeen). After the drops above, so that neither a stranger nor a
	// container forging a member's address is recorded.
	if err := addPathRecord(conn, inet, in, plainPorts(ports, secure), sets); err != nil {
		return err
	}
	add(in, LockOverlayDevice, onIf(expr.MetaKeyIIFNAME))

	// What leaves: the kernel's VXLAN devices write with no socket of this
	// namespace attached (their frames carry the container's socket, of
	// another namespace, or none), so a data-port datagram that has one
	// was written by a process here, whatever its user or socket type.
	out := chain("output", nftables.ChainHookOutput)
	fwd := chain("forward", nftables.ChainHookForward)
	// The one exception to the local-injection lock: this host's own path
	// probes, which carry vxsec's socket mark (setting one needs
	// CAP_NET_ADMIN, or CAP_NET_RAW since Linux 5.17: no unprivileged user
	// can) and VXLAN's VNI 0, which no network uses, so no receiver's VXLAN
	// device takes them in: whoever else sends one puts no frame into any
	// network. Plain data ports only.
	for _, port := range plainPorts(ports, secure) {
		for _, magic := range []uint32{pathprobe.MagicSmall, pathprobe.MagicFull} {
			exprs := append(udpDport(port), probeShape(magic)...)
			exprs = append(exprs, &expr.Verdict{Kind: expr.VerdictAccept})
			conn.AddRule(&nftables.Rule{Table: inet, Chain: out, Exprs: exprs,
				UserData: userdata.AppendString(nil, userdata.TypeComment, "path-probe")})
		}
	}
	for _, port := range ports {
		for _, v6 := range []bool{false, true} {
			add(out, LockLocalInjection, nfproto(v6), udpDport(port), daddrIn(v6, sets[v6]), hasLocalSocket())
			// Forwarded datagrams never come from a VXLAN device of this
			// host: to a member they can only be injections.
			add(fwd, LockForwardedInjection, nfproto(v6), udpDport(port), daddrIn(v6, sets[v6]))
		}
		// To this host itself: loopback carries it, and it would arrive
		// with the host's own (member) address.
		add(out, LockLocalInjection, udpDport(port), onLoopback(), hasLocalSocket())
	}
	add(fwd, LockOverlayDevice, onIf(expr.MetaKeyIIFNAME))
	add(fwd, LockOverlayDevice, onIf(expr.MetaKeyOIFNAME))

	arp := conn.AddTable(&nftables.Table{Name: TableName, Family: nftables.TableFamilyARP})
	arpIn := conn.AddChain(&nftables.Chain{
		Name: "input", Table: arp, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookRef(nfARPIn), Priority: nftables.ChainPriorityFilter,
	})
	conn.AddRule(&nftables.Rule{Table: arp, Chain: arpIn, Exprs: countedDrop(onIf(expr.MetaKeyIIFNAME)),
		UserData: userdata.AppendString(nil, userdata.TypeComment, LockOverlayDevice)})
	return nil
}

// plainPorts are the data ports that are not secure: where path probes go.
func plainPorts(ports, secure []uint16) []uint16 {
	var out []uint16
	for _, p := range ports {
		if !slices.Contains(secure, p) {
			out = append(out, p)
		}
	}
	return out
}

// addPathRecord adds the dynamic sets of members whose path probes arrived
// and the input rules that fill them: UDP to a plain data port, from a
// member, shaped as a probe (`@th,64,64 0x0800000000000000 @th,128,32
// MAGIC update @pathN { ip saddr }`).
func addPathRecord(conn *nftables.Conn, inet *nftables.Table, in *nftables.Chain, ports []uint16, members map[bool]*nftables.Set) error {
	for _, v6 := range []bool{false, true} {
		for _, full := range []bool{false, true} {
			seen := &nftables.Set{Table: inet, Name: pathSetName(full, v6), KeyType: nftables.TypeIPAddr,
				Dynamic: true, HasTimeout: true, Timeout: PathSeenFor}
			if v6 {
				seen.KeyType = nftables.TypeIP6Addr
			}
			if err := conn.AddSet(seen, nil); err != nil {
				return fmt.Errorf("adding path probe set: %w", err)
			}
			magic := pathprobe.MagicSmall
			if full {
				magic = pathprobe.MagicFull
			}
			for _, port := range ports {
				exprs := append(append(nfproto(v6), udpDport(port)...), payloadIs(pathprobe.VXLANHeader(), 8)...)
				exprs = append(exprs, payloadIs(binary.BigEndian.AppendUint32(nil, magic), 16)...)
				// The source last: the set update takes register 1.
				exprs = append(exprs, saddrIn(v6, members[v6], false)...)
				exprs = append(exprs, &expr.Dynset{SrcRegKey: 1, SetName: seen.Name, SetID: seen.ID,
					Operation: uint32(unix.NFT_DYNSET_OP_UPDATE), Timeout: PathSeenFor})
				conn.AddRule(&nftables.Rule{Table: inet, Chain: in, Exprs: exprs,
					UserData: userdata.AppendString(nil, userdata.TypeComment, "path-seen")})
			}
		}
	}
	return nil
}

// probeShape matches this host's path probe as it leaves: vxsec's socket
// mark, VXLAN's header with VNI 0, and the magic.
func probeShape(magic uint32) []expr.Any {
	exprs := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.NativeEndian.AppendUint32(nil, pathprobe.Mark)},
	}
	exprs = append(exprs, payloadIs(pathprobe.VXLANHeader(), 8)...)
	return append(exprs, payloadIs(binary.BigEndian.AppendUint32(nil, magic), 16)...)
}

// payloadIs is `@th,OFF*8,len(want)*8 == want`: raw bytes of the transport
// header and what follows (a UDP datagram's payload starts at 8).
func payloadIs(want []byte, off uint32) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: uint32(len(want))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: want},
	}
}

// nfproto is `meta nfproto ipv4|ipv6`.
func nfproto(v6 bool) []expr.Any {
	proto := byte(unix.NFPROTO_IPV4)
	if v6 {
		proto = unix.NFPROTO_IPV6
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

// addrIn is `ip saddr|daddr [!=] @set` (or ip6), after nfproto.
func addrIn(v6, src bool, set *nftables.Set, invert bool) []expr.Any {
	off, n := uint32(16), uint32(4)
	if src {
		off = 12
	}
	if v6 {
		off, n = 24, 16
		if src {
			off = 8
		}
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID, Invert: invert},
	}
}

func saddrIn(v6 bool, set *nftables.Set, invert bool) []expr.Any {
	return addrIn(v6, true, set, invert)
}

func daddrIn(v6 bool, set *nftables.Set) []expr.Any { return addrIn(v6, false, set, false) }

// hasLocalSocket is `meta skuid >= 0`: loading the socket's owner fails,
// and so the rule does not match, unless the packet carries a full socket
// of this namespace with an open file (kernel sockets, such as a VXLAN
// device's, have none).
func hasLocalSocket() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
		&expr.Cmp{Op: expr.CmpOpGte, Register: 1, Data: []byte{0, 0, 0, 0}},
	}
}

// onLoopback is `meta oif lo`, by index: a namespace's loopback is always 1.
func onLoopback() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIF, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.NativeEndian.AppendUint32(nil, 1)},
	}
}

// reversePathMissing is `fib saddr . iif oif missing`: no route back to the
// source through the interface the packet came in on.
func reversePathMissing() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagSADDR: true, FlagIIF: true, ResultOIF: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 0, 0, 0}},
	}
}

// l4proto is `meta l4proto PROTO`.
func l4proto(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
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

// secpathMissing is `meta ipsec missing`: after ESP is removed a packet is
// seen again with its secpath set, so only what arrived in cleartext
// matches. The kernel's inbound policy refuses the same packets; this is the
// second lock, and it counts.
func secpathMissing() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: metaKeySecpath, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0}},
	}
}

// rtKeyXFRM is NFT_RT_XFRM: 1 when the packet's route is an xfrm bundle,
// i.e. IPsec will transform it before it leaves.
const rtKeyXFRM = expr.RtKey(4)

// rtIPsecMissing is `rt ipsec missing`, in postrouting: a packet bound for
// IPsec is seen there before its transform with its route set to the
// bundle, so only what would leave in cleartext matches (the ESP packet
// after the transform is no UDP).
func rtIPsecMissing() []expr.Any {
	return []expr.Any{
		&expr.Rt{Key: rtKeyXFRM, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0}},
	}
}

// onIf is `meta iifname|oifname "vxsec-*"`, every overlay device of the
// host namespace, which the host must accept nothing from (the name comes
// from the data path, so the two cannot drift apart). Comparing only the
// prefix's bytes is how nft spells a wildcard.
func onIf(key expr.MetaKey) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(vxlan.LinkPrefix)},
	}
}

// Drops counts, per lock, the packets the kernel's rules dropped since the
// tables were last built. Locks without a rule (no encrypted network) are
// absent; no table at all gives an empty map.
func (f *Firewall) Drops() (map[string]uint64, error) {
	conn, done, err := open()
	if err != nil {
		return nil, err
	}
	defer done()
	existing, err := f.tables(conn)
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	for _, fam := range families {
		if !existing[fam] {
			continue
		}
		table := &nftables.Table{Name: TableName, Family: fam}
		chains, err := conn.ListChainsOfTableFamily(fam)
		if err != nil {
			return nil, fmt.Errorf("listing nftables chains: %w", err)
		}
		for _, c := range chains {
			if c.Table.Name != TableName {
				continue
			}
			rules, err := conn.GetRules(table, c)
			if err != nil {
				return nil, fmt.Errorf("reading nftables chain %s: %w", c.Name, err)
			}
			for _, r := range rules {
				lock, ok := userdata.GetString(r.UserData, userdata.TypeComment)
				if !ok {
					continue
				}
				for _, e := range r.Exprs {
					if c, ok := e.(*expr.Counter); ok {
						out[lock] += c.Packets
					}
				}
			}
		}
	}
	return out, nil
}
