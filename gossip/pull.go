package gossip

import (
	"bytes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/vxsec/vxsec/announce"
)

// Table pulls travel on the gossip port's TCP listener, told from
// memberlist's streams by their first byte (memberlist's are message types,
// small numbers, or 244 for a label).
//
// Version 2, what this host serves, proves the client before anything but
// a nonce leaves the server:
//
//	client → server  pullMagicV2
//	server → client  pullMagicV2, server nonce (32)
//	client → server  client nonce (32), n (1, 1..maxProofs), n MACs (32 each)
//	                 [if n has identityFlag: length (4), identity block]
//	server → client  length (4, big endian), sealed table
//
// Each MAC is HMAC-SHA256 under a key derived from one cluster secret the
// client holds, over both nonces: during a secret change either side may
// hold two, and the server accepts a MAC made with any secret it holds, and
// seals the table with that one. The server's fresh nonce makes a recorded
// proof useless later. A client without the secret gets the server's nonce
// and nothing else.
//
// In a cluster that requires host identities the client also proves its
// identity: it sets identityFlag in n and sends, after the MACs, its
// certificate chain and its signature over both nonces (announce.Signed
// with no table; the context string differs from a table's). The server
// reads the block only once a MAC has proved the secret, and serves the
// table only if the certificate is of the cluster CA, not revoked, and
// names the address the connection comes from. A host that holds the
// secret but no identity, or a revoked one, reads no table.
//
// Ephemeral keys (forward secrecy): a client pulling from a member that
// announces them (the "pv" tag, sealed in gossip like every tag, so a
// path attacker cannot hide it) sets ephemeralFlag in n and sends a fresh
// X25519 public key after the MACs; the server answers with its own fresh
// public key before the sealed table, and the table is sealed under a key
// derived from the secret, both nonces, both public keys and their shared
// secret. Both private keys are thrown away with the connection, so a
// recording of the pull is opened neither by the cluster secret learnt
// later nor by any key kept on either host. With an identity, the client's
// signature covers its public key too, so a man in the middle holding the
// secret cannot put its own in its place.
//
// Version 1 (pullMagicV1, the client's nonce, then the sealed table to
// anyone who asked) is served only to the addresses of the cluster's
// members, so that hosts of the previous release keep pulling during a
// rolling upgrade (their keys of a new epoch included); a stranger gets
// nothing. This client still pulls from a server that speaks only version
// 1, as it authenticates the table whatever the version.
const (
	pullMagicV1 = 0xA7
	pullMagicV2 = 0xA8
	nonceSize   = 32
	macSize     = sha256.Size
	// maxProofs bounds the MACs a client sends: one per secret it holds,
	// two during a secret change.
	maxProofs = 4
	// maxSealed bounds the sealed table a client reads: the table bound
	// plus the AEAD's tag.
	maxSealed = announce.MaxTableBytes + 16
	// identityFlag in the MAC count says an identity block follows.
	identityFlag = 0x80
	// ephemeralFlag in the MAC count says the client's ephemeral X25519
	// public key follows the MACs.
	ephemeralFlag = 0x40
	// ephemeralSize is an X25519 public key's length.
	ephemeralSize = 32
	// maxIdentity bounds the identity block: a chain of announce.MaxChain
	// certificates and a signature.
	maxIdentity = 20 << 10
)

// pullIdentityContext is what a client's identity signature covers before
// the two nonces.
const pullIdentityContext = "vxsec pull client v1\x00"

// identityMessage is what a client signs to prove its identity for one
// pair of nonces, and its ephemeral public key if it sends one.
func identityMessage(serverNonce, clientNonce, ephemeral []byte) []byte {
	m := append([]byte(pullIdentityContext), serverNonce...)
	return append(append(m, clientNonce...), ephemeral...)
}

// pullProofInfo separates the proof key from every other key derived from
// the cluster secret.
const pullProofInfo = "vxsec table pull proof v2"

var (
	// errOldServer: the server answered the version 2 greeting as only a
	// version 1 server does (memberlist's error message).
	errOldServer = errors.New("the member serves table pulls of version 1 only")
	// errNoHello: the server closed without a byte, which an old server in
	// an open cluster does, and a new one refusing a connection too.
	errNoHello  = errors.New("the member closed the pull without answering")
	errBadProof = errors.New("the client proved no secret of this cluster")
	// errNoIdentity: the cluster requires identities, and the client
	// proved none.
	errNoIdentity = errors.New("the client proved no host identity, which this cluster requires")
)

// proofMAC is the client's proof of one secret for one pair of nonces.
func proofMAC(secret, serverNonce, clientNonce []byte) ([]byte, error) {
	key, err := hkdf.Key(sha256.New, secret, nil, pullProofInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("deriving the pull proof key: %w", err)
	}
	m := hmac.New(sha256.New, key)
	m.Write(serverNonce)
	m.Write(clientNonce)
	return m.Sum(nil), nil
}

// proof is what the client answers the server's greeting with.
type proof struct {
	clientNonce []byte
	macs        [][]byte
	// ephemeral is the client's ephemeral X25519 public key, or nil.
	ephemeral []byte
	// identity is the client's identity block, or nil.
	identity []byte
}

// makeProof proves every secret the client holds.
func makeProof(secrets [][]byte, serverNonce, clientNonce []byte) (proof, error) {
	p := proof{clientNonce: clientNonce}
	for _, s := range secrets[:min(len(secrets), maxProofs)] {
		mac, err := proofMAC(s, serverNonce, clientNonce)
		if err != nil {
			return proof{}, err
		}
		p.macs = append(p.macs, mac)
	}
	return p, nil
}

func (p proof) encode() []byte {
	n := byte(len(p.macs))
	if p.identity != nil {
		n |= identityFlag
	}
	if p.ephemeral != nil {
		n |= ephemeralFlag
	}
	out := append(bytes.Clone(p.clientNonce), n)
	for _, m := range p.macs {
		out = append(out, m...)
	}
	out = append(out, p.ephemeral...)
	if p.identity != nil {
		out = binary.BigEndian.AppendUint32(out, uint32(len(p.identity)))
		out = append(out, p.identity...)
	}
	return out
}

// readProof is the server's decoder of the client's answer, its identity
// block aside (readIdentity). It reads at most
// nonceSize+1+maxProofs*macSize+ephemeralSize bytes, whatever the client
// sends, and reports whether an identity block follows.
func readProof(r io.Reader) (proof, bool, error) {
	head := make([]byte, nonceSize+1)
	if _, err := io.ReadFull(r, head); err != nil {
		return proof{}, false, fmt.Errorf("reading the client's proof: %w", err)
	}
	flagged := head[nonceSize]&identityFlag != 0
	ephemeral := head[nonceSize]&ephemeralFlag != 0
	n := int(head[nonceSize] &^ (identityFlag | ephemeralFlag))
	if n < 1 || n > maxProofs {
		return proof{}, false, fmt.Errorf("the client's proof holds %d MACs, want 1 to %d", n, maxProofs)
	}
	rest := n * macSize
	if ephemeral {
		rest += ephemeralSize
	}
	macs := make([]byte, rest)
	if _, err := io.ReadFull(r, macs); err != nil {
		return proof{}, false, fmt.Errorf("reading the client's proof: %w", err)
	}
	p := proof{clientNonce: head[:nonceSize]}
	for i := range n {
		p.macs = append(p.macs, macs[i*macSize:(i+1)*macSize])
	}
	if ephemeral {
		p.ephemeral = macs[n*macSize:]
	}
	return p, flagged, nil
}

// readIdentity reads the client's identity block, at most maxIdentity
// bytes: only after a MAC proved the secret.
func readIdentity(r io.Reader) ([]byte, error) {
	var n uint32
	if err := binary.Read(r, binary.BigEndian, &n); err != nil {
		return nil, fmt.Errorf("reading the client's identity: %w", err)
	}
	if n == 0 || n > maxIdentity {
		return nil, fmt.Errorf("the client's identity block of %d bytes: want 1 to %d", n, maxIdentity)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("reading the client's identity: %w", err)
	}
	return b, nil
}

// check returns the first of secrets that one of the proof's MACs proves.
func (p proof) check(secrets [][]byte, serverNonce []byte) ([]byte, error) {
	for _, s := range secrets {
		want, err := proofMAC(s, serverNonce, p.clientNonce)
		if err != nil {
			return nil, err
		}
		for _, mac := range p.macs {
			if hmac.Equal(mac, want) {
				return s, nil
			}
		}
	}
	return nil, errBadProof
}

// hello is the server's greeting: the version's magic, then its nonce.
func hello(serverNonce []byte) []byte { return append([]byte{pullMagicV2}, serverNonce...) }

// readHello is the client's decoder of the greeting.
func readHello(r io.Reader) ([]byte, error) {
	var first [1]byte
	if _, err := io.ReadFull(r, first[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errNoHello
		}
		return nil, fmt.Errorf("reading the member's greeting: %w", err)
	}
	if first[0] != pullMagicV2 {
		return nil, errOldServer
	}
	sn := make([]byte, nonceSize)
	if _, err := io.ReadFull(r, sn); err != nil {
		return nil, fmt.Errorf("reading the member's nonce: %w", err)
	}
	return sn, nil
}

// sealedFrame is a sealed table with its length, as both versions send it.
func sealedFrame(sealed []byte) []byte {
	out := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(sealed)), uint32(len(sealed)))
	return append(out, sealed...)
}

// readSealed is the client's decoder of the sealed table. Memory grows
// with what arrives, not with what the length claims: a peer that is not
// who it seems (the table is authenticated only once whole) costs what it
// sends, and never more than maxSealed.
func readSealed(r io.Reader) ([]byte, error) {
	var n uint32
	if err := binary.Read(r, binary.BigEndian, &n); err != nil {
		return nil, fmt.Errorf("reading the table's length: %w", err)
	}
	if n > maxSealed {
		return nil, fmt.Errorf("table of %d bytes is over the limit of %d", n, maxSealed)
	}
	var buf bytes.Buffer
	if _, err := io.CopyN(&buf, r, int64(n)); err != nil {
		return nil, fmt.Errorf("reading the table: %w", err)
	}
	return buf.Bytes(), nil
}

// openTable opens a sealed table under the first of secrets that does.
func openTable(secrets [][]byte, clientNonce, serverNonce, sealed []byte) ([]byte, error) {
	for _, secret := range secrets {
		aead, err := sessionAEAD(secret, clientNonce, serverNonce)
		if err != nil {
			return nil, err
		}
		if plain, err := open(aead, sealed); err == nil {
			return plain, nil
		}
	}
	return nil, errUnauthentic
}

// servePull is the server's side of a version 2 pull, its magic byte read:
// the greeting, the client's proof checked, then the table sealed for this
// session. authenticated is called once the proof holds, before the table
// is sent. Nothing but the greeting is written before. checkPeer, if set,
// is the cluster's requirement of an identity: it judges the client's
// identity block against the message it must sign; without it a block is
// read and ignored.
func servePull(rw io.ReadWriter, secrets [][]byte, serverNonce []byte, table func() []byte, authenticated func(), checkPeer func(block, msg []byte) error) error {
	if _, err := rw.Write(hello(serverNonce)); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	p, flagged, err := readProof(rw)
	if err != nil {
		return err
	}
	secret, err := p.check(secrets, serverNonce)
	if err != nil {
		return err
	}
	authenticated()
	if flagged {
		if p.identity, err = readIdentity(rw); err != nil {
			return err
		}
	}
	if checkPeer != nil {
		if p.identity == nil {
			return errNoIdentity
		}
		if err := checkPeer(p.identity, identityMessage(serverNonce, p.clientNonce, p.ephemeral)); err != nil {
			return fmt.Errorf("%w: %w", errNoIdentity, err)
		}
	}
	if p.ephemeral == nil {
		aead, err := sessionAEAD(secret, p.clientNonce, serverNonce)
		if err != nil {
			return err
		}
		if _, err := rw.Write(sealedFrame(seal(aead, table()))); err != nil {
			return fmt.Errorf("sending the table: %w", err)
		}
		return nil
	}
	mine, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	aead, err := ephemeralAEAD(secret, p.clientNonce, serverNonce, mine, p.ephemeral, false)
	if err != nil {
		return err
	}
	out := append(mine.PublicKey().Bytes(), sealedFrame(seal(aead, table()))...)
	if _, err := rw.Write(out); err != nil {
		return fmt.Errorf("sending the table: %w", err)
	}
	return nil
}

// ephemeralAEAD is the session's cipher of a pull with ephemeral keys:
// mine is this side's private key, theirs the other's public key; the
// client's key comes first in the derivation whichever side derives.
func ephemeralAEAD(secret, clientNonce, serverNonce []byte, mine *ecdh.PrivateKey, theirs []byte, client bool) (cipher.AEAD, error) {
	peer, err := ecdh.X25519().NewPublicKey(theirs)
	if err != nil {
		return nil, fmt.Errorf("the peer's ephemeral key: %w", err)
	}
	shared, err := mine.ECDH(peer)
	if err != nil {
		return nil, fmt.Errorf("the ephemeral key agreement: %w", err)
	}
	cp, sp := mine.PublicKey().Bytes(), theirs
	if !client {
		cp, sp = sp, cp
	}
	return ephemeralSessionAEAD(secret, clientNonce, serverNonce, shared, cp, sp)
}

// servePullV1 answers a version 1 pull, its magic byte read: the client's
// nonce in, the server's nonce and the table sealed for both out. Only a
// member's address is served (see above).
func servePullV1(rw io.ReadWriter, secret, serverNonce []byte, table func() []byte) error {
	cn := make([]byte, nonceSize)
	if _, err := io.ReadFull(rw, cn); err != nil {
		return fmt.Errorf("reading the client's nonce: %w", err)
	}
	aead, err := sessionAEAD(secret, cn, serverNonce)
	if err != nil {
		return err
	}
	if _, err := rw.Write(append(bytes.Clone(serverNonce), sealedFrame(seal(aead, table()))...)); err != nil {
		return fmt.Errorf("sending the table: %w", err)
	}
	return nil
}

// clientPull is the client's side of a version 2 pull on rw: it returns
// the opened table. prove, if set, signs the message that proves this
// host's identity and returns the identity block. ephemeral (the server
// announced it serves them) seals the table under ephemeral keys.
func clientPull(rw io.ReadWriter, secrets [][]byte, clientNonce []byte, prove func(msg []byte) ([]byte, error), ephemeral bool) ([]byte, error) {
	if _, err := rw.Write([]byte{pullMagicV2}); err != nil {
		return nil, err
	}
	sn, err := readHello(rw)
	if err != nil {
		return nil, err
	}
	p, err := makeProof(secrets, sn, clientNonce)
	if err != nil {
		return nil, err
	}
	var mine *ecdh.PrivateKey
	if ephemeral {
		if mine, err = ecdh.X25519().GenerateKey(rand.Reader); err != nil {
			return nil, err
		}
		p.ephemeral = mine.PublicKey().Bytes()
	}
	if prove != nil {
		if p.identity, err = prove(identityMessage(sn, clientNonce, p.ephemeral)); err != nil {
			return nil, err
		}
	}
	if _, err := rw.Write(p.encode()); err != nil {
		return nil, err
	}
	if mine == nil {
		sealed, err := readSealed(rw)
		if err != nil {
			return nil, err
		}
		return openTable(secrets, clientNonce, sn, sealed)
	}
	theirs := make([]byte, ephemeralSize)
	if _, err := io.ReadFull(rw, theirs); err != nil {
		return nil, fmt.Errorf("reading the member's ephemeral key: %w", err)
	}
	sealed, err := readSealed(rw)
	if err != nil {
		return nil, err
	}
	for _, secret := range secrets {
		aead, err := ephemeralAEAD(secret, clientNonce, sn, mine, theirs, true)
		if err != nil {
			return nil, err
		}
		if plain, err := open(aead, sealed); err == nil {
			return plain, nil
		}
	}
	return nil, errUnauthentic
}

// clientPullV1 is the client's side of a version 1 pull, for a member
// that serves only that.
func clientPullV1(rw io.ReadWriter, secrets [][]byte, clientNonce []byte) ([]byte, error) {
	if _, err := rw.Write(append([]byte{pullMagicV1}, clientNonce...)); err != nil {
		return nil, err
	}
	sn := make([]byte, nonceSize)
	if _, err := io.ReadFull(rw, sn); err != nil {
		return nil, fmt.Errorf("reading the member's nonce: %w", err)
	}
	sealed, err := readSealed(rw)
	if err != nil {
		return nil, err
	}
	return openTable(secrets, clientNonce, sn, sealed)
}

func newNonce() []byte {
	b := make([]byte, nonceSize)
	rand.Read(b)
	return b
}
