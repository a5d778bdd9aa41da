package announce

// Fuzz targets of what a host takes from its peers: the table version
// announced in a serf tag, and a pulled table. `go test` runs the seeds as
// regression tests; `make fuzz` fuzzes.

import (
	"bytes"
	"encoding/json"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"
)

// FuzzParseVersion: a version tag parses to the version it was made from
// (String, then ParseVersion, is the identity), and a refused tag is quoted
// in the error, so a log line shows what the member announced.
func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{"1714557600123456789.0", "1714557600123456789.42", "0.0", "-1.5", "1.x", "", ".", "9223372036854775807.18446744073709551615", "+7.007"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseVersion(s)
		if err != nil {
			if !bytes.Contains([]byte(err.Error()), []byte(strconv.Quote(s))) {
				t.Fatalf("ParseVersion(%q): error %q does not quote the tag", s, err)
			}
			return
		}
		back, err := ParseVersion(v.String())
		if err != nil || back != v {
			t.Fatalf("ParseVersion(%q) = %v, whose tag %q parses to %v, %v", s, v, v.String(), back, err)
		}
		if back.Less(v) || v.Less(back) {
			t.Fatalf("%v and its own tag's version are ordered", v)
		}
	})
}

// fuzzSampleTable is a table as a host with an encrypted network publishes it.
func fuzzSampleTable() Table {
	at := func(s string) time.Time { tm, _ := time.Parse(time.RFC3339Nano, s); return tm }
	peer := netip.MustParseAddr("198.18.0.3")
	return Table{
		Host:    netip.MustParseAddr("198.18.0.2"),
		Version: Version{Epoch: 1714557600123456789, Seq: 7},
		Networks: []Network{
			{ID: "3c5e8a0b1f2d4e6a8c0b2d4f6a8c0e2a4c6e8a0b2d4f6a8c0e2a4c6e8a0b2d4f", VNI: 100,
				Subnets: []netip.Prefix{netip.MustParsePrefix("10.50.0.0/16")}, Created: at("2024-05-01T10:00:00.123456789Z")},
			{ID: "secure", VNI: 1048577, Subnets: []netip.Prefix{netip.MustParsePrefix("10.60.0.0/24")}, Encrypted: true,
				Created: at("2024-05-01T10:00:01+02:00")},
		},
		Endpoints: []Endpoint{
			{VNI: 100, IP: netip.MustParseAddr("10.50.1.2"), MAC: net.HardwareAddr{2, 0x42, 10, 50, 1, 2}, Created: at("2024-05-01T10:00:02Z")},
			{VNI: 1048577, IP: netip.MustParseAddr("10.60.0.5"), MAC: net.HardwareAddr{2, 0x42, 10, 60, 0, 5}, Created: at("2024-05-01T10:00:03Z")},
		},
		IPsec: IPsec{
			Keys:  []Key{{Epoch: 1714557600123456789, Public: bytes.Repeat([]byte{7}, 32)}},
			SPIs:  []SPI{{Peer: peer, PeerEpoch: 1714557500000000000, Epoch: 1714557600123456789, SPI: 0xc1a0f00d}},
			Using: []Using{{Peer: peer, Epoch: 1714557600123456789, PeerEpoch: 1714557500000000000, SPI: 0x0badcafe}},
		},
	}
}

// FuzzTable: a pulled table, decoded as a pull decodes it. What decodes
// encodes again to the same table (what one host publishes, every other
// reads as it was meant), its version is one a tag can announce, and its
// host's text names it exactly, which is what a pull checks against the
// member's name before installing the table.
func FuzzTable(f *testing.F) {
	full, err := json.Marshal(fuzzSampleTable())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(full)
	f.Add([]byte(`{"host":"198.18.0.9","version":{"epoch":1714557600000000000,"seq":0}}`))
	f.Add([]byte(`{"host":"fd00::9","version":{"epoch":-1,"seq":1},"endpoints":[{"vni":1,"ip":"10.0.0.1","mac":"AkIKAAAB","created":"0001-01-01T00:00:00Z"}]}`))
	f.Add([]byte(`{"host":"198.18.0.9","networks":[{"id":"x","vni":4294967295,"subnets":["10.0.0.0/33"]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tbl, err := Decode(data)
		if err != nil {
			return
		}
		enc, err := Encode(tbl)
		if err != nil {
			t.Fatalf("a decoded table does not encode again: %v\n%+v", err, tbl)
		}
		back, err := Decode(enc)
		if err != nil {
			t.Fatalf("a table's own encoding does not decode: %v\n%s", err, enc)
		}
		again, _ := Encode(back)
		if !bytes.Equal(enc, again) || back.Host != tbl.Host || back.Version != tbl.Version ||
			len(back.Networks) != len(tbl.Networks) || len(back.Endpoints) != len(tbl.Endpoints) ||
			len(back.Keys) != len(tbl.Keys) || len(back.SPIs) != len(tbl.SPIs) || len(back.Using) != len(tbl.Using) {
			t.Fatalf("table changed through encoding:\n%s\n%s", enc, again)
		}
		if v, err := ParseVersion(tbl.Version.String()); err != nil || v != tbl.Version {
			t.Fatalf("version %+v: its tag %q parses to %v, %v", tbl.Version, tbl.Version.String(), v, err)
		}
		if tbl.Host.IsValid() {
			if a, err := netip.ParseAddr(tbl.Host.String()); err != nil || a != tbl.Host {
				t.Fatalf("host %#v: its name %q parses to %v, %v", tbl.Host, tbl.Host.String(), a, err)
			}
		}
	})
}

// FuzzDecodeSigned: a pulled signed table. A refused one names why; an
// accepted one is within every bound, and encodes back to exactly the
// bytes received (one wire form per signed table: nothing a signature
// does not cover hides in its framing).
func FuzzDecodeSigned(f *testing.F) {
	raw, _ := Encode(fuzzSampleTable())
	good, _ := EncodeSigned(Signed{Chain: [][]byte{bytes.Repeat([]byte{0x30}, 600), bytes.Repeat([]byte{0x31}, 500)}, Sig: bytes.Repeat([]byte{0x32}, 71), Table: raw})
	withCRL, _ := EncodeSigned(Signed{Chain: [][]byte{bytes.Repeat([]byte{0x30}, 600)}, Sig: bytes.Repeat([]byte{0x32}, 71), CRL: bytes.Repeat([]byte{0x33}, 300), Table: raw})
	withPass, _ := EncodeSigned(Signed{Chain: [][]byte{bytes.Repeat([]byte{0x30}, 600)}, Sig: bytes.Repeat([]byte{0x32}, 71), Pass: bytes.Repeat([]byte{0x34}, 200), Table: raw})
	f.Add(withCRL)
	f.Add(withPass)
	f.Add(good)
	f.Add(good[:len(signedMagic)+3])
	f.Add(raw)
	f.Add([]byte(signedMagic + "\x05"))
	f.Add([]byte(signedMagic + "\x01\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeSigned(b)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("a refusal without a reason")
			}
			return
		}
		if len(s.Chain) < 1 || len(s.Chain) > MaxChain || len(s.Sig) < 1 || len(s.Sig) > maxSig || len(s.Table) > MaxTableBytes || len(s.CRL) > MaxCRL || len(s.Pass) > MaxPass || (s.Pass != nil && len(s.Pass) == 0) {
			t.Fatalf("accepted a signed table past its bounds: %d certificates, %d-byte signature, %d-byte pass, %d-byte table", len(s.Chain), len(s.Sig), len(s.Pass), len(s.Table))
		}
		back, err := EncodeSigned(s)
		if err != nil || !bytes.Equal(back, b) {
			t.Fatalf("decoded %x and encoded back to %x (%v)", b, back, err)
		}
	})
}

// TestSignedWireForm: the framing, byte for byte (a known answer: a
// change of the wire form must be deliberate, with a new magic).
func TestSignedWireForm(t *testing.T) {
	b, err := EncodeSigned(Signed{Chain: [][]byte{{0xc1, 0xc2}}, Sig: []byte{0x51}, Table: []byte("{}")})
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("\x00VXT1\x01\x00\x02\xc1\xc2\x00\x01\x51\x00\x00\x00\x00{}")
	if !bytes.Equal(b, want) {
		t.Fatalf("wire form %q, want %q", b, want)
	}
	// A pass is one more entry after the chain, read by a release before
	// passes as a certificate it does not check.
	withPass, err := EncodeSigned(Signed{Chain: [][]byte{{0xc1, 0xc2}}, Sig: []byte{0x51}, Pass: []byte{0xa1, 0xa2}, Table: []byte("{}")})
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte("\x00VXT1\x02\x00\x02\xc1\xc2\x00\x0e\x00vxsec pass\x00\xa1\xa2\x00\x01\x51\x00\x00\x00\x00{}"); !bytes.Equal(withPass, want) {
		t.Fatalf("wire form with a pass %q, want %q", withPass, want)
	}
	if s, err := DecodeSigned(withPass); err != nil || len(s.Chain) != 1 || !bytes.Equal(s.Pass, []byte{0xa1, 0xa2}) {
		t.Fatalf("decoded %+v, %v", s, err)
	}
	if !IsSigned(b) || IsSigned([]byte("{}")) {
		t.Fatal("IsSigned")
	}
	if string(SignedMessage([]byte("{}"))) != "vxsec signed table v1\x00{}" {
		t.Fatal("the signed message's context changed")
	}
}
