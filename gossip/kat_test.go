package gossip

import (
	"bytes"
	"crypto/ecdh"
	"encoding/hex"
	"testing"
)

// Known-answer vectors of every key vxsec derives from the cluster secret.
// Each host derives them on its own, so a change to a derivation (a label,
// an order, a length) splits a cluster in the middle of a rolling upgrade
// while every test that runs both ends with the same code stays green.
// These bytes are the wire contract: change them only with new labels and
// an upgrade plan.
func TestDerivationKnownAnswers(t *testing.T) {
	secret := bytes.Repeat([]byte{0x5a}, 32)
	clientNonce := bytes.Repeat([]byte{0x01}, nonceSize)
	serverNonce := bytes.Repeat([]byte{0x02}, nonceSize)

	gossipKey, err := GossipKey(secret, 1234567)
	if err != nil {
		t.Fatal(err)
	}
	proof, err := proofMAC(secret, serverNonce, clientNonce)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := sessionAEAD(secret, clientNonce, serverNonce)
	if err != nil {
		t.Fatal(err)
	}
	sealed := seal(aead, []byte(`{"host":"198.18.0.1"}`))
	// A pull with ephemeral keys, from fixed X25519 keys: both sides derive
	// the same cipher, and it is the one these bytes pin.
	cKey, _ := ecdh.X25519().NewPrivateKey(bytes.Repeat([]byte{0x0c}, 32))
	sKey, _ := ecdh.X25519().NewPrivateKey(bytes.Repeat([]byte{0x05}, 32))
	clientSide, err := ephemeralAEAD(secret, clientNonce, serverNonce, cKey, sKey.PublicKey().Bytes(), true)
	if err != nil {
		t.Fatal(err)
	}
	serverSide, err := ephemeralAEAD(secret, clientNonce, serverNonce, sKey, cKey.PublicKey().Bytes(), false)
	if err != nil {
		t.Fatal(err)
	}
	sealedEph := seal(serverSide, []byte(`{"host":"198.18.0.1"}`))
	if _, err := open(clientSide, sealedEph); err != nil {
		t.Fatalf("the client's ephemeral cipher does not open the server's: %v", err)
	}
	cases := []struct {
		name string
		got  []byte
		want string
	}{
		{"gossip key of period 1234567", gossipKey, "63f7e6df74c6f5ff7fba30df67c57b2e7ab4d94c51de55fcd3dc202c9668208e"},
		{"table pull proof", proof, "3be80318a0450ed531ed4c682565441388c0491e30fd68b1184dabc4cf3b24e4"},
		// The session key is checked through what it seals (the zero
		// nonce is the protocol's: one message per key).
		{"table sealed for a session", sealed, "ef1128f56e21950e2fe06ed307332c0767b50b0905e20085e4f7373f1c904862a0519b2b3c"},
		// Computed independently (Python cryptography 48: X25519, HKDF-SHA256, AES-GCM).
		{"table sealed for a session with ephemeral keys", sealedEph, "5f8a9a0b409941c59b636b78d083388d825e50cc1fab6a180da14c46a0e03553c02bb0b2bc"},
	}
	for _, tc := range cases {
		if got := hex.EncodeToString(tc.got); got != tc.want {
			t.Errorf("%s = %s\n want %s", tc.name, got, tc.want)
		}
	}
}
