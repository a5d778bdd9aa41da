package announce

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
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
// A pass (swarm mode) travels as one more entry after the chain's
// certificates, passPrefix then the pass: no DER certificate starts with
// a zero byte, and a receiver of a release before passes, which does not
// check signatures in swarm mode, still reads the table.
const (
	signedMagic = "\x00VXT1"
	passPrefix  = "\x00vxsec pass\x00"
	// MaxChain bounds the certificates in front of a table: a host's
	// and at most three above it.
	MaxChain = 4
	// maxCert and maxSig bound one certificate and the signature.
	maxCert = 4096
	maxSig  = 1024
	// MaxCRL bounds the revocation list: about 40 bytes an entry, so
	// thousands of revoked hosts.
	MaxCRL = 256 << 10
	// MaxPass bounds a pass: it takes a chain entry's place.
	MaxPass = maxCert - len(passPrefix)
	// MaxSignedBytes bounds a whole signed table.
	MaxSignedBytes = MaxTableBytes + len(signedMagic) + 1 + MaxChain*(2+maxCert) + 2 + maxSig + 4 + MaxCRL
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
	// package swarmtrust), or nil. It is signed by its issuer, not by the
	// author.
	Pass  []byte
	Table []byte
}

// IsSigned tells a signed table from a bare one.
func IsSigned(b []byte) bool { return bytes.HasPrefix(b, []byte(signedMagic)) }

// SignedMessage is what Sig signs.
func SignedMessage(table []byte) []byte {
	return append([]byte(SignedContext), table...)
}

// EncodeSigned is the wire form of s.
func EncodeSigned(s Signed) ([]byte, error) {
	entries := s.Chain
	if s.Pass != nil {
		entries = append(slices.Clip(s.Chain), append([]byte(passPrefix), s.Pass...))
	}
	if len(s.Chain) == 0 || len(entries) > MaxChain || len(s.Sig) == 0 || len(s.Sig) > maxSig || len(s.Table) > MaxTableBytes || len(s.CRL) > MaxCRL || len(s.Pass) > MaxPass || (s.Pass != nil && len(s.Pass) == 0) {
		return nil, fmt.Errorf("a signed table takes 1 to %d certificates and passes, a signature of at most %d bytes, a revocation list of at most %d, a pass of 1 to %d and a table of at most %d", MaxChain, maxSig, MaxCRL, MaxPass, MaxTableBytes)
	}
	out := append([]byte(signedMagic), byte(len(entries)))
	for i, c := range entries {
		if i < len(s.Chain) && bytes.HasPrefix(c, []byte(passPrefix)) {
			return nil, errors.New("a certificate of the chain reads as a pass")
		}
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
	// The pass, if any, is the last entry; none other may read as one.
	for i, c := range s.Chain {
		if !bytes.HasPrefix(c, []byte(passPrefix)) {
			continue
		}
		if i != len(s.Chain)-1 || i == 0 || len(c) == len(passPrefix) {
			return Signed{}, errors.New("signed table: a pass where a certificate belongs, or an empty one")
		}
		s.Pass, s.Chain = c[len(passPrefix):], s.Chain[:i]
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
	s.Table = b[4+n32:]
	if len(s.Table) > MaxTableBytes {
		return Signed{}, &LimitError{Host: "(not decoded)", What: "bytes", Count: len(s.Table), Limit: MaxTableBytes}
	}
	return s, nil
}
