package ipsec

import (
	"crypto/ecdh"
	"encoding/hex"
	"net/netip"
	"testing"
)

// Known-answer vectors of the SA key schedule. Both ends of a pair derive
// every SA's key on their own, so a change to the derivation, however
// harmless it looks, makes an upgraded host disagree with the hosts not yet
// upgraded: every test that derives both ends with the same code would
// stay green. These bytes are the wire contract; change them only with a
// new keyScheduleV* label and a rolling-upgrade plan.
func TestSAKeyKnownAnswers(t *testing.T) {
	// The X25519 scalars of RFC 7748 §6.1 (Alice and Bob).
	alicePriv := mustHex(t, "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
	bobPriv := mustHex(t, "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
	aliceHost, bobHost := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")
	// The identity-bound vectors were computed independently with
	// Python's cryptography 48 (X25519, HKDF-SHA256), from the schedule
	// as scheduleInfo's comment gives it.
	cases := []struct {
		name     string
		aliceID  string
		bobID    string
		outbound bool
		spi      uint32
		want     string
	}{
		{"alice-to-bob", "", "", true, 0x1234, "a575a993052ca27404934cb90779c980df1bd2c4a634da9184520756489536a2d22d220a"},
		{"bob-to-alice", "", "", false, 0x1234, "12d8377ec317ab3216cdb15653acae331537a73cb841c77ac9ec3f478a95b7c50ee0e1bc"},
		{"alice-to-bob-other-spi", "", "", true, 0x1235, "5868f46e95f990eb9d49d88d69968f7bbe389a476ff5ceaf565be42d88fdaafe0ca1ace9"},
		// Only one end names an identity: the address-bound schedule.
		{"alice-to-bob-one-identity", "alice", "", true, 0x1234, "a575a993052ca27404934cb90779c980df1bd2c4a634da9184520756489536a2d22d220a"},
		{"identities/alice-to-bob", "alice", "bob", true, 0x1234, "4ab676651ef0ef2696424b23a66dc9151c548e819324265b9ac1597d305c68ad38b45a4f"},
		{"identities/bob-to-alice", "alice", "bob", false, 0x1234, "dc802c2565159f43346d199eacf9118f2eb180a76478456a0d7222f43b6801d952671161"},
		// The same keys, epochs and addresses under each other's names.
		{"identities/alice-to-bob-swapped", "bob", "alice", true, 0x1234, "f478e1438f70267f0838cf346cb17a53882c35fdfaaede0190a41f4746264069b1185e6c"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			alice, bob := keyPairFrom(t, 7, alicePriv), keyPairFrom(t, 9, bobPriv)
			alice.ID, bob.ID = tc.aliceID, tc.bobID
			if got, want := hex.EncodeToString(bob.Public()), "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"; got != want {
				t.Fatalf("Bob's public key %s, want RFC 7748's %s", got, want)
			}
			bobPeer := Peer{Host: bobHost, Epoch: bob.Epoch, Public: bob.Public(), ID: bob.ID}
			alicePeer := Peer{Host: aliceHost, Epoch: alice.Epoch, Public: alice.Public(), ID: alice.ID}
			k, err := SAKey(alice, aliceHost, bobPeer, tc.outbound, tc.spi)
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(k[:]); got != tc.want {
				t.Errorf("SAKey = %s\n want %s", got, tc.want)
			}
			// Bob derives the same bytes for the same direction.
			kb, err := SAKey(bob, bobHost, alicePeer, !tc.outbound, tc.spi)
			if err != nil {
				t.Fatal(err)
			}
			if kb != k {
				t.Errorf("Bob derives %x for the same SA", kb)
			}
		})
	}
}

func keyPairFrom(t *testing.T, epoch uint64, scalar []byte) *KeyPair {
	t.Helper()
	priv, err := ecdh.X25519().NewPrivateKey(scalar)
	if err != nil {
		t.Fatal(err)
	}
	return &KeyPair{Epoch: epoch, priv: priv}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
