package vip

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/docker/docker/api/types/network"
)

// TestServicesFromEngine: the engine's verbose network inspection as
// Docker 28 answers it. A dnsrr service (no VIP) and containers that are
// no service are left out; a task without an address yet is no backend.
func TestServicesFromEngine(t *testing.T) {
	got, err := services("n1", map[string]network.ServiceInfo{
		"web": {VIP: "10.0.1.2", Tasks: []network.Task{
			{Name: "web.2.x", EndpointIP: "10.0.1.6"}, {Name: "web.1.y", EndpointIP: "10.0.1.5"}, {Name: "web.3.z", EndpointIP: ""}}},
		"db":  {VIP: "10.0.1.3/24", Tasks: []network.Task{{EndpointIP: "10.0.1.9"}}},
		"rr":  {VIP: "<nil>", Tasks: []network.Task{{EndpointIP: "10.0.1.7"}}},
		"rr2": {VIP: "", Tasks: []network.Task{{EndpointIP: "10.0.1.10"}}},
		"":    {VIP: "", Tasks: []network.Task{{EndpointIP: "10.0.1.8"}}},
		"new": {VIP: "10.0.1.4"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Service{
		"web": {Network: "n1", Name: "web", VIP: netip.MustParseAddr("10.0.1.2"), Backends: addrs("10.0.1.5", "10.0.1.6")},
		"db":  {Network: "n1", Name: "db", VIP: netip.MustParseAddr("10.0.1.3"), Backends: addrs("10.0.1.9")},
		"new": {Network: "n1", Name: "new", VIP: netip.MustParseAddr("10.0.1.4")},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for _, s := range got {
		if !reflect.DeepEqual(s, want[s.Name]) {
			t.Errorf("%s: %+v, want %+v", s.Name, s, want[s.Name])
		}
	}
	// Docker 28 writes a dnsrr service's missing VIP as "<nil>" (seen in
	// the swarm lab): one such service must not hide the others.
	if got, err := services("n1", map[string]network.ServiceInfo{"bad": {VIP: "nope"}, "web": {VIP: "10.0.1.2"}}); err != nil || len(got) != 1 {
		t.Fatalf("a service whose VIP is no address hid the others: %+v %v", got, err)
	}
}
