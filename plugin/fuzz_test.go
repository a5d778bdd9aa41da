package plugin

// A fuzz target of the remote API's request bodies, the JSON dockerd posts
// to the plugin socket, decoded as the server decodes them (handle) and
// taken as far as this package takes them without a kernel. `go test` runs
// the seeds (f.Add and testdata/fuzz) as regression tests; `make fuzz`
// fuzzes it for a bounded time.

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxsec/vxsec/driver"
	vxipam "github.com/vxsec/vxsec/ipam"
)

var fuzzLog = slog.New(slog.DiscardHandler)

// fuzzDecodeAs posts body to a handler of Req as the server routes it. A body
// the handler refuses is answered 400 with a reason and never reaches the
// driver; one it accepts reaches it once, and is a request whose encoding
// decodes to the same request (nothing dockerd sent is lost or changed on
// the way). then receives the accepted request.
func fuzzDecodeAs[Req any](t *testing.T, body []byte, then func(*Req)) {
	t.Helper()
	var got *Req
	calls := 0
	h := handle(func(r *Req) (any, error) { got, calls = r, calls+1; return nil, nil })
	rec := httptest.NewRecorder()
	h(rec, httptest.NewRequest(http.MethodPost, "/NetworkDriver.Fuzz", bytes.NewReader(body)))
	if rec.Code == http.StatusBadRequest {
		if calls != 0 || strings.TrimSpace(rec.Body.String()) == "" {
			t.Fatalf("refused body %q: %d calls, reason %q", body, calls, rec.Body.String())
		}
		return
	}
	if rec.Code != http.StatusOK || calls != 1 {
		t.Fatalf("body %q: status %d, %d calls", body, rec.Code, calls)
	}
	enc, err := json.Marshal(got)
	if err != nil {
		t.Fatalf("request %+v does not encode: %v", got, err)
	}
	back := new(Req)
	if err := json.Unmarshal(enc, back); err != nil || !reflect.DeepEqual(back, got) {
		t.Fatalf("request %+v, encoded and decoded again: %+v, %v", got, back, err)
	}
	then(got)
}

// fuzzCheckOptions: options accepted are within the documented bounds.
func fuzzCheckOptions(t *testing.T, opts map[string]string) {
	t.Helper()
	o, err := driver.ParseOptions(opts)
	if err != nil {
		return // FuzzNetworkOptions (driver) checks refusals
	}
	if o.VNI > driver.MaxVNI || o.UnderlayMTU < 0 || o.UnderlayMTU > 65535 {
		t.Fatalf("options %q parsed to %+v", opts, o)
	}
}

// fuzzAPIRoutes are the requests FuzzRemoteAPIRequest posts, by its route byte.
var fuzzAPIRoutes = []struct {
	name  string
	check func(t *testing.T, body []byte)
}{
	{"NetworkDriver.CreateNetwork", func(t *testing.T, body []byte) {
		fuzzDecodeAs(t, body, func(r *network.CreateNetworkRequest) {
			opts, err := driver.GenericOptions(r.Options)
			generic, _ := r.Options["com.docker.network.generic"].(map[string]any)
			if err != nil {
				named := strings.Contains(err.Error(), "com.docker.network.generic")
				for k := range generic {
					named = named || strings.Contains(err.Error(), strconv.Quote(k))
				}
				if !named {
					t.Fatalf("GenericOptions(%v): error %q names no option", r.Options, err)
				}
				return
			}
			if len(opts) != len(generic) {
				t.Fatalf("GenericOptions(%v) = %q: options lost or made up", r.Options, opts)
			}
			// Docker sends --opt values as strings; a JSON bool, number or
			// null reads as what it would have been as a string.
			for k, v := range generic {
				got, ok := opts[k]
				switch x := v.(type) {
				case string:
					ok = ok && got == x
				case bool:
					ok = ok && got == strconv.FormatBool(x)
				case float64:
					f, err := strconv.ParseFloat(got, 64)
					ok = ok && err == nil && f == x
				case nil:
					ok = ok && got == ""
				default:
					ok = false
				}
				if !ok {
					t.Fatalf("option %q: %#v became %q", k, v, got)
				}
			}
			fuzzCheckOptions(t, opts)
		})
	}},
	{"NetworkDriver.AllocateNetwork", func(t *testing.T, body []byte) {
		fuzzDecodeAs(t, body, func(r *network.AllocateNetworkRequest) { fuzzCheckOptions(t, r.Options) })
	}},
	{"NetworkDriver.CreateEndpoint", func(t *testing.T, body []byte) {
		fuzzDecodeAs(t, body, func(*network.CreateEndpointRequest) {})
	}},
	{"NetworkDriver.Join", func(t *testing.T, body []byte) {
		fuzzDecodeAs(t, body, func(*network.JoinRequest) {})
	}},
	{"NetworkDriver.DiscoverNew", func(t *testing.T, body []byte) {
		fuzzDecodeAs(t, body, func(r *network.DiscoveryNotification) {
			var events []NodeEvent
			api := &API{log: fuzzLog, discovered: func(ev NodeEvent) { events = append(events, ev) }}
			err := api.DiscoverNew(r)
			data, isObject := r.DiscoveryData.(map[string]any)
			addr, _ := data["Address"].(string)
			self, _ := data["Self"].(bool)
			switch {
			case r.DiscoveryType != discoveryNodeType:
				if err != nil || len(events) != 0 {
					t.Fatalf("discovery of type %d (not a node's): %v, events %+v", r.DiscoveryType, err, events)
				}
			case !isObject:
				if err == nil || !strings.Contains(err.Error(), "expected an object") || len(events) != 0 {
					t.Fatalf("node discovery of %#v: %v, events %+v", r.DiscoveryData, err, events)
				}
			case addr == "":
				if err != nil || len(events) != 0 {
					t.Fatalf("node discovery with no address (%#v): %v, events %+v", r.DiscoveryData, err, events)
				}
			default:
				if err != nil || len(events) != 1 || events[0] != (NodeEvent{Addr: addr, Self: self, Added: true}) {
					t.Fatalf("node discovery %#v: %v, events %+v", r.DiscoveryData, err, events)
				}
			}
		})
	}},
	{"IpamDriver.RequestPool", func(t *testing.T, body []byte) {
		fuzzDecodeAs(t, body, func(r *ipam.RequestPoolRequest) {
			a, err := vxipam.Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			i := NewIPAM(a, fuzzLog)
			resp, err := i.RequestPool(r)
			if err != nil {
				return // FuzzRequests (ipam) checks refusals
			}
			pool, err := netip.ParsePrefix(resp.Pool)
			if err != nil || !pool.Addr().Is4() || pool != pool.Masked() || resp.PoolID == "" || resp.Data == nil {
				t.Fatalf("RequestPool(%+v) answered %+v", r, resp)
			}
			gw, err := i.RequestAddress(&ipam.RequestAddressRequest{PoolID: resp.PoolID,
				Options: map[string]string{requestAddressType: gatewayRequest}})
			if err != nil {
				t.Fatalf("no gateway from pool %s: %v", resp.Pool, err)
			}
			if a, err := netip.ParsePrefix(gw.Address); err != nil || a.Bits() != pool.Bits() || !pool.Contains(a.Addr()) {
				t.Fatalf("pool %s answered gateway %q", resp.Pool, gw.Address)
			}
		})
	}},
}

// FuzzRemoteAPIRequest: a request body of one of the remote API's calls,
// chosen by route (modulo the calls), as dockerd posts it.
func FuzzRemoteAPIRequest(f *testing.F) {
	seeds := map[string][]string{
		"NetworkDriver.CreateNetwork": {
			`{"NetworkID":"3c5e8a0b1f2d4e6a8c0b2d4f6a8c0e2a4c6e8a0b2d4f6a8c0e2a4c6e8a0b2d4f","Options":{"com.docker.network.enable_ipv6":false,"com.docker.network.generic":{"encrypted":"","vni":"100"}},"IPv4Data":[{"AddressSpace":"LocalDefault","Pool":"10.31.0.0/24","Gateway":"10.31.0.1/24","AuxAddresses":null}],"IPv6Data":[]}`,
			`{"NetworkID":"n2","Options":{"com.docker.network.generic":{"com.docker.network.driver.mtu":1400,"encrypted":true,"x":null}}}`,
			`{"NetworkID":"n3","Options":{"com.docker.network.generic":"vni=7"}}`,
		},
		"NetworkDriver.AllocateNetwork": {
			`{"NetworkID":"9m8h2nz3lq1dfxv4k0j7c6w5ab","Options":{"encrypted":"","com.docker.network.driver.mtu":"1400"},"IPv4Data":[{"AddressSpace":"GlobalDefault","Pool":"10.60.0.0/24","Gateway":"10.60.0.1/24"}],"IPv6Data":[]}`,
		},
		"NetworkDriver.CreateEndpoint": {
			`{"NetworkID":"3c5e8a0b1f2d","EndpointID":"a1b2c3d4e5f6","Interface":{"Address":"10.31.0.2/24","AddressIPv6":"","MacAddress":""},"Options":{"com.docker.network.endpoint.exposedports":[],"com.docker.network.portmap":[]}}`,
		},
		"NetworkDriver.Join": {
			`{"NetworkID":"3c5e8a0b1f2d","EndpointID":"a1b2c3d4e5f6","SandboxKey":"/var/run/docker/netns/0123456789ab","Options":{}}`,
		},
		"NetworkDriver.DiscoverNew": {
			`{"DiscoveryType":1,"DiscoveryData":{"Address":"10.0.0.11","BindAddress":"0.0.0.0","Self":true}}`,
			`{"DiscoveryType":1,"DiscoveryData":"10.0.0.12"}`,
			`{"DiscoveryType":2,"DiscoveryData":{"Key":"x"}}`,
		},
		"IpamDriver.RequestPool": {
			`{"AddressSpace":"vxsec","Pool":"10.40.0.0/24","SubPool":"10.40.0.128/25","Options":{},"V6":false}`,
			`{"AddressSpace":"vxsec","Pool":"","V6":true}`,
		},
	}
	for i, r := range fuzzAPIRoutes {
		for _, body := range seeds[r.name] {
			f.Add(uint8(i), []byte(body))
		}
		f.Add(uint8(i), []byte(`{"NetworkID":`))
	}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		fuzzAPIRoutes[int(route)%len(fuzzAPIRoutes)].check(t, body)
	})
}
