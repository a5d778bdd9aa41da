// Package ipsec holds vxsec's IPsec: the per-pair key schedule, SPI
// allocation, ESP's MTU arithmetic, and the kernel's xfrm states and
// policies.
//
// Keys: every host makes a fresh X25519 key pair at each start and each
// rotation (an epoch) and publishes only the public half, in a table signed
// by its identity. Each ordered pair of hosts derives its own AES-256-GCM
// key and salt with HKDF-SHA256 over their shared secret, both addresses,
// both identities, both epochs, the direction and the SPI: no key is
// shared by two pairs, none is reused after a restart, and none crosses
// the wire.
//
// The identity is fixed per epoch (KeyPair.ID, published as
// announce.Key.ID), so both ends of an SA always derive with the same
// names, even while a host's identity changes. A pair where either epoch
// names no identity (a host of a release before identities were bound, or
// without an identity) uses the previous, address-bound schedule: an
// upgraded host moves to the identity-bound one at its peer's next epoch,
// with no SA changing keys under traffic. Erasing an epoch's private key once it is rotated out
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
	KeyBytes    = 32
	SaltBytes   = 4
	KeyMaterial = KeyBytes + SaltBytes
	ICVBits     = 128
	// The labels of the two schedules (scheduleInfo). The address-bound
	// one is named v2 for history: it is the second the wire has seen.
	keyScheduleAddr     = "vxsec esp v2"
	keyScheduleIdentity = "vxsec esp v3"
)

// KeyPair is one epoch's X25519 key pair of this host.
type KeyPair struct {
	Epoch uint64
	// ID is this host's identity when the epoch was made: the epoch's SAs
	// are bound to it. Empty: none (the address-bound schedule).
	ID string

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
	// ID is the identity the peer bound the epoch to; the cluster checked
	// it is the one that signed the peer's table.
	ID string
}

// ErrLongID refuses an identity over announce.MaxKeyID bytes, which the
// schedule cannot frame.
var ErrLongID = errors.New("identity longer than 255 bytes")

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
	src := end{localHost, local.Epoch, local.ID}
	dst := end{peer.Host, peer.Epoch, peer.ID}
	if !outbound {
		src, dst = dst, src
	}
	info, err := scheduleInfo(src, dst, spi)
	if err != nil {
		return out, fmt.Errorf("peer %s epoch %d: %w", peer.Host, peer.Epoch, err)
	}
	key, err := hkdf.Key(sha256.New, shared, nil, info, KeyMaterial)
	if err != nil {
		return out, fmt.Errorf("deriving SA key: %w", err)
	}
	copy(out[:], key)
	return out, nil
}

// boundTo is the peer identity an SA between local and an epoch of the
// peer's bound to peerID is keyed to, "" when the schedule is the
// address-bound one.
func boundTo(local *KeyPair, peerID string) string {
	if local.ID == "" {
		return ""
	}
	return peerID
}

// end is one end of an SA as the schedule binds it.
type end struct {
	host  netip.Addr
	epoch uint64
	id    string
}

// scheduleInfo binds a key to its pair, epochs, direction and SPI, and
// when both epochs name an identity, to both identities (each after a
// one-byte length, so no two pairs of names frame alike).
func scheduleInfo(src, dst end, spi uint32) (string, error) {
	bound := src.id != "" && dst.id != ""
	label := keyScheduleAddr
	if bound {
		label = keyScheduleIdentity
	}
	b := []byte(label)
	s16, d16 := src.host.As16(), dst.host.As16()
	b = append(b, s16[:]...)
	b = append(b, d16[:]...)
	b = binary.BigEndian.AppendUint64(b, src.epoch)
	b = binary.BigEndian.AppendUint64(b, dst.epoch)
	b = binary.BigEndian.AppendUint32(b, spi)
	if !bound {
		return string(b), nil
	}
	for _, id := range []string{src.id, dst.id} {
		if len(id) > 255 {
			return "", ErrLongID
		}
		b = append(b, byte(len(id)))
		b = append(b, id...)
	}
	return string(b), nil
}
