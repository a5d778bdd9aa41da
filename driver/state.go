package driver

import (
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"time"
)

// Network is the desired state of one vxsec network on this host.
type Network struct {
	ID      string  `json:"id"`
	VNI     uint32  `json:"vni"`
	Options Options `json:"options"`
	// Subnets are the IPv4 pools Docker's IPAM assigned.
	Subnets []netip.Prefix `json:"subnets,omitempty"`
	// Gateways are the IPAM gateways: vxsec holds no address, but the
	// gateway of one network must not be reachable from another.
	Gateways []netip.Addr `json:"gateways,omitempty"`
	// MTU is the containers' MTU, derived from the underlay's.
	MTU       int                  `json:"mtu"`
	Endpoints map[string]*Endpoint `json:"endpoints,omitempty"`
	// Created orders this network against another host's claiming the
	// same VNI: the later one is refused.
	Created time.Time `json:"created"`
}

// Endpoint is the desired state of one container interface.
type Endpoint struct {
	ID      string           `json:"id"`
	Address netip.Prefix     `json:"address"`
	MAC     net.HardwareAddr `json:"mac"`
	// Joined is true between Join and Leave: the endpoint then has a link.
	Joined bool `json:"joined,omitempty"`
	// Sandbox is the container's network namespace, as Docker named it at
	// Join (a path in the engine's mount namespace).
	Sandbox string `json:"sandbox,omitempty"`
	// Created orders two endpoints claiming one address across hosts.
	Created time.Time `json:"created"`
}

// clone returns a deep copy, so that a change can be built and persisted
// before it replaces the state other calls read.
func (n *Network) clone() *Network {
	c := *n
	c.Subnets = append([]netip.Prefix(nil), n.Subnets...)
	c.Gateways = append([]netip.Addr(nil), n.Gateways...)
	c.Endpoints = make(map[string]*Endpoint, len(n.Endpoints))
	for id, ep := range n.Endpoints {
		e := *ep
		e.MAC = append(net.HardwareAddr(nil), ep.MAC...)
		c.Endpoints[id] = &e
	}
	return &c
}

// Auto-allocated VNIs live in the top 15/16 of the space so that VNIs a user
// picks by hand (small numbers, by habit) rarely meet them.
const (
	autoVNIBase = 1 << 20
	autoVNISpan = MaxVNI - autoVNIBase + 1
)

// AutoVNI picks a VNI for a network whose user chose none. It is derived
// from the network ID, so every manager that allocates the same network
// picks the same VNI without talking to the others; taken reports VNIs
// already in use, and the next free one is chosen past them.
func AutoVNI(networkID string, taken func(uint32) bool) (uint32, error) {
	h := fnv.New32a()
	h.Write([]byte(networkID))
	start := h.Sum32() % autoVNISpan
	for i := uint32(0); i < autoVNISpan; i++ {
		vni := autoVNIBase + (start+i)%autoVNISpan
		if !taken(vni) {
			return vni, nil
		}
	}
	return 0, fmt.Errorf("no free VNI left between %d and %d", autoVNIBase, MaxVNI)
}
