package driver

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vxsec/vxsec/announce"
	"github.com/vxsec/vxsec/firewall"
	"github.com/vxsec/vxsec/ipsec"
	"github.com/vxsec/vxsec/vxlan"
)

// Config is what a Driver is built from.
type Config struct {
	Store    *Store
	DataPath DataPath
	Firewall Firewall
	// Underlay is this host's tunnel address and the MTU used when a
	// network sets none.
	Underlay vxlan.Underlay
	// DataPort is the UDP port of VXLAN, which only members may reach.
	DataPort uint16
	// EncryptedPort is the UDP port of encrypted networks' VXLAN, which
	// only ESP from members may reach.
	EncryptedPort uint16
	// ESPUDPPort is where ESP in UDP arrives (0: nowhere), which only
	// members may reach.
	ESPUDPPort uint16
	// IPsec negotiates and programs encrypted networks' SAs; nil refuses
	// encrypted networks.
	IPsec Keys
	// Authenticated is true when the cluster is (by its secret): keys are
	// negotiated only with authenticated peers.
	Authenticated bool
	// Identified is true when every host's table is signed by its
	// identity and checked (a host identity or the swarm node
	// certificate, required): only then may a network be encrypted, since
	// otherwise any holder of the secret could speak for a host and sit in
	// the middle of its keys.
	Identified bool
	// RotateEvery is how often IPsec keys rotate; 0 never.
	RotateEvery time.Duration
	// ProbeKernel checks the kernel for what encrypted networks need; nil
	// means ipsec.Probe.
	ProbeKernel func() error
	// Services keeps the swarm service VIPs in the namespaces of local
	// containers (package vip); nil: none.
	Services Services
	// ReconcileEvery is how often kernel state is checked against the
	// desired state to repair drift; 0 means only at start.
	ReconcileEvery time.Duration
	// ProbeESP sends a native ESP probe from this host to each peer
	// (espprobe.Send), every ProbeEvery while IPsec is active; after each
	// round the members whose native ESP arrived (Firewall.ESPSeen) go to
	// the keys (Keys.SetNativeESP). Nil or 0: no probes.
	ProbeESP func(local netip.Addr, peers []netip.Addr, seq uint32) error
	// Keepalive sends NAT keepalives (ipsec.Xfrm.Keepalives) to what
	// Keys.NATKeepalives names, after each round of probes; nil: none.
	Keepalive  func(to []netip.AddrPort) error
	ProbeEvery time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	Log *slog.Logger
}

// Services is the load balancing of swarm service VIPs: it is told every
// container namespace (Join's SandboxKey) with a joined endpoint, and the
// networks each is on.
type Services interface {
	Set(sandboxes map[string][]string) error
}

// Driver implements the network driver on top of the desired state.
type Driver struct {
	cfg Config
	log *slog.Logger
	now func() time.Time

	// counts are for metrics (Counts).
	counts counts

	// op is the operation lock (see the package comment): a token taken
	// with the caller's context.
	op chan struct{}

	mu   sync.Mutex
	nets map[string]*Network
	// allocated holds the VNIs this host handed out as a swarm manager
	// (AllocateNetwork), so that two networks never get the same one.
	allocated map[string]uint32
	// remote is what every other host published, by host.
	remote map[netip.Addr]announce.Table
	// dropped are hosts the cluster declared gone, whose entries go even
	// before the cluster has settled after a restart.
	dropped map[netip.Addr]bool
	// otherFamily are members whose underlay address is not of this
	// host's family, already warned of.
	otherFamily map[netip.Addr]bool
	// pendingSince is when the first table not yet applied arrived.
	pendingSince time.Time
	// members are the cluster's hosts; nil until the cluster said.
	members []netip.Addr
	// membersDirty: members changed since the firewall was last given them.
	membersDirty bool
	started      time.Time
	// bootMembers are the members the kernel's firewall had at start.
	bootMembers []netip.Addr
	// droppedSince: a host was dropped since the firewall was last set.
	droppedSince bool
	// announced is this host's side of the IPsec negotiation, as the keys
	// last returned it: what Snapshot publishes.
	announced announce.IPsec
	// ipsecClean: no xfrm state of vxsec's is known to be left.
	ipsecClean bool
	// seen is when this host first saw each remote endpoint claim, and
	// ignored the claims it logged as ignored (claims.go).
	seen    map[claim]time.Time
	ignored map[claim]bool

	// peersDirty asks applyPeers (run by Run) for a pass.
	peersDirty chan struct{}
	// reap takes the devices of deleted endpoints to reapLoop, while
	// reaping says it runs (see DeleteEndpoint).
	reap    chan string
	reaping atomic.Bool
	// ipsecDue is when the keys next owe a Sync (Keys.Due), and
	// ipsecDueChanged tells Run, which owns the timer, that it changed.
	ipsecDue        time.Time
	ipsecDueChanged chan struct{}
	// changed tells the cluster that Snapshot changed.
	changed chan struct{}
}

// New loads the persisted state. Call Reconcile before serving.
func New(cfg Config) (*Driver, error) {
	nets, err := cfg.Store.Load()
	if err != nil {
		return nil, fmt.Errorf("loading state: %w", err)
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	if !cfg.Underlay.Local.IsValid() {
		cfg.Underlay.Local = cfg.Underlay.Addr
	}
	boot, err := cfg.Firewall.Members()
	if err != nil {
		return nil, fmt.Errorf("reading the firewall's members: %w", err)
	}
	d := &Driver{
		cfg: cfg, log: log, now: now, op: make(chan struct{}, 1), nets: nets, allocated: map[string]uint32{},
		remote: map[netip.Addr]announce.Table{}, dropped: map[netip.Addr]bool{}, otherFamily: map[netip.Addr]bool{}, started: now(),
		peersDirty: make(chan struct{}, 1), changed: make(chan struct{}, 1), bootMembers: boot, ipsecDueChanged: make(chan struct{}, 1),
		reap: make(chan string, reapQueue),
		seen: map[claim]time.Time{}, ignored: map[claim]bool{},
	}
	d.seedClaims()
	return d, nil
}

// lock takes the operation lock, or gives up when ctx ends first.
func (d *Driver) lock(ctx context.Context) error {
	select {
	case d.op <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the driver's other calls to finish: %w", context.Cause(ctx))
	}
}

func (d *Driver) unlock() { <-d.op }

// settled reports whether the cluster has had time to be heard from since
// the start (see settleAfter).
func (d *Driver) settled() bool { return d.now().Sub(d.started) > settleAfter }

// ErrNotFound is returned for a network or endpoint vxsec does not know.
var ErrNotFound = errors.New("not found")

// unknownNetwork is the error for a network Docker names and vxsec holds
// no record of: Docker keeps networks in its own store, so this is state
// vxsec lost, and the user is told what to do about it.
func unknownNetwork(id string) error {
	return fmt.Errorf("network %s: %w: vxsec holds no record of it, so its state was lost "+
		"(the plugin was removed and installed again, or its state directory emptied); "+
		"remove the network (docker network rm %s) and create it again", short(id), ErrNotFound, short(id))
}

// Reconcile makes the kernel match the desired state: the firewall first,
// so that no VXLAN device ever exists without it, then the devices.
func (d *Driver) Reconcile(ctx context.Context) error {
	if err := d.lock(ctx); err != nil {
		return err
	}
	defer d.unlock()
	d.counts.reconciles.Add(1)
	err := d.reconcileOp()
	if err != nil {
		d.counts.reconcileFailures.Add(1)
	}
	return err
}

// kernelNetsOp is what the data path must hold: the networks' devices and
// the joined endpoints' links.
func (d *Driver) kernelNetsOp() ([]vxlan.Network, map[string]bool) {
	var dnets []vxlan.Network
	joined := map[string]bool{}
	for _, n := range d.sortedNets() {
		dnets = append(dnets, d.dpNetwork(n))
		for id, ep := range n.Endpoints {
			if ep.Joined {
				joined[id] = true
			}
		}
	}
	return dnets, joined
}

// reconcileOp is Reconcile, the operation lock held.
func (d *Driver) reconcileOp() error {
	dnets, joined := d.kernelNetsOp()
	if len(dnets) > 0 {
		if err := d.applyFirewallOp(); err != nil {
			return fmt.Errorf("reconciling firewall: %w", err)
		}
	}
	if d.encryptedCount() > 0 {
		if err := d.activateIPsecOp(); err != nil {
			return err
		}
	}
	if err := d.cfg.DataPath.Reconcile(dnets, joined); err != nil {
		return fmt.Errorf("reconciling devices: %w", err)
	}
	if len(dnets) == 0 {
		if err := d.cfg.Firewall.Apply(firewall.State{}); err != nil {
			return fmt.Errorf("reconciling firewall: %w", err)
		}
	}
	d.deactivateIPsecOp()
	// Peers only once the cluster has spoken: until then the entries in
	// the kernel are the best knowledge there is. The pass is Run's, which
	// reads the kernel's entries afresh after DataPath.Reconcile.
	d.mu.Lock()
	heard := len(d.remote) > 0 || len(d.dropped) > 0
	d.mu.Unlock()
	if heard || d.settled() {
		d.peersChanged()
	}
	d.repairIPsecOp()
	d.syncIPsecOp()
	return nil
}

// Run applies remote tables as they come and repairs drift every
// ReconcileEvery, until ctx ends.
func (d *Driver) Run(ctx context.Context) {
	// The containers joined before a restart.
	d.syncServicesOp()
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.applyPeers(ctx)
	}()
	defer func() { <-done }()
	reaped := make(chan struct{})
	go func() {
		defer close(reaped)
		d.reapLoop(ctx)
	}()
	defer func() { <-reaped }()
	if d.cfg.ReconcileEvery <= 0 {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(d.cfg.ReconcileEvery)
	defer t.Stop()
	var rotate <-chan time.Time
	if d.cfg.RotateEvery > 0 {
		rt := time.NewTicker(d.cfg.RotateEvery)
		defer rt.Stop()
		rotate = rt.C
	}
	var probe <-chan time.Time
	var probes uint32
	if d.cfg.ProbeESP != nil && d.cfg.ProbeEvery > 0 {
		pt := time.NewTicker(d.cfg.ProbeEvery)
		defer pt.Stop()
		probe = pt.C
	}
	// due fires when the keys owe a Sync: an SA's grace has passed.
	due := time.NewTimer(time.Hour)
	due.Stop()
	defer due.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.ipsecDueChanged:
			d.mu.Lock()
			at := d.ipsecDue
			d.mu.Unlock()
			due.Stop()
			if !at.IsZero() {
				due.Reset(max(time.Until(at), 0))
			}
		case <-due.C:
			if d.lock(ctx) != nil {
				return
			}
			d.syncIPsecOp()
			d.unlock()
		case <-t.C:
			if err := d.Reconcile(ctx); err != nil && ctx.Err() == nil {
				d.log.Error("periodic reconcile failed", "err", err)
			}
		case <-probe:
			probes++
			d.probeESP(ctx, probes)
		case <-rotate:
			if d.cfg.IPsec != nil && d.cfg.IPsec.Active() {
				if err := d.Rotate(ctx); err != nil && ctx.Err() == nil {
					d.log.Error("scheduled key rotation failed", "err", err)
				}
			}
		}
	}
}

func (d *Driver) sortedNets() []*Network {
	return slices.SortedFunc(maps.Values(d.nets), func(a, b *Network) int { return strings.Compare(a.ID, b.ID) })
}

func (d *Driver) dpNetwork(n *Network) vxlan.Network {
	vn := vxlan.Network{ID: n.ID, VNI: n.VNI, MTU: n.MTU}
	if n.Options.Encrypted {
		vn.Port = int(d.cfg.EncryptedPort)
	}
	return vn
}

// vniTaken reports whether a VNI is used by another network of this host,
// created or allocated.
func (d *Driver) vniTaken(vni uint32, except string) (string, bool) {
	for id, n := range d.nets {
		if id != except && n.VNI == vni {
			return id, true
		}
	}
	for id, v := range d.allocated {
		if id != except && v == vni {
			return id, true
		}
	}
	return "", false
}

// setNetwork makes n the desired state of its network (nil deletes id);
// the caller holds the operation lock.
func (d *Driver) setNetwork(id string, n *Network) {
	d.mu.Lock()
	if n == nil {
		delete(d.nets, id)
	} else {
		d.nets[id] = n
	}
	d.mu.Unlock()
	d.notify()
}

// AllocateNetwork runs on the swarm leader only. It settles the VNI once and
// returns the options every worker will see: the user's, plus the VNI. A
// second call for the same network (a new leader) keeps the VNI it carries.
//
// Options vxsec refuses are passed through unallocated, not refused here:
// `docker network create` has returned long before this call, swarm only
// logs its error, and the network would stay unallocated with its tasks in
// "New" and no word to the user. Passed on, every node's CreateNetwork
// refuses them, and the tasks fail with vxsec's message, which `docker
// service ps --no-trunc` shows.
func (d *Driver) AllocateNetwork(ctx context.Context, id string, opts map[string]string, ipv6Pools int) (map[string]string, error) {
	o, err := ParseOptions(opts)
	if err == nil {
		err = checkSupported(o, ipv6Pools > 0, nil)
	}
	if err != nil {
		d.log.Warn("allocating a network with options vxsec refuses: every node will refuse it, and its tasks fail with this error",
			"network", id, "err", err)
		return maps.Clone(opts), nil
	}
	if err := d.lock(ctx); err != nil {
		return nil, err
	}
	defer d.unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case o.VNI != 0:
		if other, taken := d.vniTaken(o.VNI, id); taken {
			return nil, fmt.Errorf("vni %d is already used by network %s; choose another %s", o.VNI, short(other), OptVNI)
		}
	case d.allocated[id] != 0:
		o.VNI = d.allocated[id]
	default:
		vni, err := AutoVNI(id, func(v uint32) bool { _, t := d.vniTaken(v, id); return t })
		if err != nil {
			return nil, err
		}
		o.VNI = vni
	}
	d.allocated[id] = o.VNI
	d.log.Info("allocated network", "network", id, "vni", o.VNI)
	return o.Map(), nil
}

// FreeNetwork releases what AllocateNetwork settled.
func (d *Driver) FreeNetwork(ctx context.Context, id string) error {
	if err := d.lock(ctx); err != nil {
		return err
	}
	defer d.unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.allocated, id)
	return nil
}

// checkSupported refuses what this build or this kernel cannot do, before
// anything exists. probeKernel may be nil where the kernel does not matter
// (a swarm manager allocating).
func checkSupported(o Options, ipv6 bool, probeKernel func() error) error {
	if o.Encrypted {
		if probeKernel != nil {
			if err := probeKernel(); err != nil {
				return fmt.Errorf("--opt encrypted: %w. vxsec never creates an encrypted network in cleartext, so nothing was created; "+
					"plain networks work on this kernel (create the network without --opt encrypted)", err)
			}
		}
	}
	if ipv6 {
		return errors.New("IPv6 overlay subnets are not supported: vxsec networks carry IPv4 only; " +
			"create the network without --ipv6 and IPv6 subnets")
	}
	return nil
}

// errNoIPv4: Docker 28 lets a network be created with --ipv4=false, and
// then no endpoint could get an address on it.
var errNoIPv4 = errors.New("the network has no IPv4 subnet (was it created with --ipv4=false?): vxsec networks carry IPv4 only; " +
	"create it without --ipv4=false")

// unroutable are the IPv4 ranges no overlay subnet can use.
var unroutable = []struct {
	prefix netip.Prefix
	why    string
}{
	// Docker 29 reads --subnet 0.0.0.0/N as "any /N of the default
	// pools" and gives the driver the pool it chose; Docker before 29
	// passes 0.0.0.0/N as it is.
	{netip.MustParsePrefix("0.0.0.0/8"), `is "this network" (0.0.0.0/8), no subnet; "--subnet 0.0.0.0/N" asks for any /N only on Docker 29 and later`},
	{netip.MustParsePrefix("127.0.0.0/8"), "is loopback (127.0.0.0/8)"},
	{netip.MustParsePrefix("224.0.0.0/4"), "is multicast (224.0.0.0/4)"},
	{netip.MustParsePrefix("240.0.0.0/4"), "is reserved (240.0.0.0/4)"},
}

// checkPool refuses a subnet that cannot carry endpoints.
func checkPool(pool netip.Prefix) error {
	if !pool.Addr().Is4() {
		return fmt.Errorf("subnet %s: vxsec networks carry IPv4 only", pool)
	}
	for _, u := range unroutable {
		if u.prefix.Overlaps(pool) {
			return fmt.Errorf("subnet %s %s: give --subnet a private range such as 10.x.y.0/24 or 172.16-31.x.0/24, or leave it out for one of Docker's pools", pool, u.why)
		}
	}
	if pool.Bits() > 30 {
		return fmt.Errorf("subnet %s is a /%d: it leaves no address for endpoints beside the gateway; give a /30 or larger (a /24 is usual)", pool, pool.Bits())
	}
	return nil
}

// CreateNetworkRequest is what Docker tells of a new network.
type CreateNetworkRequest struct {
	ID string
	// Options are the user's driver options (or, in swarm, those
	// AllocateNetwork returned).
	Options  map[string]string
	IPv4     []IPAMData
	IPv6     []IPAMData
	IPv6Flag bool
}

// IPAMData is one address pool of a network.
type IPAMData struct {
	Pool    string
	Gateway string
}

// CreateNetwork creates the network's VXLAN segment on this host.
func (d *Driver) CreateNetwork(ctx context.Context, req CreateNetworkRequest) error {
	o, err := ParseOptions(req.Options)
	if err != nil {
		return err
	}
	probe := d.cfg.ProbeKernel
	if probe == nil {
		probe = ipsec.Probe
	}
	if err := checkSupported(o, len(req.IPv6) > 0 || req.IPv6Flag, probe); err != nil {
		return err
	}
	if o.Encrypted {
		if err := d.checkEncryption(); err != nil {
			return err
		}
	}
	n := &Network{ID: req.ID, Options: o, Endpoints: map[string]*Endpoint{}, Created: d.now().UTC()}
	if len(req.IPv4) == 0 {
		return errNoIPv4
	}
	for _, p := range req.IPv4 {
		pool, err := netip.ParsePrefix(p.Pool)
		if err != nil {
			return fmt.Errorf("IPv4 pool %q from IPAM: %w", p.Pool, err)
		}
		if err := checkPool(pool); err != nil {
			return err
		}
		n.Subnets = append(n.Subnets, pool.Masked())
		if p.Gateway != "" {
			gw, err := netip.ParsePrefix(p.Gateway)
			if err != nil {
				return fmt.Errorf("IPv4 gateway %q from IPAM: %w", p.Gateway, err)
			}
			n.Gateways = append(n.Gateways, gw.Addr())
		}
	}
	if n.MTU, err = networkMTU(o, d.cfg.Underlay.MTU, d.cfg.Underlay.Addr.Is6()); err != nil {
		return err
	}

	if err := d.lock(ctx); err != nil {
		return err
	}
	defer d.unlock()
	if old, ok := d.nets[req.ID]; ok {
		// Docker repeats CreateNetwork (swarm, restarts): the same network
		// again is fine; make sure the kernel has it.
		if old.Options != o {
			return fmt.Errorf("network %s exists with other options (%v); delete it first", short(req.ID), old.Options.Map())
		}
		return d.ensureNetworkOp(old)
	}
	if len(d.nets) >= announce.MaxNetworksPerHost {
		return fmt.Errorf("this host has %d networks, the limit per host (announce.MaxNetworksPerHost, %d): every other host refuses a table with more; delete a network first",
			len(d.nets), announce.MaxNetworksPerHost)
	}
	switch {
	case o.VNI != 0:
		n.VNI = o.VNI
		// AllocateNetwork on this host (a manager) reserved it for this
		// very network; any other holder is a clash.
		if other, taken := d.vniTaken(n.VNI, req.ID); taken {
			return fmt.Errorf("vni %d is already used by network %s on this host; choose another %s", n.VNI, short(other), OptVNI)
		}
	default:
		d.mu.Lock()
		vni, err := AutoVNI(req.ID, func(v uint32) bool { _, t := d.vniTaken(v, req.ID); return t })
		d.mu.Unlock()
		if err != nil {
			return err
		}
		n.VNI = vni
	}
	if err := d.clusterConflict(n); err != nil {
		return err
	}
	if err := d.ensureNetworkOp(n); err != nil {
		d.undoNetworkOp(n)
		return err
	}
	if err := d.cfg.Store.Put(n); err != nil {
		d.undoNetworkOp(n)
		return err
	}
	d.setNetwork(n.ID, n)
	d.peersChanged()
	d.log.Info("created network", "network", n.ID, "vni", n.VNI, "mtu", n.MTU, "subnets", n.Subnets)
	return nil
}

// ensureNetworkOp programs the firewall, then the device.
func (d *Driver) ensureNetworkOp(n *Network) error {
	if err := d.applyFirewallOp(); err != nil {
		return fmt.Errorf("programming the firewall before the network's device: %w", err)
	}
	if n.Options.Encrypted {
		if err := d.activateIPsecOp(); err != nil {
			return err
		}
	}
	if err := d.cfg.DataPath.EnsureNetwork(d.dpNetwork(n)); err != nil {
		return err
	}
	return nil
}

// undoNetworkOp removes what a failed create left in the kernel.
func (d *Driver) undoNetworkOp(n *Network) {
	if err := d.cfg.DataPath.DeleteNetwork(d.dpNetwork(n)); err != nil {
		d.log.Error("undoing failed network create", "network", n.ID, "err", err)
	}
	if err := d.teardownOp(); err != nil {
		d.log.Error("undoing failed network create", "network", n.ID, "err", err)
	}
}

// teardownOp removes the firewall once no network is left, and the IPsec
// state once no encrypted network is. A device that a failed delete or
// undo left behind still needs them: every device no network needs is
// removed first, and nothing is torn down unless that succeeded.
func (d *Driver) teardownOp() error {
	if len(d.nets) > 0 && !d.ipsecLeftOp() {
		return nil
	}
	dnets, joined := d.kernelNetsOp()
	if err := d.cfg.DataPath.Reconcile(dnets, joined); err != nil {
		return fmt.Errorf("removing devices no network needs: %w", err)
	}
	if len(d.nets) == 0 {
		if err := d.cfg.Firewall.Apply(firewall.State{}); err != nil {
			return err
		}
	}
	d.deactivateIPsecOp()
	return nil
}

// DeleteNetwork removes the network from this host. An unknown network is
// already deleted.
func (d *Driver) DeleteNetwork(ctx context.Context, id string) error {
	if err := d.lock(ctx); err != nil {
		return err
	}
	defer d.unlock()
	n, ok := d.nets[id]
	if !ok {
		return nil
	}
	if err := d.cfg.Store.Delete(id); err != nil {
		return err
	}
	d.setNetwork(id, nil)
	if err := d.cfg.DataPath.DeleteNetwork(d.dpNetwork(n)); err != nil {
		return err
	}
	if err := d.teardownOp(); err != nil {
		return err
	}
	d.log.Info("deleted network", "network", id, "vni", n.VNI)
	return nil
}

// CreateEndpointRequest is what Docker tells of a new endpoint. Address is
// the IPv4 address with its prefix; MAC may be empty.
type CreateEndpointRequest struct {
	NetworkID   string
	EndpointID  string
	Address     string
	AddressIPv6 string
	MAC         string
}

// CreateEndpoint records an endpoint. It returns the MAC it chose when
// Docker gave none (Docker must get back only what it left empty).
func (d *Driver) CreateEndpoint(ctx context.Context, req CreateEndpointRequest) (chosenMAC string, err error) {
	if req.AddressIPv6 != "" {
		return "", errors.New("IPv6 endpoint addresses are not supported: vxsec networks carry IPv4 only")
	}
	if req.Address == "" {
		return "", errors.New("endpoint has no IPv4 address: vxsec needs Docker's IPAM to assign one")
	}
	addr, err := netip.ParsePrefix(req.Address)
	if err != nil || !addr.Addr().Is4() {
		return "", fmt.Errorf("endpoint address %q is not an IPv4 address with prefix length", req.Address)
	}
	var mac net.HardwareAddr
	if req.MAC != "" {
		if mac, err = net.ParseMAC(req.MAC); err != nil || len(mac) != 6 {
			return "", fmt.Errorf("endpoint MAC %q is not an Ethernet address", req.MAC)
		}
	} else {
		mac = randomMAC()
		chosenMAC = mac.String()
	}

	if err := d.lock(ctx); err != nil {
		return "", err
	}
	defer d.unlock()
	n, ok := d.nets[req.NetworkID]
	if !ok {
		return "", unknownNetwork(req.NetworkID)
	}
	if old, ok := n.Endpoints[req.EndpointID]; ok {
		if old.Address != addr {
			return "", fmt.Errorf("endpoint %s exists with address %s", short(req.EndpointID), old.Address)
		}
		if req.MAC == "" {
			return old.MAC.String(), nil
		}
		return "", nil
	}
	total := 0
	for _, nw := range d.nets {
		total += len(nw.Endpoints)
	}
	if total >= announce.MaxEndpointsPerHost {
		return "", fmt.Errorf("this host has %d endpoints, the limit per host (announce.MaxEndpointsPerHost, %d): every other host refuses a table with more; remove containers first",
			total, announce.MaxEndpointsPerHost)
	}
	for _, ep := range n.Endpoints {
		if ep.Address.Addr() == addr.Addr() {
			return "", fmt.Errorf("address %s is already used by endpoint %s in network %s", addr.Addr(), short(ep.ID), short(n.ID))
		}
	}
	now := d.now().UTC()
	if err := d.addressConflict(n, addr.Addr(), mac, now); err != nil {
		return "", err
	}
	next := n.clone()
	next.Endpoints[req.EndpointID] = &Endpoint{ID: req.EndpointID, Address: addr, MAC: mac, Created: now}
	if err := d.cfg.Store.Put(next); err != nil {
		return "", err
	}
	d.setNetwork(n.ID, next)
	d.peersChanged()
	return chosenMAC, nil
}

// DeleteEndpoint forgets an endpoint, removing its device if still here.
func (d *Driver) DeleteEndpoint(ctx context.Context, netID, epID string) error {
	if err := d.lock(ctx); err != nil {
		return err
	}
	defer d.unlock()
	n, ok := d.nets[netID]
	if !ok {
		return nil
	}
	if _, ok := n.Endpoints[epID]; !ok {
		return nil
	}
	next := n.clone()
	delete(next.Endpoints, epID)
	if err := d.cfg.Store.Put(next); err != nil {
		return err
	}
	d.setNetwork(netID, next)
	d.peersChanged()
	// Removing a device waits for the kernel's RCU grace period (15–25 ms
	// here), which `docker run --rm` would wait for: while Run runs, the
	// device goes just after the answer (reapLoop). No endpoint will have
	// its name again, and the desired state no longer holds it, so any
	// Reconcile meanwhile removes it too.
	if d.reaping.Load() {
		select {
		case d.reap <- epID:
			return nil
		default: // a burst: this one waits
		}
	}
	return d.cfg.DataPath.DeleteEndpoint(epID)
}

// reapQueue bounds the devices waiting for reapLoop.
const reapQueue = 256

// reapLoop removes the devices of deleted endpoints (DeleteEndpoint), with
// no lock held, until ctx ends; it removes what is queued then too.
func (d *Driver) reapLoop(ctx context.Context) {
	d.reaping.Store(true)
	remove := func(id string) {
		if err := d.cfg.DataPath.DeleteEndpoint(id); err != nil {
			d.log.Warn("removing a deleted endpoint's device (the next reconcile tries again)", "endpoint", short(id), "err", err)
		}
	}
	for {
		select {
		case <-ctx.Done():
			d.reaping.Store(false)
			for {
				select {
				case id := <-d.reap:
					remove(id)
				default:
					return
				}
			}
		case id := <-d.reap:
			remove(id)
		}
	}
}

// EndpointInfo is what `docker network inspect` shows of an endpoint.
func (d *Driver) EndpointInfo(ctx context.Context, netID, epID string) (map[string]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, ok := d.nets[netID]
	if !ok {
		return nil, unknownNetwork(netID)
	}
	ep, ok := n.Endpoints[epID]
	if !ok {
		return nil, fmt.Errorf("endpoint %s: %w", short(epID), ErrNotFound)
	}
	return map[string]string{
		"vni":    fmt.Sprint(n.VNI),
		"mac":    ep.MAC.String(),
		"device": vxlan.LinkName(n.VNI),
	}, nil
}

// Join creates the endpoint's device, with its MTU set, and returns its
// name for Docker to move into the container.
func (d *Driver) Join(ctx context.Context, netID, epID, sandbox string) (string, error) {
	if err := d.lock(ctx); err != nil {
		return "", err
	}
	defer d.unlock()
	n, ok := d.nets[netID]
	if !ok {
		return "", unknownNetwork(netID)
	}
	ep, ok := n.Endpoints[epID]
	if !ok {
		return "", fmt.Errorf("endpoint %s: %w", short(epID), ErrNotFound)
	}
	if err := d.ensureNetworkOp(n); err != nil {
		return "", err
	}
	if err := d.clusterConflict(n); err != nil {
		return "", err
	}
	if err := d.addressConflict(n, ep.Address.Addr(), ep.MAC, ep.Created); err != nil {
		return "", err
	}
	name, err := d.cfg.DataPath.EnsureEndpoint(d.dpNetwork(n), vxlan.Endpoint{ID: ep.ID, MAC: ep.MAC})
	if err != nil {
		return "", err
	}
	if !ep.Joined || ep.Sandbox != sandbox {
		next := n.clone()
		next.Endpoints[epID].Joined = true
		next.Endpoints[epID].Sandbox = sandbox
		if err := d.cfg.Store.Put(next); err != nil {
			if derr := d.cfg.DataPath.DeleteEndpoint(epID); derr != nil {
				d.log.Error("undoing failed join", "endpoint", epID, "err", derr)
			}
			return "", err
		}
		d.setNetwork(netID, next)
	}
	d.syncServicesOp()
	return name, nil
}

// syncServicesOp tells the service VIPs which container namespaces are on
// which networks. A namespace not programmed yet (Docker before 26 joins
// endpoints before it makes the container's namespace) is programmed by
// the balancer's own loop, which retries; the call is not failed for it.
func (d *Driver) syncServicesOp() {
	if d.cfg.Services == nil {
		return
	}
	want := map[string][]string{}
	d.mu.Lock()
	for id, n := range d.nets {
		for _, ep := range n.Endpoints {
			if ep.Joined && ep.Sandbox != "" {
				want[ep.Sandbox] = append(want[ep.Sandbox], id)
			}
		}
	}
	d.mu.Unlock()
	if err := d.cfg.Services.Set(want); err != nil {
		d.log.Debug("service VIPs not programmed yet; the balancer retries", "err", err)
	}
}

// Leave detaches the endpoint: its device goes (if Docker gave it back).
func (d *Driver) Leave(ctx context.Context, netID, epID string) error {
	if err := d.lock(ctx); err != nil {
		return err
	}
	defer d.unlock()
	n, ok := d.nets[netID]
	if !ok {
		return nil
	}
	if ep, ok := n.Endpoints[epID]; ok && ep.Joined {
		next := n.clone()
		next.Endpoints[epID].Joined = false
		if err := d.cfg.Store.Put(next); err != nil {
			return err
		}
		d.setNetwork(netID, next)
		d.syncServicesOp()
	}
	return d.cfg.DataPath.DeleteEndpoint(epID)
}

// Networks returns a copy of the desired state, for status and tests.
func (d *Driver) Networks() []*Network {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*Network
	for _, n := range d.sortedNets() {
		out = append(out, n.clone())
	}
	return out
}

// randomMAC returns a locally administered unicast MAC.
func randomMAC() net.HardwareAddr {
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // never, on Linux
	}
	mac[0] = (mac[0] | 0x02) & 0xfe
	return mac
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
