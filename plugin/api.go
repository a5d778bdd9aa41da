package plugin

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxsec/vxsec/driver"
)

// callTimeout bounds every call below Docker's own 30 s, so that Docker
// gets our error rather than its time-out.
const callTimeout = 25 * time.Second

// Top-level option keys Docker sets itself on CreateNetwork.
const (
	optEnableIPv6 = "com.docker.network.enable_ipv6"
)

// API adapts the driver to go-plugins-helpers' network.Driver.
type API struct {
	d   *driver.Driver
	log *slog.Logger
	// ctx is the daemon's lifetime: calls end when it does.
	ctx context.Context
	// discovered receives node discovery (DiscoverNew/DiscoverDelete).
	discovered func(NodeEvent)
	// status answers VxSec.Status; leave VxSec.Leave.
	status func(StatusRequest) any
	leave  func() error
	rotate func(context.Context) error
	// reconcile answers VxSec.Reconcile.
	reconcile func(context.Context) error
	// rotateSecret answers VxSec.RotateSecret.
	rotateSecret func(context.Context) (any, error)
	// loadCRL answers VxSec.LoadCRL.
	loadCRL func(context.Context, []byte) (any, error)
	// evict answers VxSec.Evict.
	evict func(context.Context, []string) (any, error)
	// doctor answers VxSec.Doctor.
	doctor func(context.Context) (any, error)
	// scope is the data scope GetCapabilities reports.
	scope string
	// observe, if set, hears every call: its method, how long it took,
	// and whether it was answered with an error (metrics).
	observe func(method string, took time.Duration, failed bool)

	// refusals are the last calls of Docker's that failed, newest last.
	refMu    sync.Mutex
	refusals []Refusal
}

// Refusal is a call of Docker's that vxsec refused or failed, for status:
// in swarm mode the user may see it only as a task's error.
type Refusal struct {
	Time   time.Time `json:"Time"`
	Method string    `json:"Method"`
	Error  string    `json:"Error"`
}

// keptRefusals is how many Refusals status shows.
const keptRefusals = 10

// Refusals returns the last calls that failed, newest last.
func (a *API) Refusals() []Refusal {
	a.refMu.Lock()
	defer a.refMu.Unlock()
	return slices.Clone(a.refusals)
}

// SetScope sets the data scope reported to Docker, "local" (the default) or
// "global". Docker asks once, when the plugin is enabled.
func (a *API) SetScope(scope string) { a.scope = scope }

// SetObserver installs what hears every call (before Serve).
func (a *API) SetObserver(f func(method string, took time.Duration, failed bool)) { a.observe = f }

// SetLeave installs what VxSec.Leave does.
func (a *API) SetLeave(f func() error) { a.leave = f }

// SetRotate installs what VxSec.Rotate does.
func (a *API) SetRotate(f func(context.Context) error) { a.rotate = f }

// SetReconcile installs what VxSec.Reconcile does.
func (a *API) SetReconcile(f func(context.Context) error) { a.reconcile = f }

// SetLoadCRL installs what VxSec.LoadCRL does with the revocation list
// it is given.
func (a *API) SetLoadCRL(f func(context.Context, []byte) (any, error)) { a.loadCRL = f }

// LoadCRLRequest is VxSec.LoadCRL's body.
type LoadCRLRequest struct {
	// CRL is the cluster CA's revocation list, PEM or DER.
	CRL []byte `json:"crl"`
}

// SetEvict installs what VxSec.Evict does with the node IDs it is given.
func (a *API) SetEvict(f func(context.Context, []string) (any, error)) { a.evict = f }

// EvictRequest is VxSec.Evict's body.
type EvictRequest struct {
	// Nodes are swarm node IDs (`docker node ls`).
	Nodes []string `json:"nodes"`
}

// SetDoctor installs what VxSec.Doctor does: its report is returned to
// the caller.
func (a *API) SetDoctor(f func(context.Context) (any, error)) { a.doctor = f }

// SetRotateSecret installs what VxSec.RotateSecret does; its answer is
// returned to the caller.
func (a *API) SetRotateSecret(f func(context.Context) (any, error)) { a.rotateSecret = f }

// NodeEvent is a swarm node's data-path address appearing or leaving.
type NodeEvent struct {
	Addr  string
	Self  bool
	Added bool
}

var _ network.Driver = (*API)(nil)

// StatusRequest is VxSec.Status's body; an empty one asks for everything.
type StatusRequest struct {
	// Brief leaves out the counters read from the kernel's firewall
	// (every rule dumped): what a poller needs, without its cost. Under
	// emulation, benchmarks asking every 250 ms for keys cost the daemons
	// more CPU than rotating them.
	Brief bool `json:"Brief,omitempty"`
}

// NewAPI returns the adapter. discovered and status may be nil.
func NewAPI(ctx context.Context, d *driver.Driver, log *slog.Logger, discovered func(NodeEvent), status func(StatusRequest) any) *API {
	return &API{d: d, log: log, ctx: ctx, discovered: discovered, status: status, scope: "local"}
}

func (a *API) call(name string, args ...any) (context.Context, context.CancelFunc) {
	a.log.Debug("remote API call", append([]any{"method", name}, args...)...)
	return context.WithTimeout(a.ctx, callTimeout)
}

// fail logs a refused call; the error text goes back to Docker as is.
func (a *API) fail(name string, err error, args ...any) error {
	if err != nil {
		a.log.Warn("remote API call failed", append([]any{"method", name, "err", err}, args...)...)
		a.refMu.Lock()
		a.refusals = append(a.refusals, Refusal{Time: time.Now().UTC(), Method: name, Error: err.Error()})
		if len(a.refusals) > keptRefusals {
			a.refusals = slices.Delete(a.refusals, 0, len(a.refusals)-keptRefusals)
		}
		a.refMu.Unlock()
	}
	return err
}

// GetCapabilities: connectivity always spans hosts; the data scope decides
// who owns networks. Global is what swarm needs: the leader allocates the
// network (AllocateNetwork, its options, its IPAM pool) and every node gets
// the same. Local is what works outside swarm, where Docker 20.10 refuses a
// global-scope network ("This node is not a swarm manager"); it is what
// macvlan reports, and in swarm it makes a network node-local, dropping
// options and subnet. The daemon picks one at start (setting scope).
func (a *API) GetCapabilities() (*network.CapabilitiesResponse, error) {
	return &network.CapabilitiesResponse{Scope: a.scope, ConnectivityScope: "global"}, nil
}

// AllocateNetwork runs on the swarm leader only.
func (a *API) AllocateNetwork(r *network.AllocateNetworkRequest) (*network.AllocateNetworkResponse, error) {
	ctx, cancel := a.call("AllocateNetwork", "network", r.NetworkID)
	defer cancel()
	opts, err := a.d.AllocateNetwork(ctx, r.NetworkID, r.Options, len(r.IPv6Data))
	if err != nil {
		return nil, a.fail("AllocateNetwork", err, "network", r.NetworkID)
	}
	return &network.AllocateNetworkResponse{Options: opts}, nil
}

// FreeNetwork runs on the swarm leader only.
func (a *API) FreeNetwork(r *network.FreeNetworkRequest) error {
	ctx, cancel := a.call("FreeNetwork", "network", r.NetworkID)
	defer cancel()
	return a.fail("FreeNetwork", a.d.FreeNetwork(ctx, r.NetworkID))
}

// CreateNetwork creates the network on this host.
func (a *API) CreateNetwork(r *network.CreateNetworkRequest) error {
	ctx, cancel := a.call("CreateNetwork", "network", r.NetworkID)
	defer cancel()
	opts, err := driver.GenericOptions(r.Options)
	if err != nil {
		return a.fail("CreateNetwork", err, "network", r.NetworkID)
	}
	req := driver.CreateNetworkRequest{ID: r.NetworkID, Options: opts}
	if v, ok := r.Options[optEnableIPv6].(bool); ok && v {
		req.IPv6Flag = true
	}
	for _, p := range r.IPv4Data {
		if p != nil {
			req.IPv4 = append(req.IPv4, driver.IPAMData{Pool: p.Pool, Gateway: p.Gateway})
		}
	}
	for _, p := range r.IPv6Data {
		if p != nil {
			req.IPv6 = append(req.IPv6, driver.IPAMData{Pool: p.Pool, Gateway: p.Gateway})
		}
	}
	return a.fail("CreateNetwork", a.d.CreateNetwork(ctx, req), "network", r.NetworkID)
}

// DeleteNetwork removes the network from this host.
func (a *API) DeleteNetwork(r *network.DeleteNetworkRequest) error {
	ctx, cancel := a.call("DeleteNetwork", "network", r.NetworkID)
	defer cancel()
	return a.fail("DeleteNetwork", a.d.DeleteNetwork(ctx, r.NetworkID), "network", r.NetworkID)
}

// CreateEndpoint answers with only what Docker left empty: echoing the
// address or MAC back makes Docker fail and roll back.
func (a *API) CreateEndpoint(r *network.CreateEndpointRequest) (*network.CreateEndpointResponse, error) {
	ctx, cancel := a.call("CreateEndpoint", "network", r.NetworkID, "endpoint", r.EndpointID)
	defer cancel()
	req := driver.CreateEndpointRequest{NetworkID: r.NetworkID, EndpointID: r.EndpointID}
	if r.Interface != nil {
		req.Address, req.AddressIPv6, req.MAC = r.Interface.Address, r.Interface.AddressIPv6, r.Interface.MacAddress
	}
	mac, err := a.d.CreateEndpoint(ctx, req)
	if err != nil {
		return nil, a.fail("CreateEndpoint", err, "endpoint", r.EndpointID)
	}
	resp := &network.CreateEndpointResponse{}
	if mac != "" {
		resp.Interface = &network.EndpointInterface{MacAddress: mac}
	}
	return resp, nil
}

// DeleteEndpoint forgets the endpoint.
func (a *API) DeleteEndpoint(r *network.DeleteEndpointRequest) error {
	ctx, cancel := a.call("DeleteEndpoint", "network", r.NetworkID, "endpoint", r.EndpointID)
	defer cancel()
	return a.fail("DeleteEndpoint", a.d.DeleteEndpoint(ctx, r.NetworkID, r.EndpointID), "endpoint", r.EndpointID)
}

// EndpointInfo answers `docker network inspect`.
func (a *API) EndpointInfo(r *network.InfoRequest) (*network.InfoResponse, error) {
	ctx, cancel := a.call("EndpointOperInfo", "endpoint", r.EndpointID)
	defer cancel()
	v, err := a.d.EndpointInfo(ctx, r.NetworkID, r.EndpointID)
	if err != nil {
		return nil, a.fail("EndpointOperInfo", err, "endpoint", r.EndpointID)
	}
	return &network.InfoResponse{Value: v}, nil
}

// Join hands Docker the endpoint's device. No gateway: Docker then attaches
// the container to docker_gwbridge for egress, and the overlay stays flat.
func (a *API) Join(r *network.JoinRequest) (*network.JoinResponse, error) {
	ctx, cancel := a.call("Join", "network", r.NetworkID, "endpoint", r.EndpointID)
	defer cancel()
	name, err := a.d.Join(ctx, r.NetworkID, r.EndpointID, r.SandboxKey)
	if err != nil {
		return nil, a.fail("Join", err, "endpoint", r.EndpointID)
	}
	return &network.JoinResponse{InterfaceName: network.InterfaceName{SrcName: name, DstPrefix: "eth"}}, nil
}

// Leave detaches the endpoint.
func (a *API) Leave(r *network.LeaveRequest) error {
	ctx, cancel := a.call("Leave", "network", r.NetworkID, "endpoint", r.EndpointID)
	defer cancel()
	return a.fail("Leave", a.d.Leave(ctx, r.NetworkID, r.EndpointID), "endpoint", r.EndpointID)
}

// Discovery types of libnetwork's discoverapi.
const discoveryNodeType = 1

// DiscoverNew receives swarm's node discovery: this node's data-path
// address (Self) and its peers'. Other discovery types are not ours.
func (a *API) DiscoverNew(n *network.DiscoveryNotification) error {
	return a.discover(n, true)
}

// DiscoverDelete receives a node leaving swarm's gossip.
func (a *API) DiscoverDelete(n *network.DiscoveryNotification) error {
	return a.discover(n, false)
}

func (a *API) discover(n *network.DiscoveryNotification, added bool) error {
	if n.DiscoveryType != discoveryNodeType {
		return nil
	}
	m, ok := n.DiscoveryData.(map[string]any)
	if !ok {
		return fmt.Errorf("node discovery data: expected an object, got %T", n.DiscoveryData)
	}
	ev := NodeEvent{Added: added}
	ev.Addr, _ = m["Address"].(string)
	ev.Self, _ = m["Self"].(bool)
	a.log.Info("node discovery", "addr", ev.Addr, "self", ev.Self, "added", added)
	if a.discovered != nil && ev.Addr != "" {
		a.discovered(ev)
	}
	return nil
}

// ProgramExternalConnectivity is for gateway endpoints, which vxsec's never
// are: Docker's gwbridge endpoint carries the container's egress.
func (a *API) ProgramExternalConnectivity(r *network.ProgramExternalConnectivityRequest) error {
	return nil
}

// RevokeExternalConnectivity: see ProgramExternalConnectivity.
func (a *API) RevokeExternalConnectivity(r *network.RevokeExternalConnectivityRequest) error {
	return nil
}
