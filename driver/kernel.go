package driver

import (
	"net/netip"
	"time"

	"github.com/vxsec/vxsec/announce"
	"github.com/vxsec/vxsec/firewall"
	"github.com/vxsec/vxsec/ipsec"
	"github.com/vxsec/vxsec/vxlan"
)

// DataPath is the VXLAN devices and their entries (*vxlan.DataPath). Its
// methods are safe for concurrent use.
type DataPath interface {
	EnsureNetwork(vxlan.Network) error
	DeleteNetwork(vxlan.Network) error
	// EnsureEndpoint returns the name of the endpoint's link.
	EnsureEndpoint(vxlan.Network, vxlan.Endpoint) (string, error)
	DeleteEndpoint(endpointID string) error
	// Reconcile removes every device not in nets and every endpoint link
	// not in joined, and repairs those that are.
	Reconcile(nets []vxlan.Network, joined map[string]bool) error
	// SetPeers makes a network's remote entries peers; keep says which
	// entries of hosts not in peers to leave alone.
	SetPeers(n vxlan.Network, peers []vxlan.Peer, keep func(host netip.Addr) bool) error
	// Peers are the remote entries the network's device holds.
	Peers(vxlan.Network) ([]vxlan.Peer, error)
	PeerCount(vxlan.Network) (int, error)
}

// Firewall is the member firewall (*firewall.Firewall).
type Firewall interface {
	Apply(firewall.State) error
	// Members are the members the kernel's tables hold.
	Members() ([]netip.Addr, error)
	// ESPSeen are the members whose native ESP arrived lately, and since
	// when that record has been kept.
	ESPSeen() ([]netip.Addr, time.Time, error)
}

// Keys is the IPsec negotiation of encrypted networks (*ipsec.Manager).
// Every method takes its own lock; the driver calls them only while
// holding its operation lock, never its state lock.
type Keys interface {
	// Activate puts the guard in place; Deactivate removes every xfrm
	// state and policy of vxsec's.
	Activate() error
	Deactivate() error
	Active() bool
	// Sync negotiates against the peers' announcements and returns this
	// host's.
	Sync(peers []ipsec.PeerInfo, settled bool) (announce.IPsec, error)
	// Repair makes the next Sync restore what is missing from the kernel.
	Repair() error
	Rotate() error
	Announcement() announce.IPsec
	Status() ipsec.Status
	// SetNativeESP tells the keys whose native ESP arrives (complete: the
	// record is old enough that a member missing from it was not heard);
	// true: a new epoch started to change a peer's encapsulation (sync it).
	SetNativeESP(peers []netip.Addr, complete bool) bool
	// NATKeepalives is where this host, behind NAT, sends keepalives.
	NATKeepalives() []netip.AddrPort
	// Due is when a Sync next owes removals that wait for their grace
	// (zero: none waits).
	Due() time.Time
}

var (
	_ DataPath = (*vxlan.DataPath)(nil)
	_ Firewall = (*firewall.Firewall)(nil)
	_ Keys     = (*ipsec.Manager)(nil)
)
