package plugin

import (
	"log/slog"

	"github.com/docker/go-plugins-helpers/ipam"

	vxipam "github.com/vxsec/vxsec/ipam"
)

// requestAddressType is how Docker marks the gateway's address request.
const (
	requestAddressType = "RequestAddressType"
	gatewayRequest     = "com.docker.network.gateway"
)

// IPAM adapts the allocator to go-plugins-helpers' ipam.Ipam.
type IPAM struct {
	a   *vxipam.Allocator
	log *slog.Logger
}

var _ ipam.Ipam = (*IPAM)(nil)

// NewIPAM returns the adapter.
func NewIPAM(a *vxipam.Allocator, log *slog.Logger) *IPAM { return &IPAM{a: a, log: log} }

// GetCapabilities: addresses do not depend on MACs.
func (i *IPAM) GetCapabilities() (*ipam.CapabilitiesResponse, error) {
	return &ipam.CapabilitiesResponse{}, nil
}

// GetDefaultAddressSpaces: one space, where pools may overlap.
func (i *IPAM) GetDefaultAddressSpaces() (*ipam.AddressSpacesResponse, error) {
	return &ipam.AddressSpacesResponse{LocalDefaultAddressSpace: vxipam.AddressSpace, GlobalDefaultAddressSpace: vxipam.AddressSpace}, nil
}

// RequestPool makes a network's pool.
func (i *IPAM) RequestPool(r *ipam.RequestPoolRequest) (*ipam.RequestPoolResponse, error) {
	p, err := i.a.RequestPool(r.Pool, r.SubPool, r.V6)
	if err != nil {
		i.log.Warn("IPAM RequestPool refused", "pool", r.Pool, "err", err)
		return nil, err
	}
	return &ipam.RequestPoolResponse{PoolID: p.ID, Pool: p.Prefix.String(), Data: map[string]string{}}, nil
}

// ReleasePool forgets a pool.
func (i *IPAM) ReleasePool(r *ipam.ReleasePoolRequest) error { return i.a.ReleasePool(r.PoolID) }

// RequestAddress gives out an address (the gateway's when Docker says so).
func (i *IPAM) RequestAddress(r *ipam.RequestAddressRequest) (*ipam.RequestAddressResponse, error) {
	addr, err := i.a.RequestAddress(r.PoolID, r.Address, r.Options[requestAddressType] == gatewayRequest)
	if err != nil {
		i.log.Warn("IPAM RequestAddress refused", "pool", r.PoolID, "address", r.Address, "err", err)
		return nil, err
	}
	return &ipam.RequestAddressResponse{Address: addr.String(), Data: map[string]string{}}, nil
}

// ReleaseAddress frees an address.
func (i *IPAM) ReleaseAddress(r *ipam.ReleaseAddressRequest) error {
	return i.a.ReleaseAddress(r.PoolID, r.Address)
}
