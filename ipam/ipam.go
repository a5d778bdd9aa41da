package ipam

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/vxsec/vxsec/atomicfile"
)

// AddressSpace is the only address space vxsec's IPAM offers; pools in it
// may overlap, since each network is its own segment.
const AddressSpace = "vxsec"

const filePrefix, fileSuffix = "ipam-", ".json"

// Pool is one network's addresses.
type Pool struct {
	ID     string       `json:"id"`
	Prefix netip.Prefix `json:"prefix"`
	// Range is where addresses are handed out (--ip-range); Prefix if unset.
	Range netip.Prefix `json:"range"`
	// Used holds every address given out, the gateway included.
	Used []netip.Addr `json:"used,omitempty"`
}

// Allocator hands out pools and addresses.
type Allocator struct {
	dir   string
	mu    sync.Mutex
	pools map[string]*Pool
}

// Open loads the pools persisted in dir.
func Open(dir string) (*Allocator, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating state directory: %w", err)
	}
	if err := atomicfile.RemoveTemps(dir); err != nil {
		return nil, fmt.Errorf("removing interrupted writes: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading state directory: %w", err)
	}
	a := &Allocator{dir: dir, pools: map[string]*Pool{}}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), filePrefix) || !strings.HasSuffix(e.Name(), fileSuffix) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", e.Name(), err)
		}
		var p Pool
		if err := json.Unmarshal(data, &p); err != nil || p.ID == "" {
			return nil, fmt.Errorf("decoding %s: %v", e.Name(), err)
		}
		// Only what RequestPool makes: a damaged file's pool with no
		// IPv4 subnet made RequestAddress panic (a negative shift, or As4
		// of an IPv6 address), and one whose range left its subnet gave
		// out addresses outside it. Regression inputs: testdata/fuzz/FuzzOpen.
		if !p.Prefix.Addr().Is4() || p.Prefix.Bits() > 30 || p.Prefix != p.Prefix.Masked() ||
			p.Range != p.Range.Masked() || p.Range.Bits() < p.Prefix.Bits() || !p.Prefix.Contains(p.Range.Addr()) {
			return nil, fmt.Errorf("%s: pool %s has subnet %s and range %s, which vxsec never makes", e.Name(), p.ID, p.Prefix, p.Range)
		}
		a.pools[p.ID] = &p
	}
	return a, nil
}

// RequestPool makes a pool of prefix (which the user must give: no pool is
// guessed), handing out addresses from subPool if set.
func (a *Allocator) RequestPool(prefix, subPool string, v6 bool) (*Pool, error) {
	if v6 {
		return nil, errors.New("vxsec IPAM: IPv6 pools are not supported; vxsec networks carry IPv4")
	}
	if prefix == "" {
		return nil, errors.New("vxsec IPAM needs a subnet: add --subnet (each vxsec network is its own address space, so any subnet may be used, even one another network uses)")
	}
	p, err := netip.ParsePrefix(prefix)
	if err != nil || !p.Addr().Is4() {
		return nil, fmt.Errorf("vxsec IPAM: subnet %q is not an IPv4 prefix", prefix)
	}
	if p.Bits() > 30 {
		return nil, fmt.Errorf("vxsec IPAM: subnet %s is too small; use a /30 or larger", p)
	}
	p = p.Masked()
	r := p
	if subPool != "" {
		if r, err = netip.ParsePrefix(subPool); err != nil || !p.Contains(r.Addr()) || r.Bits() < p.Bits() {
			return nil, fmt.Errorf("vxsec IPAM: ip-range %q is not inside subnet %s", subPool, p)
		}
		r = r.Masked()
	}
	pool := &Pool{ID: newID(), Prefix: p, Range: r}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.save(pool); err != nil {
		return nil, err
	}
	a.pools[pool.ID] = pool
	return pool, nil
}

// ReleasePool forgets a pool; an unknown one is already released.
func (a *Allocator) ReleasePool(id string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.pools[id]; !ok {
		return nil
	}
	if err := atomicfile.Remove(a.dir, fileName(id)); err != nil {
		return fmt.Errorf("removing pool %s: %w", id, err)
	}
	delete(a.pools, id)
	return nil
}

// RequestAddress gives out want if set (and free), else the lowest free
// address of the pool's range. Gateways come from the whole subnet, as
// Docker's own IPAM does. The answer carries the subnet's prefix length.
func (a *Allocator) RequestAddress(id, want string, gateway bool) (netip.Prefix, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.pools[id]
	if !ok {
		return netip.Prefix{}, fmt.Errorf("vxsec IPAM: no pool %q", id)
	}
	used := map[netip.Addr]bool{}
	for _, u := range p.Used {
		used[u] = true
	}
	var addr netip.Addr
	if want != "" {
		w, err := netip.ParseAddr(strings.Split(want, "/")[0])
		if err != nil || !p.Prefix.Contains(w) || !usable(p.Prefix, w) {
			return netip.Prefix{}, fmt.Errorf("vxsec IPAM: %q is not a usable address of %s", want, p.Prefix)
		}
		if used[w] {
			return netip.Prefix{}, fmt.Errorf("vxsec IPAM: address %s is already in use in %s", w, p.Prefix)
		}
		addr = w
	} else {
		from := p.Range
		if gateway {
			from = p.Prefix
		}
		for c := from.Addr(); from.Contains(c); c = c.Next() {
			if usable(p.Prefix, c) && !used[c] {
				addr = c
				break
			}
		}
		if !addr.IsValid() {
			return netip.Prefix{}, fmt.Errorf("vxsec IPAM: no free address left in %s", from)
		}
	}
	next := *p
	next.Used = append(append([]netip.Addr(nil), p.Used...), addr)
	sort.Slice(next.Used, func(i, j int) bool { return next.Used[i].Less(next.Used[j]) })
	if err := a.save(&next); err != nil {
		return netip.Prefix{}, err
	}
	a.pools[id] = &next
	return netip.PrefixFrom(addr, p.Prefix.Bits()), nil
}

// ReleaseAddress frees an address; a free one is not an error.
func (a *Allocator) ReleaseAddress(id, addr string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.pools[id]
	if !ok {
		return nil
	}
	w, err := netip.ParseAddr(strings.Split(addr, "/")[0])
	if err != nil {
		return fmt.Errorf("vxsec IPAM: %q is not an address", addr)
	}
	next := *p
	next.Used = nil
	for _, u := range p.Used {
		if u != w {
			next.Used = append(next.Used, u)
		}
	}
	if len(next.Used) == len(p.Used) {
		return nil
	}
	if err := a.save(&next); err != nil {
		return err
	}
	a.pools[id] = &next
	return nil
}

// usable excludes a subnet's network and broadcast addresses.
func usable(p netip.Prefix, a netip.Addr) bool {
	if a == p.Addr() {
		return false
	}
	b := a.As4()
	host := ^uint32(0) >> p.Bits()
	return (uint32(b[0])<<24|uint32(b[1])<<16|uint32(b[2])<<8|uint32(b[3]))&host != host
}

func (a *Allocator) save(p *Pool) error {
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(a.dir, fileName(p.ID), data); err != nil {
		return fmt.Errorf("persisting pool %s: %w", p.ID, err)
	}
	return nil
}

func fileName(id string) string { return filePrefix + id + fileSuffix }

func newID() string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return "vxsec-" + hex.EncodeToString(b)
}
