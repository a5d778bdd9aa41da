package ipam

// Fuzz targets of what the IPAM driver takes from outside: the pool and
// address requests Docker passes on (--subnet, --ip-range, --ip, the
// gateway), and the pool files on disk. `go test` runs the seeds (f.Add
// and testdata/fuzz) as regression tests; `make fuzz` fuzzes each.

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// fuzzHandsOut checks an address the allocator gave from pool p: inside the
// subnet, neither its network nor its broadcast address, and not one
// already given out.
func fuzzHandsOut(t *testing.T, p Pool, got netip.Prefix) {
	t.Helper()
	a := got.Addr()
	if !a.Is4() || got.Bits() != p.Prefix.Bits() || !p.Prefix.Contains(a) || !usable(p.Prefix, a) || slices.Contains(p.Used, a) {
		t.Fatalf("pool %s (range %s, used %v) gave out %s", p.Prefix, p.Range, p.Used, got)
	}
	last := p.Prefix.Addr().As4()
	host := ^uint32(0) >> p.Prefix.Bits()
	for i := range 4 {
		last[i] |= byte(host >> (24 - 8*i))
	}
	if a == p.Prefix.Addr() || a == netip.AddrFrom4(last) {
		t.Fatalf("pool %s gave out its network or broadcast address %s", p.Prefix, a)
	}
}

// FuzzRequests: RequestPool as Docker asks for it (subnet, ip-range, IPv6
// or not), then the gateway and an address (--ip or none). An accepted
// pool is the subnet's IPv4 prefix (masked, /30 or larger) with its range
// inside it; every address given out is a usable one of the subnet, from
// the range unless it is the gateway or asked for, never given twice, and
// what the pool's file holds after a restart. A refusal quotes what was
// refused.
func FuzzRequests(f *testing.F) {
	f.Add("10.40.0.0/24", "", "", false, false)
	f.Add("10.50.0.0/16", "10.50.1.0/24", "", false, false)
	f.Add("10.50.0.0/16", "10.50.2.0/24", "10.50.2.7", false, false)
	f.Add("10.1.0.0/29", "10.1.0.4/30", "10.1.0.1", false, true)
	f.Add("10.1.0.3/30", "", "10.1.0.2/30", false, false)
	f.Add("fd00::/64", "", "", true, false)
	f.Add("10.0.0.0/31", "", "", false, false)
	f.Add("10.0.0.0/24", "10.9.0.0/25", "", false, false)
	f.Add("10.2.0.0/24", "", "10.2.0.255", false, false)
	f.Fuzz(func(t *testing.T, subnet, ipRange, want string, v6, gateway bool) {
		dir := t.TempDir()
		a, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		p, err := a.RequestPool(subnet, ipRange, v6)
		if err != nil {
			msg := err.Error()
			if !strings.Contains(msg, strconv.Quote(subnet)) && !strings.Contains(msg, strconv.Quote(ipRange)) &&
				!(v6 && strings.Contains(msg, "IPv6")) && !(subnet == "" && strings.Contains(msg, "--subnet")) &&
				!strings.Contains(msg, "too small") {
				t.Fatalf("RequestPool(%q, %q, %v): error %q does not say what was refused", subnet, ipRange, v6, err)
			}
			return
		}
		parsed, _ := netip.ParsePrefix(subnet)
		if v6 || p.Prefix != parsed.Masked() || !p.Prefix.Addr().Is4() || p.Prefix.Bits() > 30 ||
			p.Range != p.Range.Masked() || p.Range.Bits() < p.Prefix.Bits() || !p.Prefix.Contains(p.Range.Addr()) {
			t.Fatalf("RequestPool(%q, %q, %v) = %+v", subnet, ipRange, v6, p)
		}

		gw, err := a.RequestAddress(p.ID, "", true)
		if err != nil {
			t.Fatalf("no gateway from pool %s: %v", p.Prefix, err)
		}
		fuzzHandsOut(t, *p, gw)
		before := *a.pools[p.ID]
		got, err := a.RequestAddress(p.ID, want, gateway)
		if err != nil {
			msg := err.Error()
			if !strings.Contains(msg, strconv.Quote(want)) && !strings.Contains(msg, "already in use") && !strings.Contains(msg, "no free address") {
				t.Fatalf("RequestAddress(%q, gateway %v): error %q does not say what was refused", want, gateway, err)
			}
		} else {
			fuzzHandsOut(t, before, got)
			if want == "" && !gateway && !p.Range.Contains(got.Addr()) {
				t.Fatalf("pool %s range %s gave out %s", p.Prefix, p.Range, got)
			}
			if w, err := netip.ParseAddr(strings.Split(want, "/")[0]); want != "" && (err != nil || w != got.Addr()) {
				t.Fatalf("asked for %q, got %s", want, got)
			}
		}

		b, err := Open(dir)
		if err != nil {
			t.Fatalf("reopening: %v", err)
		}
		mem, disk := a.pools[p.ID], b.pools[p.ID]
		if disk == nil || disk.Prefix != mem.Prefix || disk.Range != mem.Range || !slices.Equal(disk.Used, mem.Used) {
			t.Fatalf("pool in memory %+v, in its file %+v", mem, disk)
		}
	})
}

// FuzzOpen: a pool file as a crash, a full disk or a hand edit may leave
// it. What Open accepts gives out only usable addresses of its subnet that
// the file does not hold as used; what it refuses is named.
func FuzzOpen(f *testing.F) {
	f.Add([]byte(`{"id":"vxsec-00112233445566ff","prefix":"10.40.0.0/24","range":"10.40.0.0/24","used":["10.40.0.1","10.40.0.2"]}`))
	f.Add([]byte(`{"id":"vxsec-00112233445566ff","prefix":"10.50.0.0/16","range":"10.50.1.0/24"}`))
	f.Add([]byte(`{"id":"vxsec-00112233445566ff","prefix":"10.1.0.0/30","range":"10.1.0.0/30","used":["10.1.0.1","10.1.0.2"]}`))
	f.Add([]byte(`{"id":"vxsec-00112233445566ff","prefix":"10.40.0.0/24",`))
	f.Add([]byte(`{"prefix":"10.40.0.0/24"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		const name = "ipam-vxsec-00112233445566ff.json"
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
		a, err := Open(dir)
		if err != nil {
			if !strings.Contains(err.Error(), name) {
				t.Fatalf("Open: error %q does not name the damaged file", err)
			}
			return
		}
		for id, p := range a.pools {
			before := *p
			for _, gateway := range []bool{true, false} {
				got, err := a.RequestAddress(id, "", gateway)
				if err != nil {
					continue
				}
				fuzzHandsOut(t, before, got)
				before = *a.pools[id]
			}
		}
	})
}
