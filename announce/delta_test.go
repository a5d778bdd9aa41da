package announce

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"
)

func deltaEndpoint(i int) Endpoint {
	return Endpoint{
		VNI: 100 + uint32(i%3), IP: netip.AddrFrom4([4]byte{10, 50, byte(i / 250), byte(1 + i%250)}),
		MAC:     net.HardwareAddr{2, 0x42, 10, 50, byte(i / 250), byte(1 + i%250)},
		Created: time.Date(2026, 12, 2, 10, 0, 0, i*1000003, time.UTC),
	}
}

// roundTrip is what a receiver holds of a table: its encoding decoded.
func roundTrip(t *testing.T, tbl Table) (Table, []byte) {
	t.Helper()
	raw, err := Encode(tbl)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	return back, raw
}

func withEndpoints(base Table, seq uint64, idx ...int) Table {
	base.Version.Seq = seq
	base.Endpoints = nil
	for _, i := range idx {
		base.Endpoints = append(base.Endpoints, deltaEndpoint(i))
	}
	return base
}

// TestDelta: what a delta is made for, and what it refuses to stand for.
func TestDelta(t *testing.T) {
	base := fuzzSampleTable()
	many := make([]int, 60)
	for i := range many {
		many[i] = 100 + i
	}
	otherNet := withEndpoints(base, 8, 1, 2, 3)
	otherNet.Networks = otherNet.Networks[:1]
	addedNet := withEndpoints(base, 8, 1, 2, 3, 4)
	addedNet.Networks = append(slices.Clone(addedNet.Networks), Network{ID: "n-new", VNI: 4242,
		Subnets: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}, Created: time.Date(2026, 12, 2, 11, 0, 0, 0, time.UTC)})
	noNets := withEndpoints(base, 8)
	noNets.Networks = nil
	otherKeys := withEndpoints(base, 8, 1, 2, 3)
	otherKeys.Keys = []Key{{Epoch: 9, Public: bytes.Repeat([]byte{9}, 32)}}
	otherCRL := withEndpoints(base, 8, 1, 2, 3)
	otherCRL.CRL = 4
	keysAndEndpoints := withEndpoints(base, 8, 2, 3, 4)
	keysAndEndpoints.Using = nil
	restarted := withEndpoints(base, 8, 1, 2, 3)
	restarted.Version.Epoch++
	for _, c := range []struct {
		name       string
		prev, next Table
		ok         bool
		removed    int
		added      int
	}{
		{"one added", withEndpoints(base, 7, 1, 3), withEndpoints(base, 8, 1, 2, 3), true, 0, 1},
		{"one removed", withEndpoints(base, 7, 1, 2, 3), withEndpoints(base, 8, 1, 3), true, 1, 0},
		{"added and removed", withEndpoints(base, 7, 1, 2, 3, 4), withEndpoints(base, 8, 0, 2, 4, 5), true, 2, 2},
		{"from none", withEndpoints(base, 7), withEndpoints(base, 8, 1, 2), true, 0, 2},
		{"to none", withEndpoints(base, 7, 1, 2), withEndpoints(base, 8), true, 2, 0},
		{"nothing but the version", withEndpoints(base, 7, 1, 2), withEndpoints(base, 9, 1, 2), true, 0, 0},
		// The author sorts its endpoints; one that did not is pulled.
		{"kept endpoints reordered", withEndpoints(base, 7, 1, 2, 3), withEndpoints(base, 8, 3, 1, 2), false, 0, 0},
		{"a network removed", withEndpoints(base, 7, 1, 2, 3), otherNet, true, 0, 0},
		{"a network and an endpoint added", withEndpoints(base, 7, 1, 2, 3), addedNet, true, 0, 1},
		{"the last network removed", withEndpoints(base, 7), noNets, true, 0, 0},
		{"the keys changed", withEndpoints(base, 7, 1, 2, 3), otherKeys, true, 0, 0},
		{"IPsec and endpoints changed", withEndpoints(base, 7, 1, 2, 3), keysAndEndpoints, true, 1, 1},
		{"the revocation list changed", withEndpoints(base, 7, 1, 2, 3), otherCRL, false, 0, 0},
		{"a restart (another epoch)", withEndpoints(base, 7, 1, 2, 3), restarted, false, 0, 0},
		{"an older version", withEndpoints(base, 9, 1, 2), withEndpoints(base, 8, 1, 2, 3), false, 0, 0},
		{"too many to fit", withEndpoints(base, 7, 1), withEndpoints(base, 8, append([]int{1}, many...)...), false, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			prev, _ := roundTrip(t, c.prev)
			nextRaw, err := Encode(c.next)
			if err != nil {
				t.Fatal(err)
			}
			d, ok := Diff(c.prev, c.next, nextRaw, 72)
			if ok != c.ok {
				t.Fatalf("Diff made a delta: %v, want %v", ok, c.ok)
			}
			if !ok {
				return
			}
			if len(d.Removed) != c.removed || len(d.Added) != c.added {
				t.Fatalf("removed %v, added %d; want %d and %d", d.Removed, len(d.Added), c.removed, c.added)
			}
			if sameIPsec := reflect.DeepEqual(c.prev.IPsec, c.next.IPsec); sameIPsec != (d.IPsec == nil) {
				t.Fatalf("IPsec part carried: %q; the IPsec parts are the same: %v", d.IPsec, sameIPsec)
			}
			if sameNets := reflect.DeepEqual(c.prev.Networks, c.next.Networks); sameNets != (d.Networks == nil) {
				t.Fatalf("networks carried: %q; the networks are the same: %v", d.Networks, sameNets)
			}
			d.Sig = bytes.Repeat([]byte{0x30}, 72)
			wire, err := EncodeDelta(d)
			if err != nil {
				t.Fatal(err)
			}
			back, body, err := DecodeDelta(wire)
			if err != nil {
				t.Fatal(err)
			}
			if want, _ := d.Body(); !bytes.Equal(body, want) || !bytes.Equal(back.Sig, d.Sig) {
				t.Fatal("the decoded body or signature is not what was encoded")
			}
			got, raw, err := back.Install(prev)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(raw, nextRaw) || got.Version != c.next.Version {
				t.Fatalf("installed\n%s\nwant\n%s", raw, nextRaw)
			}
		})
	}
}

// TestDeltaRefused: a delta onto a table other than its base, or one that
// does not rebuild the table it names, installs nothing.
func TestDeltaRefused(t *testing.T) {
	base := fuzzSampleTable()
	prev, _ := roundTrip(t, withEndpoints(base, 7, 1, 2, 3))
	next := withEndpoints(base, 8, 1, 3, 4)
	nextRaw, _ := Encode(next)
	d, ok := Diff(prev, next, nextRaw, 0)
	if !ok {
		t.Fatal("no delta for a plain change")
	}
	if _, _, err := d.Install(prev); err != nil {
		t.Fatalf("control: the delta does not install on its base: %v", err)
	}
	older, _ := roundTrip(t, withEndpoints(base, 6, 1, 2))
	otherHost := prev
	otherHost.Host = netip.MustParseAddr("198.18.0.99")
	forged := d
	forged.Added = slices.Clone(d.Added)
	forged.Added[0].Endpoint.IP = netip.MustParseAddr("10.50.9.9")
	badHash := d
	badHash.Hash[0] ^= 1
	outOfRange := d
	outOfRange.Removed = []int{7}
	for _, c := range []struct {
		name string
		d    Delta
		on   Table
		want error
	}{
		{"onto an older version (a gap)", d, older, ErrDeltaBase},
		{"onto another host's table", d, otherHost, ErrDeltaBase},
		{"an endpoint changed on the way", forged, prev, ErrDeltaMismatch},
		{"another table's hash", badHash, prev, ErrDeltaMismatch},
		{"removing what is not there", outOfRange, prev, ErrDeltaMismatch},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, _, err := c.d.Install(c.on); !errors.Is(err, c.want) {
				t.Fatalf("Install: %v, want %v", err, c.want)
			}
		})
	}
}

// TestDeltaRandom: any change of endpoints a host can make, in the order
// it sorts them, travels as a delta that rebuilds the table exactly, or
// is left to the pull (too large).
func TestDeltaRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	base := fuzzSampleTable()
	made := 0
	for round := range 500 {
		var a, b []int
		for i := range 40 {
			if rng.IntN(2) == 0 {
				a = append(a, i)
			}
			if rng.IntN(3) > 0 && (slices.Contains(a, i) || rng.IntN(4) == 0) {
				b = append(b, i)
			}
		}
		prev, _ := roundTrip(t, withEndpoints(base, 7, a...))
		next := withEndpoints(base, 8+uint64(round), b...)
		if round%3 == 0 {
			next.UDP = uint16(round) // the IPsec part changes too
		}
		if round%5 == 0 {
			next.Networks = next.Networks[:round%len(next.Networks)] // and the networks
		}
		nextRaw, _ := Encode(next)
		d, ok := Diff(prev, next, nextRaw, 72)
		if !ok {
			continue
		}
		made++
		wire, err := EncodeDelta(d)
		if err != nil {
			t.Fatal(err)
		}
		back, _, err := DecodeDelta(wire)
		if err != nil {
			t.Fatal(err)
		}
		if _, raw, err := back.Install(prev); err != nil || !bytes.Equal(raw, nextRaw) {
			t.Fatalf("round %d: %v → %v did not rebuild: %v", round, a, b, err)
		}
	}
	if made < 250 {
		t.Fatalf("only %d of 500 changes made a delta", made)
	}
}

// TestDeltaWireForm: the framing, byte for byte (a known answer).
func TestDeltaWireForm(t *testing.T) {
	d := Delta{
		Host: netip.MustParseAddr("198.18.0.2"), Prev: Version{Epoch: 1, Seq: 2}, Next: Version{Epoch: 1, Seq: 3},
		Removed: []int{1},
		Added:   []Inserted{{At: 0, Endpoint: Endpoint{VNI: 300, IP: netip.MustParseAddr("10.0.0.1"), MAC: net.HardwareAddr{2, 1}, Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}}},
		Sig:     []byte{0x51},
	}
	d.Hash[0], d.Hash[31] = 0xaa, 0xbb
	b, err := EncodeDelta(d)
	if err != nil {
		t.Fatal(err)
	}
	want := "\x00VXD\x04\xc6\x12\x00\x02" + "\x00\x00\x00\x00\x00\x00\x00\x01\x02\x03" + "\xaa" + string(make([]byte, 30)) + "\xbb" +
		"\x01\x01" + "\x01\x00\xac\x02\x04\x0a\x00\x00\x01\x02\x02\x01\x142026-01-02T03:04:05Z" + "\x00" + "\x00" + "\x01\x51"
	if string(b) != want {
		t.Fatalf("wire form\n%q\nwant\n%q", b, want)
	}
	d.IPsec = []byte(`{"udp":4500}`)
	b, err = EncodeDelta(d)
	if err != nil {
		t.Fatal(err)
	}
	withIPsec := want[:len(want)-4] + "\x0c" + `{"udp":4500}` + "\x00" + "\x01\x51"
	if string(b) != withIPsec {
		t.Fatalf("wire form with an IPsec part\n%q\nwant\n%q", b, withIPsec)
	}
	d.Networks = []byte(`null`)
	b, err = EncodeDelta(d)
	if err != nil {
		t.Fatal(err)
	}
	if want := withIPsec[:len(withIPsec)-3] + "\x04null" + "\x01\x51"; string(b) != want {
		t.Fatalf("wire form with networks\n%q\nwant\n%q", b, want)
	}
	if !IsDelta(b) || IsDelta([]byte("{}")) || IsSigned(b) {
		t.Fatal("IsDelta")
	}
}

// FuzzDecodeDelta: a delta as it arrives from the gossip layer. A refused
// one names why; an accepted one is within its bounds, its indices
// ascend, and it encodes back to exactly the bytes received (nothing
// outside the signed body but the signature).
func FuzzDecodeDelta(f *testing.F) {
	base := fuzzSampleTable()
	prev := withEndpoints(base, 7, 1, 2, 3)
	next := withEndpoints(base, 8, 1, 3, 4, 5)
	nextRaw, _ := Encode(next)
	d, _ := Diff(prev, next, nextRaw, 72)
	d.Sig = bytes.Repeat([]byte{0x30}, 70)
	good, _ := EncodeDelta(d)
	f.Add(good)
	f.Add(good[:40])
	rekeyed := next
	rekeyed.Version.Seq++
	rekeyed.Keys = []Key{{Epoch: 9, Public: bytes.Repeat([]byte{9}, 32), ID: "h1"}}
	rekeyedRaw, _ := Encode(rekeyed)
	if dk, ok := Diff(next, rekeyed, rekeyedRaw, 72); ok {
		dk.Sig = bytes.Repeat([]byte{0x30}, 70)
		b, _ := EncodeDelta(dk)
		f.Add(b)
	}
	netted := rekeyed
	netted.Version.Seq++
	netted.Networks = netted.Networks[:1]
	nettedRaw, _ := Encode(netted)
	if dn, ok := Diff(rekeyed, netted, nettedRaw, 72); ok {
		dn.Sig = bytes.Repeat([]byte{0x30}, 70)
		b, _ := EncodeDelta(dn)
		f.Add(b)
	}
	v6 := d
	v6.Host = netip.MustParseAddr("fd00::2")
	if b, err := EncodeDelta(v6); err == nil {
		f.Add(b)
	}
	f.Add([]byte(deltaMagic + "\x04\x01\x02\x03\x04"))
	f.Add([]byte(deltaMagic + "\x10"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, body, err := DecodeDelta(b)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("a refusal without a reason")
			}
			return
		}
		if len(b) > MaxDeltaBytes || !d.Prev.Less(d.Next) || d.Prev.Epoch != d.Next.Epoch {
			t.Fatalf("accepted a delta past its bounds: %d bytes, %s → %s", len(b), d.Prev, d.Next)
		}
		for _, i := range d.Removed {
			if i >= MaxEndpointsPerHost {
				t.Fatalf("index %d", i)
			}
		}
		again, err := d.Body()
		if err != nil || !bytes.Equal(again, body) {
			t.Fatalf("body %x encodes back to %x (%v)", body, again, err)
		}
		back, err := EncodeDelta(d)
		if err != nil || !bytes.Equal(back, b) {
			t.Fatalf("decoded %x and encoded back to %x (%v)", b, back, err)
		}
		// Applying it to any table refuses or yields a table within the
		// bounds: never a panic.
		_, _, _ = d.Install(withEndpoints(Table{Host: d.Host, Version: d.Prev}, d.Prev.Seq, 1, 2, 3))
	})
}

func ExampleDiff() {
	base := Table{Host: netip.MustParseAddr("198.18.0.2"), Version: Version{Epoch: 1, Seq: 1}}
	prev := withEndpoints(base, 1, 1, 2)
	next := withEndpoints(base, 2, 1, 2, 3)
	raw, _ := Encode(next)
	d, ok := Diff(prev, next, raw, 72)
	wire, _ := EncodeDelta(d)
	full, _ := Encode(next)
	fmt.Println(ok, len(d.Added), len(wire) < len(full)/2)
	// Output: true 1 true
}
