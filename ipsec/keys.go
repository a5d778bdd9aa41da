// Package ipsec holds vxsec's IPsec: the per-pair key schedule, SPI
// allocation, ESP's MTU arithmetic, and the kernel's xfrm states and
// policies.
//
// Keys: every host makes a fresh X25519 key pair at each start and each
// rotation (an epoch) and publishes only the public half. Each ordered pair
// of hosts derives its own AES-256-GCM key and salt with HKDF-SHA256 over
// their shared secret, both identities, both epochs and the direction: no
// key is shared by two pairs, none is reused after a restart, and none
// crosses the wire. Erasing an epoch's private key once it is rotated out
// makes recorded traffic of that epoch undecryptable later.
package ipsec

import (
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
)

// Sizes of rfc4106(gcm(aes)) as vxsec uses it: AES-256, a 4-byte salt,
// and the full 128-bit ICV.
const (
	KeyBytes      = 32
	SaltBytes     = 4
	KeyMaterial   = KeyBytes + SaltBytes
	ICVBits       = 128
	keyScheduleV1 = "vxsec esp v2"
)

// KeyPair is one epoch's X25519 key pair of this host.
type KeyPair struct {
	Epoch uint64

	mu   sync.Mutex
	priv *ecdh.PrivateKey
}

// NewKeyPair makes a fresh key pair for epoch.
func NewKeyPair(epoch uint64) (*KeyPair, error) {
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("making an X25519 key: %w", err)
	}
	return &KeyPair{Epoch: epoch, priv: priv}, nil
}

// Public is the half that is published.
func (k *KeyPair) Public() []byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.priv == nil {
		return nil
	}
	return k.priv.PublicKey().Bytes()
}

// ErrErased is returned for an epoch whose private key is gone.
var ErrErased = errors.New("the epoch's private key is erased")

// Erase forgets the private key: nothing derives from this epoch again.
// (Go cannot wipe the key's memory; dropping the only reference is what
// the language allows, and the garbage collector reclaims it.)
func (k *KeyPair) Erase() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.priv = nil
}

// Peer is the public half of another host's epoch.
type Peer struct {
	Host   netip.Addr
	Epoch  uint64
	Public []byte
}

// SAKey derives the key material (key then salt) of the SA on spi carrying
// traffic from src to dst, where one of them is this host (local) and the
// other the peer. Both hosts derive the same bytes for each direction.
//
// The SPI is bound in because ESP's sequence number, which GCM's nonce is
// made from, starts again at every new SA: two SAs sharing a key would
// repeat nonces. Every SA, even a replacement between the same epochs,
// gets its own SPI and so its own key.
func SAKey(local *KeyPair, localHost netip.Addr, peer Peer, outbound bool, spi uint32) ([KeyMaterial]byte, error) {
	var out [KeyMaterial]byte
	local.mu.Lock()
	priv := local.priv
	local.mu.Unlock()
	if priv == nil {
		return out, ErrErased
	}
	pub, err := ecdh.X25519().NewPublicKey(peer.Public)
	if err != nil {
		return out, fmt.Errorf("peer %s epoch %d: bad public key: %w", peer.Host, peer.Epoch, err)
	}
	shared, err := priv.ECDH(pub)
	if err != nil {
		return out, fmt.Errorf("peer %s epoch %d: %w", peer.Host, peer.Epoch, err)
	}
	src, dst := localHost, peer.Host
	srcEpoch, dstEpoch := local.Epoch, peer.Epoch
	if !outbound {
		src, dst, srcEpoch, dstEpoch = dst, src, dstEpoch, srcEpoch
	}
	info := scheduleInfo(src, dst, srcEpoch, dstEpoch, spi)
	key, err := hkdf.Key(sha256.New, shared, nil, info, KeyMaterial)
	if err != nil {
		return out, fmt.Errorf("deriving SA key: %w", err)
	}
	copy(out[:], key)
	return out, nil
}

// scheduleInfo binds a key to its pair, epochs, direction and SPI.
func scheduleInfo(src, dst netip.Addr, srcEpoch, dstEpoch uint64, spi uint32) string {
	b := []byte(keyScheduleV1)
	s16, d16 := src.As16(), dst.As16()
	b = append(b, s16[:]...)
	b = append(b, d16[:]...)
	b = binary.BigEndian.AppendUint64(b, srcEpoch)
	b = binary.BigEndian.AppendUint64(b, dstEpoch)
	b = binary.BigEndian.AppendUint32(b, spi)
	return string(b)
}
