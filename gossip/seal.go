package gossip

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Labels that separate every key derived from the cluster secret.
const (
	gossipKeyInfo = "vxsec gossip key v1"
	syncKeyInfo   = "vxsec table sync v1"
	// syncEphemeralInfo labels the key of a pull with ephemeral keys.
	syncEphemeralInfo = "vxsec table sync ephemeral v1"
	syncAAD           = "vxsec table"
)

// GossipKey derives serf's AES-256-GCM key of one key period from the
// cluster secret: the secret itself is never used as a key, and each period
// has its own. Every member derives the same keys from the clock alone, so
// the gossip key rotates cluster-wide with no message exchanged, and a host
// that joins later gets in with the secret.
func GossipKey(secret []byte, period int64) ([]byte, error) {
	info := binary.BigEndian.AppendUint64([]byte(gossipKeyInfo), uint64(period))
	return hkdf.Key(sha256.New, secret, nil, string(info), 32)
}

// keyPeriod numbers the gossip key period t falls in.
func keyPeriod(t time.Time, every time.Duration) int64 { return t.UnixNano() / int64(every) }

// gossipKeys are the keys of periods p-1, p and p+1: a member accepts its
// neighbours' keys, so clocks may disagree by up to a period.
func gossipKeys(secret []byte, p int64) (prev, cur, next []byte, err error) {
	if prev, err = GossipKey(secret, p-1); err != nil {
		return
	}
	if cur, err = GossipKey(secret, p); err != nil {
		return
	}
	next, err = GossipKey(secret, p+1)
	return
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

// ephemeralSessionAEAD is the one-message cipher of a pull with ephemeral
// keys: the key is derived from the cluster secret and the X25519 shared
// secret together (input keying material: secret, then shared), salted
// with both nonces and both public keys, the client's first. Knowing the
// cluster secret alone, later, opens nothing.
func ephemeralSessionAEAD(secret, clientNonce, serverNonce, shared, clientPub, serverPub []byte) (cipher.AEAD, error) {
	if len(clientPub) != 32 || len(serverPub) != 32 {
		return nil, errors.New("ephemeral keys are 32 bytes")
	}
	salt := slices.Concat(clientNonce, serverNonce, clientPub, serverPub)
	key, err := hkdf.Key(sha256.New, slices.Concat(secret, shared), salt, syncEphemeralInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("deriving the ephemeral sync key: %w", err)
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
