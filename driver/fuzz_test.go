package driver

// Fuzz targets of what the driver takes from outside: the options a user
// passes with `docker network create --opt`, the endpoint Docker asks for,
// the state files on disk, and the tables other hosts publish. `go test`
// runs their seeds (f.Add and testdata/fuzz) as regression tests;
// `make fuzz` fuzzes each for a bounded time.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vxsec/vxsec/announce"
	"github.com/vxsec/vxsec/ipsec"
	"github.com/vxsec/vxsec/vxlan"
)

var fuzzLog = slog.New(slog.DiscardHandler)

// Which of FuzzNetworkOptions' options are present: an option given empty
// (`--opt encrypted`) is not an option left out.
const (
	fuzzHasVNI = 1 << iota
	fuzzHasEncrypted
	fuzzHasMTU
	fuzzHasExtra
)

// FuzzNetworkOptions: whatever options a user passes, an accepted set is
// within the documented bounds, survives the trip through swarm
// (Options.Map, then AllocateNetwork's answer parsed again on every worker),
// and gives containers an MTU that fits the underlay; a refused one names
// the option that was wrong.
func FuzzNetworkOptions(f *testing.F) {
	f.Add(uint8(fuzzHasVNI), "100", "", "", "", "", uint16(1500), false)
	f.Add(uint8(fuzzHasVNI|fuzzHasEncrypted), "4096", "", "", "", "", uint16(1500), false)
	f.Add(uint8(fuzzHasEncrypted|fuzzHasMTU), "", "true", "9000", "", "", uint16(1500), true)
	f.Add(uint8(fuzzHasMTU), "", "", "1400", "", "", uint16(9000), false)
	f.Add(uint8(fuzzHasEncrypted), "", "false", "", "", "", uint16(1450), false)
	f.Add(uint8(fuzzHasExtra), "", "", "", "vxlanid", "7", uint16(1500), false)
	f.Add(uint8(fuzzHasVNI|fuzzHasMTU), " 16777215 ", "", "118", "", "", uint16(1500), false)
	f.Fuzz(func(t *testing.T, present uint8, vni, encrypted, mtu, extraKey, extraVal string, underlay uint16, ipv6 bool) {
		opts := map[string]string{}
		if present&fuzzHasVNI != 0 {
			opts[OptVNI] = vni
		}
		if present&fuzzHasEncrypted != 0 {
			opts[OptEncrypted] = encrypted
		}
		if present&fuzzHasMTU != 0 {
			opts[OptMTU] = mtu
		}
		if present&fuzzHasExtra != 0 {
			opts[extraKey] = extraVal
		}
		o, err := ParseOptions(opts)
		if err != nil {
			if !fuzzNamesAnOption(err.Error(), opts) {
				t.Fatalf("ParseOptions(%q): error %q names none of the options given", opts, err)
			}
			return
		}
		for k := range opts {
			if k != OptVNI && k != OptEncrypted && k != OptMTU {
				t.Fatalf("ParseOptions(%q) accepted unknown option %q", opts, k)
			}
		}
		if _, ok := opts[OptVNI]; ok != (o.VNI != 0) || o.VNI > MaxVNI {
			t.Fatalf("ParseOptions(%q): vni %d, want 0 when not given and %d..%d when given", opts, o.VNI, MinVNI, MaxVNI)
		}
		if _, ok := opts[OptMTU]; ok != (o.UnderlayMTU != 0) || o.UnderlayMTU < 0 || o.UnderlayMTU > maxUnderlayMTU {
			t.Fatalf("ParseOptions(%q): underlay MTU %d, want 0 when not given and 1..%d when given", opts, o.UnderlayMTU, maxUnderlayMTU)
		}
		if back, err := ParseOptions(o.Map()); err != nil || back != o {
			t.Fatalf("ParseOptions(%q) = %+v, but its Map %q parses to %+v, %v", opts, o, o.Map(), back, err)
		}

		// Swarm's leader allocates; every worker parses what it answered.
		d := &Driver{now: time.Now, op: make(chan struct{}, 1), seen: map[claim]time.Time{}, ignored: map[claim]bool{}, log: fuzzLog, allocated: map[string]uint32{}}
		const id = "9m8h2nz3lq1dfxv4k0j7c6w5ab"
		out, err := d.AllocateNetwork(context.Background(), id, opts, 0)
		if err != nil {
			t.Fatalf("AllocateNetwork refused options ParseOptions accepted (%q): %v", opts, err)
		}
		w, err := ParseOptions(out)
		if err != nil || w.VNI < MinVNI || w.VNI > MaxVNI || w.Encrypted != o.Encrypted || w.UnderlayMTU != o.UnderlayMTU ||
			(o.VNI != 0 && w.VNI != o.VNI) {
			t.Fatalf("AllocateNetwork(%q) = %q, which a worker parses to %+v, %v", opts, out, w, err)
		}
		if again, err := d.AllocateNetwork(context.Background(), id, out, 0); err != nil || !reflect.DeepEqual(again, out) {
			t.Fatalf("a new leader allocating %q again got %q, %v; want the same", out, again, err)
		}

		// The containers' MTU: a full-size packet with DF set, once
		// encapsulated, fits the underlay.
		under := int(underlay)
		if o.UnderlayMTU != 0 {
			under = o.UnderlayMTU
		}
		got, err := networkMTU(o, int(underlay), ipv6)
		if err != nil {
			if !strings.Contains(err.Error(), OptMTU) {
				t.Fatalf("networkMTU(%+v, %d): error %q does not name %s", o, underlay, err, OptMTU)
			}
			return
		}
		if got < minContainerMTU {
			t.Fatalf("networkMTU(%+v, underlay %d, ipv6 %v) = %d, below IPv4's minimum link MTU %d", o, underlay, ipv6, got, minContainerMTU)
		}
		if wire := fuzzEncapsulated(got, o.Encrypted, ipv6); wire > under {
			t.Fatalf("networkMTU(%+v, underlay %d, ipv6 %v) = %d: a full-size packet is %d bytes on the underlay", o, underlay, ipv6, got, wire)
		}
	})
}

// fuzzNamesAnOption: a refusal quotes the unknown option, or names the option
// and quotes its value.
func fuzzNamesAnOption(msg string, opts map[string]string) bool {
	for k, v := range opts {
		if strings.Contains(msg, strconv.Quote(k)) ||
			strings.Contains(msg, "option "+k+"="+strconv.Quote(strings.TrimSpace(v))) {
			return true
		}
	}
	return false
}

// fuzzEncapsulated is the underlay size of a container packet of mtu bytes:
// VXLAN (outer IP, UDP, VXLAN, Ethernet), in ESP transport mode when
// encrypted (header, IV, payload padded to 4 with its 2 trailer bytes, ICV).
func fuzzEncapsulated(mtu int, encrypted, ipv6 bool) int {
	if !encrypted {
		return mtu + vxlan.Overhead(ipv6)
	}
	outerIP := 20
	if ipv6 {
		outerIP = 40
	}
	payload := 8 + 8 + 14 + mtu + 2
	payload += (4 - payload%4) % 4
	return outerIP + 8 + 8 + payload + ipsec.ICVBits/8
}

// FuzzCreateEndpoint: the endpoint Docker asks for (CreateEndpoint's
// Interface). An accepted one holds an IPv4 address with its prefix and a
// 6-byte MAC, the one Docker gave or, when it gave none, one chosen and
// answered (locally administered, unicast), and it is what the state file
// holds afterwards; a refused one says what was wrong.
func FuzzCreateEndpoint(f *testing.F) {
	f.Add("10.0.0.2/24", "", "")
	f.Add("10.0.0.3/24", "", "02:42:0a:00:00:03")
	f.Add("10.0.0.4/24", "fd00::4/64", "")
	f.Add("10.0.0.5", "", "")
	f.Add("", "", "")
	f.Add("10.0.0.6/24", "", "02:42:0a:00:00:06:00:00")
	f.Add("::ffff:10.0.0.7/120", "", "")
	store, err := OpenStore(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, address, addressIPv6, mac string) {
		n := &Network{ID: "n1", VNI: 42, MTU: 1450, Endpoints: map[string]*Endpoint{},
			Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}}
		d := &Driver{now: time.Now, op: make(chan struct{}, 1), seen: map[claim]time.Time{}, ignored: map[claim]bool{}, cfg: Config{Store: store}, log: fuzzLog, nets: map[string]*Network{n.ID: n}}
		req := CreateEndpointRequest{NetworkID: n.ID, EndpointID: "e1", Address: address, AddressIPv6: addressIPv6, MAC: mac}
		chosen, err := d.CreateEndpoint(context.Background(), req)
		if err != nil {
			msg := err.Error()
			switch {
			case addressIPv6 != "" && strings.Contains(msg, "IPv6"):
			case address == "" && strings.Contains(msg, "no IPv4 address"):
			case strings.Contains(msg, strconv.Quote(address)), mac != "" && strings.Contains(msg, strconv.Quote(mac)):
			default:
				t.Fatalf("CreateEndpoint(%+v): error %q does not say what was wrong", req, err)
			}
			return
		}
		ep := d.nets[n.ID].Endpoints["e1"]
		if ep == nil || !ep.Address.Addr().Is4() || ep.Address.String() != netip.MustParsePrefix(address).String() || len(ep.MAC) != 6 {
			t.Fatalf("CreateEndpoint(%+v) recorded %+v", req, ep)
		}
		if mac == "" {
			if chosen != ep.MAC.String() || ep.MAC[0]&0x03 != 0x02 {
				t.Fatalf("CreateEndpoint(%+v) chose MAC %s and answered %q: want it answered, locally administered and unicast", req, ep.MAC, chosen)
			}
		} else if want, _ := net.ParseMAC(mac); chosen != "" || !bytes.Equal(ep.MAC, want) {
			t.Fatalf("CreateEndpoint(%+v) recorded MAC %s and answered %q: want Docker's, unanswered", req, ep.MAC, chosen)
		}
		nets, err := store.Load()
		if err != nil {
			t.Fatal(err)
		}
		if got := nets[n.ID].Endpoints["e1"]; got == nil || got.Address != ep.Address || !bytes.Equal(got.MAC, ep.MAC) || !got.Created.Equal(ep.Created) {
			t.Fatalf("the state file holds endpoint %+v, want %+v", got, ep)
		}
	})
}

// FuzzStoreLoad: a damaged state file is refused, naming the file, rather
// than silently losing or corrupting a network. What Load accepts is usable
// (the driver clones networks and reads every endpoint), and it survives
// being written back as Put writes it and loaded again.
func FuzzStoreLoad(f *testing.F) {
	good, err := json.MarshalIndent(sampleNetwork("n1"), "", "  ")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"id":"n1","vni":7,"options":{},"mtu":1450,"created":"2024-05-01T10:00:00Z"}`))
	f.Add([]byte(`{"id":"n1",`))
	f.Add([]byte(`{"id":"n2","vni":1}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"id":"n1","vni":7,"endpoints":{"e1":{"id":"e1","address":"10.0.0.2/24","mac":null,"created":"2024-05-01T10:00:00Z"}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		const name = "network-n1.json"
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
		s := &Store{dir: dir}
		nets, err := s.Load()
		if err != nil {
			if !strings.Contains(err.Error(), name) {
				t.Fatalf("Load: error %q does not name the damaged file %s", err, name)
			}
			return
		}
		n := nets["n1"]
		if len(nets) != 1 || n == nil || n.ID != "n1" || n.Endpoints == nil {
			t.Fatalf("Load of %s = %+v", name, nets)
		}
		for id, ep := range n.Endpoints {
			if ep == nil {
				t.Fatalf("Load accepted endpoint %q with no content", id)
			}
		}
		c := n.clone()
		for id, ep := range n.Endpoints {
			if ce := c.Endpoints[id]; ce == nil || ce.ID != ep.ID || ce.Address != ep.Address || !bytes.Equal(ce.MAC, ep.MAC) ||
				ce.Joined != ep.Joined || !ce.Created.Equal(ep.Created) {
				t.Fatalf("endpoint %q: clone %+v of %+v differs", id, ce, ep)
			}
		}
		again, err := json.MarshalIndent(n, "", "  ")
		if err != nil {
			t.Fatalf("Put could not write back what Load accepted: %v", err)
		}
		dir2 := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir2, name), again, 0o600); err != nil {
			t.Fatal(err)
		}
		nets2, err := (&Store{dir: dir2}).Load()
		if err != nil {
			t.Fatalf("Load of what Put writes for %+v: %v", n, err)
		}
		if third, _ := json.MarshalIndent(nets2["n1"], "", "  "); !bytes.Equal(third, again) {
			t.Fatalf("written back and loaded again, the network changed:\n%s\n%s", again, third)
		}
	})
}

// The local network FuzzRemoteTables and FuzzRemoteIPsec set other hosts'
// tables against.
func fuzzLocalNetwork() *Network {
	return &Network{ID: "n1", VNI: 42, Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")},
		Endpoints: map[string]*Endpoint{"e1": {ID: "e1", Address: netip.MustParsePrefix("10.0.0.2/24"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}}}}
}

// fuzzDecodeTable decodes a table as a pull does, and applies the check a pull
// makes before the table is installed: its host is the member pulled from,
// so a valid address.
func fuzzDecodeTable(data []byte) (announce.Table, bool) {
	t, err := announce.Decode(data)
	if err != nil || !t.Host.IsValid() {
		return announce.Table{}, false
	}
	return t, true
}

// FuzzRemoteTables: two tables other hosts published, as SetRemote installs
// them, become the local network's peer entries. What peersLocked promises:
// a host whose network of this VNI conflicts with ours contributes nothing;
// every other host's endpoint of the VNI is an entry unless a local
// endpoint, or a claim this host saw earlier, holds its address or MAC
// (what the tables say of time plays no part).
// An older table never replaces a newer one, and a refused network names
// the VNI and the host whose network conflicts.
func FuzzRemoteTables(f *testing.F) {
	for _, s := range fuzzTableSeeds() {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		ta, okA := fuzzDecodeTable(a)
		tb, okB := fuzzDecodeTable(b)
		n := fuzzLocalNetwork()
		d := &Driver{now: time.Now, op: make(chan struct{}, 1), seen: map[claim]time.Time{}, ignored: map[claim]bool{}, log: fuzzLog, remote: map[netip.Addr]announce.Table{}, nets: map[string]*Network{n.ID: n}}
		for _, tbl := range []struct {
			t  announce.Table
			ok bool
		}{{ta, okA}, {tb, okB}} {
			if tbl.ok {
				d.SetRemote(tbl.t)
			}
		}
		if okA && okB && ta.Host == tb.Host {
			want := ta
			if ta.Version.Less(tb.Version) {
				want = tb
			}
			if !reflect.DeepEqual(d.remote[ta.Host], want) {
				t.Fatalf("host %s: installed version %v, want the newer of %v and %v", ta.Host, d.remote[ta.Host].Version, ta.Version, tb.Version)
			}
		}

		d.mu.Lock()
		peers := d.peersLocked(n)
		d.mu.Unlock()
		conflictErr := d.clusterConflict(n)

		// Every claim of a host whose network of the VNI is ours, and
		// whether an older claim (by when this host saw it) or a local
		// endpoint takes its address or its MAC.
		local := n.Endpoints["e1"]
		var all []claim
		var conflicting []netip.Addr
		for host, tbl := range d.remote {
			rn, ok := findVNI(tbl, n.VNI)
			if !ok {
				continue
			}
			if conflicts(n, rn) != "" {
				conflicting = append(conflicting, host)
				continue
			}
			for _, ep := range tbl.Endpoints {
				if ep.VNI == n.VNI {
					if c, ok := claimOf(host, ep); ok {
						all = append(all, c)
					}
				}
			}
		}
		beaten := func(c claim) bool {
			if c.ip == local.Address.Addr() || bytes.Equal(c.mac[:], local.MAC) {
				return true
			}
			for _, o := range all {
				if o != c && (o.ip == c.ip || o.mac == c.mac) && olderClaim(o, c, d.seen[o], d.seen[c]) {
					return true
				}
			}
			return false
		}
		entries := map[claim]bool{}
		byIP, byMAC := map[netip.Addr]bool{}, map[vxlan.MAC48]bool{}
		for _, p := range peers {
			m, _ := vxlan.ToMAC48(p.MAC)
			c := claim{vni: n.VNI, host: p.Host, ip: p.IP, mac: m}
			if byIP[p.IP] || byMAC[c.mac] {
				t.Fatalf("two entries for %s or %s: %+v", p.IP, p.MAC, peers)
			}
			byIP[p.IP], byMAC[c.mac], entries[c] = true, true, true
			if !slices.Contains(all, c) {
				t.Fatalf("entry %+v is no endpoint of a host whose network of vni %d is ours", p, n.VNI)
			}
			if beaten(c) {
				t.Fatalf("entry %+v: a local endpoint or an older claim holds its address or MAC (claims %+v)", p, all)
			}
		}
		for _, c := range all {
			if !entries[c] && !beaten(c) {
				t.Fatalf("claim %+v holds its address and MAC, yet has no entry: %+v", c, peers)
			}
		}

		if (conflictErr != nil) != (len(conflicting) > 0) {
			t.Fatalf("hosts with a conflicting network %v, yet clusterConflict says %v", conflicting, conflictErr)
		}
		if conflictErr != nil {
			msg := conflictErr.Error()
			named := false
			for _, h := range conflicting {
				named = named || strings.Contains(msg, "on host "+h.String())
			}
			if !named || !strings.Contains(msg, fmt.Sprintf("vni %d", n.VNI)) {
				t.Fatalf("refusal %q names neither the vni nor a conflicting host of %v", msg, conflicting)
			}
		}
	})
}

// fuzzTableSeeds are pairs of tables as hosts publish them: the driver's
// own Snapshot output, encoded as the cluster sends it.
func fuzzTableSeeds() [][2][]byte {
	at := func(s string) time.Time { tm, _ := time.Parse(time.RFC3339Nano, s); return tm }
	h2, h3 := netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3")
	subnet := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}
	t2 := announce.Table{Host: h2, Version: announce.Version{Epoch: 1714557600000000000, Seq: 3},
		Networks: []announce.Network{{ID: "n1", VNI: 42, Subnets: subnet, Created: at("2024-05-01T10:00:00Z")}},
		Endpoints: []announce.Endpoint{
			{VNI: 42, IP: netip.MustParseAddr("10.0.0.3"), MAC: net.HardwareAddr{2, 0x42, 10, 0, 0, 3}, Created: at("2024-05-01T10:00:01.5Z")},
			{VNI: 42, IP: netip.MustParseAddr("10.0.0.2"), MAC: net.HardwareAddr{2, 0x42, 10, 0, 0, 2}, Created: at("2024-05-01T10:00:02Z")},
		}}
	t3 := announce.Table{Host: h3, Version: announce.Version{Epoch: 1714557700000000000, Seq: 1},
		Networks: []announce.Network{{ID: "n1", VNI: 42, Subnets: subnet, Created: at("2024-05-01T10:00:00Z")}},
		Endpoints: []announce.Endpoint{
			{VNI: 42, IP: netip.MustParseAddr("10.0.0.3"), MAC: net.HardwareAddr{2, 0x42, 10, 0, 0, 0x33}, Created: at("2024-05-01T10:00:00.5Z")},
			{VNI: 42, IP: netip.MustParseAddr("10.0.0.4"), MAC: net.HardwareAddr{2, 0x42, 10, 0, 0, 4}, Created: at("2024-05-01T10:00:03Z")},
		}}
	t3conflict := t3
	t3conflict.Networks = []announce.Network{{ID: "other", VNI: 42, Subnets: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24")}, Encrypted: true}}
	t2older := t2
	t2older.Version.Seq = 2
	t2older.Endpoints = nil
	enc := func(t announce.Table) []byte { b, _ := json.Marshal(t); return b }
	return [][2][]byte{
		{enc(t2), enc(t3)},
		{enc(t2), enc(t3conflict)},
		{enc(t2), enc(t2older)},
		{enc(t2older), enc(t2)},
		{enc(t2), []byte(`{"host":"198.18.0.3","version":{"epoch":1,"seq":1},"networks":[{"id":"x","vni":42}]}`)},
		{[]byte(`{"host":""}`), []byte(`not json`)},
	}
}

// fuzzXfrm is the kernel's xfrm as FuzzRemoteIPsec needs it: it refuses a
// duplicate SA, as the kernel does.
type fuzzXfrm struct {
	sas map[ipsec.KernelSA]bool
	out map[netip.Addr]uint32
}

func (k *fuzzXfrm) EnsureGuard() error { return nil }
func (k *fuzzXfrm) SetPeer(peer netip.Addr, outReqid, inReqid uint32) error {
	k.out[peer] = outReqid
	return nil
}
func (k *fuzzXfrm) DelPeer(peer netip.Addr) error { delete(k.out, peer); return nil }
func (k *fuzzXfrm) AddSA(sa ipsec.SA) error {
	id := ipsec.KernelSA{Src: sa.Src, Dst: sa.Dst, SPI: sa.SPI}
	if k.sas[id] {
		return errors.New("SA exists")
	}
	k.sas[id] = true
	return nil
}
func (k *fuzzXfrm) DelSA(src, dst netip.Addr, spi uint32) error {
	delete(k.sas, ipsec.KernelSA{Src: src, Dst: dst, SPI: spi})
	return nil
}
func (k *fuzzXfrm) State() (ipsec.KernelState, error) { return ipsec.KernelState{}, nil }
func (k *fuzzXfrm) RemoveAll() error                  { clear(k.sas); clear(k.out); return nil }

// fuzzIPsecLocal and fuzzIPsecEpoch are this host and its key epoch in
// FuzzRemoteIPsec (the Manager numbers epochs by its clock), so that seeds
// can acknowledge it.
var (
	fuzzIPsecLocal = netip.MustParseAddr("198.18.0.1")
	fuzzIPsecEpoch = uint64(1714557600000000000)
)

// FuzzRemoteIPsec: another host's table, as the driver hands it to the IPsec
// negotiation (syncIPsecLocked). Whatever the table says, the two promises
// of the negotiation hold: an inbound SPI is published only once its SA is
// in the kernel, and this host sends only with a pair of keys the peer has
// acknowledged with an SPI (so never on a key it cannot decrypt).
func FuzzRemoteIPsec(f *testing.F) {
	pub := func(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }
	peer := netip.MustParseAddr("198.18.0.2")
	enc := func(t announce.Table) []byte { b, _ := json.Marshal(t); return b }
	keysOnly := announce.Table{Host: peer, Version: announce.Version{Epoch: 5, Seq: 1},
		IPsec: announce.IPsec{Keys: []announce.Key{{Epoch: 7, Public: pub(9)}}}}
	acked := keysOnly
	acked.SPIs = []announce.SPI{{Peer: fuzzIPsecLocal, PeerEpoch: fuzzIPsecEpoch, Epoch: 7, SPI: 0x1234}}
	using := acked
	using.Using = []announce.Using{{Peer: fuzzIPsecLocal, Epoch: 7, PeerEpoch: fuzzIPsecEpoch, SPI: 0xc0ffee}}
	rotating := using
	rotating.Keys = append([]announce.Key{{Epoch: 6, Public: pub(3)}}, rotating.Keys...)
	rotating.SPIs = append(rotating.SPIs, announce.SPI{Peer: fuzzIPsecLocal, PeerEpoch: fuzzIPsecEpoch, Epoch: 6, SPI: 0x99})
	for _, t := range []announce.Table{keysOnly, acked, using, rotating} {
		f.Add(enc(t))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tbl, ok := fuzzDecodeTable(data)
		if !ok {
			return
		}
		k := &fuzzXfrm{sas: map[ipsec.KernelSA]bool{}, out: map[netip.Addr]uint32{}}
		m := ipsec.NewManager(ipsec.ManagerConfig{Local: fuzzIPsecLocal, Kernel: k, Log: fuzzLog,
			Now: func() time.Time { return time.Unix(0, int64(fuzzIPsecEpoch)) }})
		if err := m.Activate(); err != nil {
			t.Fatal(err)
		}
		d := &Driver{now: time.Now, op: make(chan struct{}, 1), seen: map[claim]time.Time{}, ignored: map[claim]bool{}, cfg: Config{IPsec: m}, log: fuzzLog, remote: map[netip.Addr]announce.Table{}, started: time.Now()}
		d.SetRemote(tbl)
		d.syncIPsecOp()

		a := m.Announcement()
		for _, s := range a.SPIs {
			if !k.sas[ipsec.KernelSA{Src: s.Peer, Dst: fuzzIPsecLocal, SPI: s.SPI}] {
				t.Fatalf("announces inbound SPI %+v with no such SA in the kernel", s)
			}
		}
		for _, u := range a.Using {
			if u.Peer != tbl.Host {
				t.Fatalf("sends to %s, which published nothing", u.Peer)
			}
			acked := false
			for _, s := range tbl.SPIs {
				acked = acked || s == (announce.SPI{Peer: fuzzIPsecLocal, PeerEpoch: u.Epoch, Epoch: u.PeerEpoch, SPI: u.SPI})
			}
			if !acked || !k.sas[ipsec.KernelSA{Src: fuzzIPsecLocal, Dst: u.Peer, SPI: u.SPI}] {
				t.Fatalf("sends with %+v: acknowledged by the peer %v, in the kernel %v", u, acked, k.sas)
			}
		}
		for sa := range k.sas {
			if sa.Src != fuzzIPsecLocal {
				continue
			}
			acked := false
			for _, s := range tbl.SPIs {
				acked = acked || (s.Peer == fuzzIPsecLocal && s.SPI == sa.SPI)
			}
			if !acked || sa.Dst != tbl.Host {
				t.Fatalf("outbound SA %+v on an SPI the peer never published", sa)
			}
		}
	})
}
