package gossip

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
)

// Labels that separate every key derived from the cluster secret.
const (
	gossipKeyInfo = "vxsec gossip key v1"
	syncKeyInfo   = "vxsec table sync v1"
	syncAAD       = "vxsec table"
)

// GossipKey derives serf's AES-256-GCM key from the cluster secret: the
// secret itself is never used as a key, so each use gets its own.
func GossipKey(secret []byte) ([]byte, error) {
	return hkdf.Key(sha256.New, secret, nil, gossipKeyInfo, 32)
}

// sessionAEAD is the AEAD of one table pull: a key from the cluster secret
// and both sides' fresh nonces, so no key ever seals two messages and a
// recorded answer is useless later. Without a secret the key is public:
// integrity against damage, no authentication (and a loud warning at start).
func sessionAEAD(secret, clientNonce, serverNonce []byte) (cipher.AEAD, error) {
	salt := append(append([]byte{}, clientNonce...), serverNonce...)
	key, err := hkdf.Key(sha256.New, secret, salt, syncKeyInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("deriving the sync key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// seal and open use a zero nonce: the key is used for exactly one message.
func seal(aead cipher.AEAD, plain []byte) []byte {
	return aead.Seal(nil, make([]byte, aead.NonceSize()), plain, []byte(syncAAD))
}

var errUnauthentic = errors.New("table did not authenticate: the peer does not hold this cluster's secret")

func open(aead cipher.AEAD, sealed []byte) ([]byte, error) {
	plain, err := aead.Open(nil, make([]byte, aead.NonceSize()), sealed, []byte(syncAAD))
	if err != nil {
		return nil, errUnauthentic
	}
	return plain, nil
}
