package driver

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
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

// TestUnusableSubnets: a network without IPv4 (Docker 28's --ipv4=false)
// or with a subnet no endpoint can use is refused with the reason and the
// fix, before anything reaches the kernel; the usual subnets are taken.
func TestUnusableSubnets(t *testing.T) {
	cases := []struct {
		name  string
		pools []IPAMData
		want  string // "" = accepted
	}{
		{"ipv4=false", nil, "--ipv4=false"},
		{"any /24 (Docker 29's form, passed as it is before 29)", []IPAMData{{Pool: "0.0.0.0/24"}}, "Docker 29"},
		{"loopback", []IPAMData{{Pool: "127.1.0.0/16"}}, "loopback"},
		{"multicast", []IPAMData{{Pool: "239.1.1.0/24"}}, "multicast"},
		{"reserved", []IPAMData{{Pool: "250.0.0.0/24"}}, "reserved"},
		{"a /31", []IPAMData{{Pool: "10.9.0.0/31"}}, "no address for endpoints"},
		{"a second pool unusable", []IPAMData{{Pool: "10.9.0.0/24"}, {Pool: "0.0.0.0/16"}}, "0.0.0.0/16"},
		{"a /24", []IPAMData{{Pool: "10.9.0.0/24", Gateway: "10.9.0.1/24"}}, ""},
		{"a /30", []IPAMData{{Pool: "192.168.7.0/30"}}, ""},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := newHarness(t).d
			err := d.CreateNetwork(context.Background(), CreateNetworkRequest{ID: fmt.Sprintf("n%d", i),
				Options: map[string]string{"vni": fmt.Sprint(6000 + i)}, IPv4: tc.pools})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want a refusal naming %q", err, tc.want)
			case tc.want != "":
				if len(d.nets) != 0 {
					t.Fatalf("a refused network was kept: %v", d.nets)
				}
				t.Logf("refused: %v", err)
			}
		})
	}
}

// TestAllocateNetworkPassesRefusals: on the swarm leader, options vxsec
// refuses are passed through unallocated (swarm would only log a refusal,
// and the network's tasks would wait in "New" without a word), and every
// node's CreateNetwork then refuses them with the message `docker service
// ps --no-trunc` shows for the tasks.
func TestAllocateNetworkPassesRefusals(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		opts map[string]string
		want string
	}{
		{map[string]string{"vni": "abc"}, "16777215"},
		{map[string]string{"bogus": "1"}, "accepted"},
		{map[string]string{"encrypted": "maybe"}, "maybe"},
	} {
		out, err := h.d.AllocateNetwork(context.Background(), "bad", tc.opts, 0)
		if err != nil || !reflect.DeepEqual(out, tc.opts) {
			t.Fatalf("AllocateNetwork(%v) = %v, %v; want the options back unallocated", tc.opts, out, err)
		}
		if h.d.allocated["bad"] != 0 {
			t.Fatalf("AllocateNetwork(%v) allocated vni %d", tc.opts, h.d.allocated["bad"])
		}
		err = h.d.CreateNetwork(context.Background(), CreateNetworkRequest{ID: "bad", Options: out, IPv4: []IPAMData{{Pool: "10.9.0.0/24"}}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("a node's CreateNetwork(%v): %v, want vxsec's refusal naming %q", out, err, tc.want)
		}
	}
}
