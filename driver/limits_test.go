package driver

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vxsec/vxsec/announce"
	"github.com/vxsec/vxsec/vxlan"
)

// limitedDriver is a driver with a store and no kernel: the calls tested
// refuse before they would reach it.
func limitedDriver(t *testing.T) *Driver {
	t.Helper()
	store, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &Driver{now: time.Now, op: make(chan struct{}, 1), seen: map[claim]time.Time{}, ignored: map[claim]bool{},
		cfg: Config{Store: store, Underlay: vxlan.Underlay{MTU: 1500, Addr: netip.MustParseAddr("198.18.0.1")}, Log: slog.Default()},
		log: slog.Default(), nets: map[string]*Network{},
	}
}

// TestEndpointLimit: the endpoint that would take the host past
// announce.MaxEndpointsPerHost (counted over every network) is refused with
// the limit named; one below it is accepted, and a repeated call for an
// existing endpoint still answers at the limit.
func TestEndpointLimit(t *testing.T) {
	d := limitedDriver(t)
	a := &Network{ID: "a", VNI: 1, Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Endpoints: map[string]*Endpoint{}}
	b := &Network{ID: "b", VNI: 2, Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Endpoints: map[string]*Endpoint{}}
	d.nets["a"], d.nets["b"] = a, b
	for i := range announce.MaxEndpointsPerHost - 1 {
		n := a
		if i%2 == 1 {
			n = b
		}
		id := fmt.Sprintf("ep%d", i)
		n.Endpoints[id] = &Endpoint{ID: id, Address: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 8)}
	}
	ctx := context.Background()
	if _, err := d.CreateEndpoint(ctx, CreateEndpointRequest{NetworkID: "a", EndpointID: "last", Address: "10.2.0.1/8"}); err != nil {
		t.Fatalf("the last endpoint within the limit: %v", err)
	}
	_, err := d.CreateEndpoint(ctx, CreateEndpointRequest{NetworkID: "b", EndpointID: "over", Address: "10.2.0.2/8"})
	if err == nil || !strings.Contains(err.Error(), "announce.MaxEndpointsPerHost") || !strings.Contains(err.Error(), fmt.Sprint(announce.MaxEndpointsPerHost)) {
		t.Fatalf("the endpoint over the limit: err = %v, want the limit named", err)
	}
	if _, err := d.CreateEndpoint(ctx, CreateEndpointRequest{NetworkID: "a", EndpointID: "last", Address: "10.2.0.1/8"}); err != nil {
		t.Fatalf("Docker repeating CreateEndpoint at the limit: %v", err)
	}
}

// TestNetworkLimit: the network past announce.MaxNetworksPerHost is refused
// with the limit named, before anything reaches the kernel.
func TestNetworkLimit(t *testing.T) {
	d := limitedDriver(t)
	for i := range announce.MaxNetworksPerHost {
		id := fmt.Sprintf("n%d", i)
		d.nets[id] = &Network{ID: id, VNI: uint32(i + 1), Endpoints: map[string]*Endpoint{}}
	}
	err := d.CreateNetwork(context.Background(), CreateNetworkRequest{ID: "over", Options: map[string]string{"vni": "5000"},
		IPv4: []IPAMData{{Pool: "10.9.0.0/24"}}})
	if err == nil || !strings.Contains(err.Error(), "announce.MaxNetworksPerHost") {
		t.Fatalf("the network over the limit: err = %v, want the limit named", err)
	}
}
