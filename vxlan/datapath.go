package vxlan

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Device names and the aliases that mark a device as vxsec's. The alias,
// not the name, is what ownership is decided by.
const (
	LinkPrefix         = "vxsec-"
	EndpointLinkPrefix = "vxe-"
	aliasNetwork       = "vxsec:network:"
	aliasEndpoint      = "vxsec:endpoint:"
	endpointIDChars    = 11 // IFNAMSIZ is 16: "vxe-" + 11 + NUL
	addrGenModeNone    = 1  // IN6_ADDR_GEN_MODE_NONE: no IPv6 link-local on overlay devices
)

// LinkName is the name of a network's VXLAN device.
func LinkName(vni uint32) string { return LinkPrefix + strconv.FormatUint(uint64(vni), 10) }

// EndpointLinkName is the name of an endpoint's device while it is in the
// host namespace (Docker renames it inside the container).
func EndpointLinkName(endpointID string) string {
	if len(endpointID) > endpointIDChars {
		endpointID = endpointID[:endpointIDChars]
	}
	return EndpointLinkPrefix + endpointID
}

// Network is what the data path needs to know of a network.
type Network struct {
	ID  string
	VNI uint32
	MTU int
	// Port is the UDP port of the network's VXLAN; 0 means the DataPath's.
	// Encrypted networks use a port of their own, which only ESP carries.
	Port int
}

func (d *DataPath) portOf(n Network) int {
	if n.Port != 0 {
		return n.Port
	}
	return d.port
}

// Endpoint is what the data path needs to know of a joined endpoint.
type Endpoint struct {
	ID  string
	MAC net.HardwareAddr
}

// DataPath programs devices through one netlink handle in the namespace it
// was created in.
type DataPath struct {
	h     *netlink.Handle
	local net.IP
	port  int
	log   *slog.Logger

	peersMu sync.Mutex
	peers   map[uint32]*installed // by VNI; see installed
}

// New returns a DataPath whose VXLAN devices send from local to port.
func New(local net.IP, port int, log *slog.Logger) (*DataPath, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("opening netlink: %w", err)
	}
	return &DataPath{h: h, local: local, port: port, log: log, peers: map[uint32]*installed{}}, nil
}

// Close releases the netlink handle. Devices stay: they outlive the plugin.
func (d *DataPath) Close() { d.h.Close() }

// EnsureNetwork makes the network's VXLAN device exist, as desired, and up.
// A device of ours whose fixed attributes differ (VNI, port, local address)
// is replaced; anybody else's device of the same name is an error.
func (d *DataPath) EnsureNetwork(n Network) error {
	name := LinkName(n.VNI)
	link, err := d.h.LinkByName(name)
	switch {
	case err == nil:
		if link.Attrs().Alias != aliasNetwork+n.ID {
			if !strings.HasPrefix(link.Attrs().Alias, aliasNetwork) {
				return fmt.Errorf("device %s exists and is not vxsec's (alias %q): remove it or choose another vni", name, link.Attrs().Alias)
			}
			d.log.Warn("replacing VXLAN device left by a removed network", "device", name, "alias", link.Attrs().Alias)
			return d.replace(link, n)
		}
		if !d.matches(link, n) {
			d.log.Warn("replacing VXLAN device whose settings changed", "device", name)
			return d.replace(link, n)
		}
		if link.Attrs().MTU != n.MTU {
			if err := d.h.LinkSetMTU(link, n.MTU); err != nil {
				return fmt.Errorf("setting MTU of %s: %w", name, err)
			}
		}
		if link.Attrs().Flags&net.FlagUp == 0 {
			if err := d.h.LinkSetUp(link); err != nil {
				return fmt.Errorf("bringing %s up: %w", name, err)
			}
		}
		return nil
	case errors.As(err, &netlink.LinkNotFoundError{}):
		return d.create(n)
	default:
		return fmt.Errorf("looking up %s: %w", name, err)
	}
}

func (d *DataPath) matches(link netlink.Link, n Network) bool {
	vx, ok := link.(*netlink.Vxlan)
	return ok && vx.VxlanId == int(n.VNI) && vx.Port == d.portOf(n) && vx.SrcAddr.Equal(d.local) &&
		!vx.Learning && vx.Proxy
}

func (d *DataPath) replace(link netlink.Link, n Network) error {
	if err := d.h.LinkDel(link); err != nil {
		return fmt.Errorf("removing %s: %w", link.Attrs().Name, err)
	}
	return d.create(n)
}

// create adds the device. No group and no default FDB entry: nothing is
// flooded, and a frame for an unknown MAC is dropped. Learning is off:
// remote endpoints come only from the cluster, never from what arrives.
// Proxy makes the device answer ARP from its neighbour table.
func (d *DataPath) create(n Network) error {
	name := LinkName(n.VNI)
	vx := &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{Name: name, MTU: n.MTU, Alias: aliasNetwork + n.ID},
		VxlanId:   int(n.VNI),
		SrcAddr:   d.local,
		Port:      d.portOf(n),
		Learning:  false,
		Proxy:     true,
	}
	if err := d.h.LinkAdd(vx); err != nil {
		return fmt.Errorf("creating VXLAN device %s (vni %d, port %d): %w", name, n.VNI, d.portOf(n), err)
	}
	link, err := d.h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("looking up new device %s: %w", name, err)
	}
	// The kernel ignores IFLA_IFALIAS in a create request: set it apart.
	if err := d.h.LinkSetAlias(link, aliasNetwork+n.ID); err != nil {
		d.h.LinkDel(link)
		return fmt.Errorf("marking %s as vxsec's: %w", name, err)
	}
	// Best effort: fails only where IPv6 is off, which is what we want anyway.
	_ = d.h.LinkSetIP6AddrGenMode(link, addrGenModeNone)
	if err := d.h.LinkSetUp(link); err != nil {
		d.h.LinkDel(link)
		return fmt.Errorf("bringing %s up: %w", name, err)
	}
	d.log.Info("created VXLAN device", "device", name, "vni", n.VNI, "network", n.ID, "mtu", n.MTU, "port", d.portOf(n))
	return nil
}

// DeleteNetwork removes the network's device, if it is there and ours.
// The kernel removes the endpoint devices on top of it with it.
func (d *DataPath) DeleteNetwork(n Network) error {
	name := LinkName(n.VNI)
	link, err := d.h.LinkByName(name)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("looking up %s: %w", name, err)
	}
	if link.Attrs().Alias != aliasNetwork+n.ID {
		return nil // not this network's: leave it
	}
	if err := d.h.LinkDel(link); err != nil {
		return fmt.Errorf("removing %s: %w", name, err)
	}
	d.log.Info("removed VXLAN device", "device", name, "network", n.ID)
	return nil
}

// EnsureEndpoint makes the endpoint's macvlan device exist in the host
// namespace with its MAC and MTU, down, ready for Docker to move into the
// container. It returns the device's name.
func (d *DataPath) EnsureEndpoint(n Network, ep Endpoint) (string, error) {
	name := EndpointLinkName(ep.ID)
	if link, err := d.h.LinkByName(name); err == nil {
		if link.Attrs().Alias == aliasEndpoint+ep.ID && link.Attrs().ParentIndex != 0 {
			return name, nil
		}
		if !strings.HasPrefix(link.Attrs().Alias, aliasEndpoint) {
			return "", fmt.Errorf("device %s exists and is not vxsec's (alias %q)", name, link.Attrs().Alias)
		}
		if err := d.h.LinkDel(link); err != nil {
			return "", fmt.Errorf("removing stale %s: %w", name, err)
		}
	} else if !errors.As(err, &netlink.LinkNotFoundError{}) {
		return "", fmt.Errorf("looking up %s: %w", name, err)
	}
	parent, err := d.h.LinkByName(LinkName(n.VNI))
	if err != nil {
		return "", fmt.Errorf("network %s has no VXLAN device %s: %w", n.ID, LinkName(n.VNI), err)
	}
	mv := &netlink.Macvlan{
		LinkAttrs: netlink.LinkAttrs{
			Name:         name,
			ParentIndex:  parent.Attrs().Index,
			MTU:          n.MTU,
			HardwareAddr: ep.MAC,
			Alias:        aliasEndpoint + ep.ID,
		},
		Mode: netlink.MACVLAN_MODE_BRIDGE,
	}
	if err := d.h.LinkAdd(mv); err != nil {
		return "", fmt.Errorf("creating endpoint device %s on %s: %w", name, parent.Attrs().Name, err)
	}
	if err := d.h.LinkSetAlias(mv, aliasEndpoint+ep.ID); err != nil {
		d.h.LinkDel(mv)
		return "", fmt.Errorf("marking %s as vxsec's: %w", name, err)
	}
	return name, nil
}

// DeleteEndpoint removes the endpoint's device if it is still in the host
// namespace (Docker moves it back there when the container goes). One that
// is gone with its container is not an error.
func (d *DataPath) DeleteEndpoint(endpointID string) error {
	name := EndpointLinkName(endpointID)
	link, err := d.h.LinkByName(name)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("looking up %s: %w", name, err)
	}
	if link.Attrs().Alias != aliasEndpoint+endpointID {
		return nil
	}
	if err := d.h.LinkDel(link); err != nil && !gone(err) {
		return fmt.Errorf("removing %s: %w", name, err)
	}
	return nil
}

// gone: the device a removal was for is no longer there (another removal
// came first, or its lower device took it along).
func gone(err error) bool {
	return errors.As(err, &netlink.LinkNotFoundError{}) || errors.Is(err, unix.ENODEV)
}

// Reconcile brings the host namespace to the desired state: every desired
// network has its device; every device of ours that no desired network or
// joined endpoint accounts for is removed. Devices Docker has moved into
// containers are out of sight here and untouched.
func (d *DataPath) Reconcile(nets []Network, joined map[string]bool) error {
	// The next SetPeers of every network reads the kernel again.
	d.peersMu.Lock()
	clear(d.peers)
	d.peersMu.Unlock()
	links, err := d.h.LinkList()
	if err != nil {
		return fmt.Errorf("listing devices: %w", err)
	}
	want := map[string]Network{}
	for _, n := range nets {
		want[n.ID] = n
	}
	var errs []error
	for _, link := range links {
		alias := link.Attrs().Alias
		switch {
		case strings.HasPrefix(alias, aliasNetwork):
			id := strings.TrimPrefix(alias, aliasNetwork)
			if n, ok := want[id]; ok && link.Attrs().Name == LinkName(n.VNI) {
				continue // EnsureNetwork below checks the rest
			}
			d.log.Info("removing VXLAN device no network needs", "device", link.Attrs().Name, "alias", alias)
			if err := d.h.LinkDel(link); err != nil && !gone(err) {
				errs = append(errs, fmt.Errorf("removing %s: %w", link.Attrs().Name, err))
			}
		case strings.HasPrefix(alias, aliasEndpoint):
			id := strings.TrimPrefix(alias, aliasEndpoint)
			if joined[id] {
				continue
			}
			d.log.Info("removing endpoint device no endpoint needs", "device", link.Attrs().Name, "alias", alias)
			if err := d.h.LinkDel(link); err != nil && !gone(err) {
				errs = append(errs, fmt.Errorf("removing %s: %w", link.Attrs().Name, err))
			}
		}
	}
	for _, n := range nets {
		if err := d.EnsureNetwork(n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
