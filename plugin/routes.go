package plugin

import (
	"net/http"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/docker/go-plugins-helpers/network"
)

func networkRoutes(a *API) map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{
		"GetCapabilities":             handle(func(*struct{}) (any, error) { return a.GetCapabilities() }),
		"AllocateNetwork":             handle(func(r *network.AllocateNetworkRequest) (any, error) { return a.AllocateNetwork(r) }),
		"FreeNetwork":                 nothing(a.FreeNetwork),
		"CreateNetwork":               nothing(a.CreateNetwork),
		"DeleteNetwork":               nothing(a.DeleteNetwork),
		"CreateEndpoint":              handle(func(r *network.CreateEndpointRequest) (any, error) { return a.CreateEndpoint(r) }),
		"DeleteEndpoint":              nothing(a.DeleteEndpoint),
		"EndpointOperInfo":            handle(func(r *network.InfoRequest) (any, error) { return a.EndpointInfo(r) }),
		"Join":                        handle(func(r *network.JoinRequest) (any, error) { return a.Join(r) }),
		"Leave":                       nothing(a.Leave),
		"DiscoverNew":                 nothing(a.DiscoverNew),
		"DiscoverDelete":              nothing(a.DiscoverDelete),
		"ProgramExternalConnectivity": nothing(a.ProgramExternalConnectivity),
		"RevokeExternalConnectivity":  nothing(a.RevokeExternalConnectivity),
	}
}

func ipamRoutes(i *IPAM) map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{
		"GetCapabilities":         handle(func(*struct{}) (any, error) { return i.GetCapabilities() }),
		"GetDefaultAddressSpaces": handle(func(*struct{}) (any, error) { return i.GetDefaultAddressSpaces() }),
		"RequestPool":             handle(func(r *ipam.RequestPoolRequest) (any, error) { return i.RequestPool(r) }),
		"ReleasePool":             nothing(i.ReleasePool),
		"RequestAddress":          handle(func(r *ipam.RequestAddressRequest) (any, error) { return i.RequestAddress(r) }),
		"ReleaseAddress":          nothing(i.ReleaseAddress),
	}
}
