package ipsec

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

var (
	hostA = netip.MustParseAddr("198.18.0.1")
	hostB = netip.MustParseAddr("198.18.0.2")
	hostC = netip.MustParseAddr("198.18.0.3")
)

func pair(t *testing.T, epoch uint64) *KeyPair {
	t.Helper()
	k, err := NewKeyPair(epoch)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKeySchedule(t *testing.T) {
	a, b, c := pair(t, 1), pair(t, 7), pair(t, 1)
	peerOf := func(k *KeyPair, h netip.Addr) Peer { return Peer{Host: h, Epoch: k.Epoch, Public: k.Public()} }
	must := func(k [KeyMaterial]byte, err error) [KeyMaterial]byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	aToB := must(SAKey(a, hostA, peerOf(b, hostB), true, 0x1234))
	aToBatB := must(SAKey(b, hostB, peerOf(a, hostA), false, 0x1234))
	bToA := must(SAKey(b, hostB, peerOf(a, hostA), true, 0x1234))
	bToAatA := must(SAKey(a, hostA, peerOf(b, hostB), false, 0x1234))
	aToC := must(SAKey(a, hostA, peerOf(c, hostC), true, 0x1234))

	if aToB != aToBatB || bToA != bToAatA {
		t.Fatal("the two ends of a direction derive different keys")
	}
	distinct := map[string][KeyMaterial]byte{"A→B": aToB, "B→A": bToA, "A→C": aToC}
	seen := map[[KeyMaterial]byte]string{}
	for name, k := range distinct {
		if other, dup := seen[k]; dup {
			t.Fatalf("%s and %s share a key", name, other)
		}
		seen[k] = name
	}
	// A new epoch (a restart or a rotation) gives new keys for the same pair.
	a2 := pair(t, 2)
	if must(SAKey(a2, hostA, peerOf(b, hostB), true, 0x1234)) == aToB {
		t.Fatal("a new epoch reused a key")
	}
	// Another SPI between the same epochs: another key (a replacement SA
	// must never repeat GCM nonces under an old key).
	if must(SAKey(a, hostA, peerOf(b, hostB), true, 0x1235)) == aToB {
		t.Fatal("the SPI is not bound into the key")
	}
	// Even the same key pair under another epoch number derives apart.
	a.Epoch = 99
	if must(SAKey(a, hostA, peerOf(b, hostB), true, 0x1234)) == aToB {
		t.Fatal("the epoch number is not bound into the key")
	}
	// Identities bound on both ends change the key, and so does either
	// name; bound on one end only, the schedule is the address-bound one.
	a.Epoch = 1
	named := func(k *KeyPair, h netip.Addr, id string) Peer { p := peerOf(k, h); p.ID = id; return p }
	a.ID = "a"
	if must(SAKey(a, hostA, peerOf(b, hostB), true, 0x1234)) != aToB {
		t.Fatal("an identity on one end only changed the key")
	}
	aToBNamed := must(SAKey(a, hostA, named(b, hostB, "b"), true, 0x1234))
	if aToBNamed == aToB {
		t.Fatal("both identities are not bound into the key")
	}
	if must(SAKey(a, hostA, named(b, hostB, "c"), true, 0x1234)) == aToBNamed {
		t.Fatal("the peer's identity is not bound into the key")
	}
	b.ID = "b"
	if must(SAKey(b, hostB, named(a, hostA, "a"), false, 0x1234)) != aToBNamed {
		t.Fatal("the two ends of a direction derive different identity-bound keys")
	}
	if _, err := SAKey(a, hostA, named(b, hostB, strings.Repeat("x", 256)), true, 0x1234); !errors.Is(err, ErrLongID) {
		t.Fatalf("SAKey with a 256-byte identity: %v, want ErrLongID", err)
	}
	// Erased: nothing more derives from the epoch.
	a.Erase()
	if _, err := SAKey(a, hostA, peerOf(b, hostB), true, 0x1234); !errors.Is(err, ErrErased) {
		t.Fatalf("SAKey after Erase: %v, want ErrErased", err)
	}
	if a.Public() != nil {
		t.Fatal("an erased key still has a public half")
	}
	if _, err := SAKey(b, hostB, Peer{Host: hostA, Public: bytes.Repeat([]byte{1}, 5)}, true, 0x1234); err == nil {
		t.Fatal("a malformed public key was accepted")
	}
}

func TestContainerMTU(t *testing.T) {
	cases := []struct {
		underlay int
		ipv6     bool
		want     int
	}{
		{1500, false, 1408},
		{1501, false, 1408}, // padding: one byte more buys nothing
		{1504, false, 1412},
		{1400, false, 1308},
		{9000, false, 8908},
		{1500, true, 1388},
	}
	for _, tc := range cases {
		got := ContainerMTU(tc.underlay, tc.ipv6)
		if got != tc.want {
			t.Errorf("ContainerMTU(%d, ipv6=%v) = %d, want %d", tc.underlay, tc.ipv6, got, tc.want)
		}
		// The arithmetic itself: the largest inner MTU fits in ESP in UDP
		// (which native ESP, 8 bytes smaller, then fits too), one more
		// does not.
		outer := 20 + 8
		if tc.ipv6 {
			outer = 40 + 8
		}
		size := func(inner int) int {
			payload := 8 + 8 + 14 + inner + 2
			return outer + 8 + 8 + (payload+3)/4*4 + 16
		}
		if size(got) > tc.underlay || size(got+4) <= tc.underlay {
			t.Errorf("underlay %d: inner %d makes %d bytes, inner %d makes %d", tc.underlay, got, size(got), got+4, size(got+4))
		}
	}
}

func TestAllocSPI(t *testing.T) {
	used := map[uint32]bool{}
	for i := 0; i < 1000; i++ {
		spi, err := AllocSPI(func(s uint32) bool { return used[s] })
		if err != nil {
			t.Fatal(err)
		}
		if spi < minSPI || spi > maxSPI || used[spi] {
			t.Fatalf("AllocSPI = %#x: reserved or in use", spi)
		}
		used[spi] = true
	}
	if _, err := AllocSPI(func(uint32) bool { return true }); err == nil {
		t.Fatal("AllocSPI with every SPI in use: want an error")
	}
}
