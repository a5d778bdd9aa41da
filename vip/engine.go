package vip

import (
	"context"
	"net/netip"
	"slices"

	"github.com/docker/docker/api/types/network"

	"github.com/vxsec/vxsec/engine"
)

// Docker is the local engine as the Balancer needs it: services from its
// API, namespaces through its mount namespace (package engine).
type Docker struct{ d *engine.Docker }

// FromEngine adapts the local engine.
func FromEngine(d *engine.Docker) Docker { return Docker{d} }

// Services lists the services with a VIP on the network.
func (d Docker) Services(ctx context.Context, id string) ([]Service, error) {
	in, err := d.d.NetworkServices(ctx, id)
	if err != nil {
		return nil, err
	}
	return services(id, in)
}

// Open opens a container's network namespace by its sandbox key.
func (d Docker) Open(sandbox string) (int, func(), error) { return d.d.OpenNetNS(sandbox) }

// services reads the engine's answer. A service in dnsrr mode has no VIP
// (the engine writes a missing one as "" or "<nil>") and is left out, as
// are containers that are no service and tasks without an address yet.
func services(id string, in map[string]network.ServiceInfo) ([]Service, error) {
	var out []Service
	for name, si := range in {
		vip, err := parseAddr(si.VIP)
		if err != nil || name == "" || !vip.Is4() || vip.IsUnspecified() {
			continue
		}
		s := Service{Network: id, Name: name, VIP: vip}
		for _, t := range si.Tasks {
			if a, err := parseAddr(t.EndpointIP); err == nil && a.Is4() {
				s.Backends = append(s.Backends, a)
			}
		}
		slices.SortFunc(s.Backends, netip.Addr.Compare)
		s.Backends = slices.Compact(s.Backends)
		out = append(out, s)
	}
	return out, nil
}

// parseAddr takes "10.0.1.2" or "10.0.1.2/24".
func parseAddr(s string) (netip.Addr, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Addr(), nil
	}
	return netip.ParseAddr(s)
}
