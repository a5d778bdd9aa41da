package announce

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// A signed table is a table's encoding with its author's signature and
// certificate chain in front. It opens with a byte no JSON table opens
// with, so one pull carries either form and a receiver tells them apart.
//
//	signedMagic (5)
//	n (1, 1..MaxChain), then n times: length (2, big endian), DER
//	length (2), signature
//	length (4), the cluster CA's revocation list (DER; length 0: none)
//	the table's encoding (the rest)
//
// The second form (passMagic, swarm mode) has one more field after the
// revocation list: length (2), the pass (1..MaxPass bytes), a manager's
// statement of the signer's address (package swarmtrust). A table without
// a pass is always encoded in the first form.
const (
	signedMagic = "\x00VXT1"
	passMagic   = "\x00VXT2"
	// MaxChain bounds the certificates in front of a table: a host's
	// and at most three above it.
	MaxChain = 4
	// maxCert and maxSig bound one certificate and the signature.
	maxCert = 4096
	maxSig  = 1024
	// MaxCRL bounds the revocation list: about 40 bytes an entry, so
	// thousands of revoked hosts.
	MaxCRL = 256 << 10
	// MaxPass bounds a pass: a manager's chain of up to two certificates
	// and a signature fit in about 3 KiB.
	MaxPass = 8192
	// MaxSignedBytes bounds a whole signed table.
	MaxSignedBytes = MaxTableBytes + len(signedMagic) + 1 + MaxChain*(2+maxCert) + 2 + maxSig + 4 + MaxCRL + 2 + MaxPass
)

// SignedContext is what a table signature covers in front of the table's
// bytes: a signature made for anything else never verifies as one.
const SignedContext = "vxsec signed table v1\x00"

// Signed is a table's encoding with its author's signature.
type Signed struct {
	// Chain is the author's certificate first, then those above it (DER).
	Chain [][]byte
	// Sig signs SignedContext followed by Table.
	Sig []byte
	// CRL is the newest revocation list of the cluster CA the author
	// holds, or nil. The CA signed it; the author's signature does not
	// cover it.
	CRL []byte
	// Pass is a statement, by someone the receiver trusts, that the
	// author holds the address it is reached at (swarm mode: a manager's;
	// package swarmtrust), or nil. The author's signature does not cover
	// it: the pass is signed by its issuer.
	Pass  []byte
	Table []byte
}

// IsSigned tells a signed table from a bare one.
func IsSigned(b []byte) bool {
	return bytes.HasPrefix(b, []byte(signedMagic)) || bytes.HasPrefix(b, []byte(passMagic))
}

// SignedMessage is what Sig signs.
func SignedMessage(table []byte) []byte {
	return append([]byte(SignedContext), table...)
}

// EncodeSigned is the wire form of s.
func EncodeSigned(s Signed) ([]byte, error) {
	if len(s.Chain) == 0 || len(s.Chain) > MaxChain || len(s.Sig) == 0 || len(s.Sig) > maxSig || len(s.Table) > MaxTableBytes || len(s.CRL) > MaxCRL || len(s.Pass) > MaxPass {
		return nil, fmt.Errorf("a signed table takes 1 to %d certificates, a signature of at most %d bytes, a revocation list of at most %d, a pass of at most %d and a table of at most %d", MaxChain, maxSig, MaxCRL, MaxPass, MaxTableBytes)
	}
	magic := signedMagic
	if len(s.Pass) > 0 {
		magic = passMagic
	}
	out := append([]byte(magic), byte(len(s.Chain)))
	for _, c := range s.Chain {
		if len(c) == 0 || len(c) > maxCert {
			return nil, fmt.Errorf("a certificate of %d bytes: want 1 to %d", len(c), maxCert)
		}
		out = binary.BigEndian.AppendUint16(out, uint16(len(c)))
		out = append(out, c...)
	}
	out = binary.BigEndian.AppendUint16(out, uint16(len(s.Sig)))
	out = append(out, s.Sig...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(s.CRL)))
	out = append(out, s.CRL...)
	if len(s.Pass) > 0 {
		out = binary.BigEndian.AppendUint16(out, uint16(len(s.Pass)))
		out = append(out, s.Pass...)
	}
	return append(out, s.Table...), nil
}

var errShortSigned = errors.New("signed table: cut short")

// DecodeSigned reads a signed table's wire form; the signature is not
// checked here (package identity does).
func DecodeSigned(b []byte) (Signed, error) {
	if len(b) > MaxSignedBytes {
		return Signed{}, &LimitError{Host: "(not decoded)", What: "signed bytes", Count: len(b), Limit: MaxSignedBytes}
	}
	if !IsSigned(b) {
		return Signed{}, errors.New("signed table: no signed table's header")
	}
	withPass := bytes.HasPrefix(b, []byte(passMagic))
	b = b[len(signedMagic):]
	if len(b) < 1 {
		return Signed{}, errShortSigned
	}
	n := int(b[0])
	b = b[1:]
	if n < 1 || n > MaxChain {
		return Signed{}, fmt.Errorf("signed table: %d certificates, want 1 to %d", n, MaxChain)
	}
	field := func(max int) ([]byte, error) {
		if len(b) < 2 {
			return nil, errShortSigned
		}
		l := int(binary.BigEndian.Uint16(b))
		if l == 0 || l > max {
			return nil, fmt.Errorf("signed table: a field of %d bytes, want 1 to %d", l, max)
		}
		if len(b) < 2+l {
			return nil, errShortSigned
		}
		f := b[2 : 2+l]
		b = b[2+l:]
		return f, nil
	}
	var s Signed
	for range n {
		c, err := field(maxCert)
		if err != nil {
			return Signed{}, err
		}
		s.Chain = append(s.Chain, c)
	}
	sig, err := field(maxSig)
	if err != nil {
		return Signed{}, err
	}
	s.Sig = sig
	if len(b) < 4 {
		return Signed{}, errShortSigned
	}
	n32 := binary.BigEndian.Uint32(b)
	if n32 > MaxCRL {
		return Signed{}, fmt.Errorf("signed table: a revocation list of %d bytes, over %d", n32, MaxCRL)
	}
	if uint32(len(b)-4) < n32 {
		return Signed{}, errShortSigned
	}
	if n32 > 0 {
		s.CRL = b[4 : 4+n32]
	}
	b = b[4+n32:]
	if withPass {
		if s.Pass, err = field(MaxPass); err != nil {
			return Signed{}, err
		}
	}
	s.Table = b
	if len(s.Table) > MaxTableBytes {
		return Signed{}, &LimitError{Host: "(not decoded)", What: "bytes", Count: len(s.Table), Limit: MaxTableBytes}
	}
	return s, nil
}
