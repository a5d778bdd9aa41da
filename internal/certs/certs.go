// Package certs holds the X.509 chores the swarm trust agent and host
// identities share: reading PEM certificate files and verifying a chain
// received as DER.
package certs

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

// ParsePEM reads every CERTIFICATE block of raw: a leaf and the
// intermediates after it, or several roots (swarm during a root
// rotation). Other blocks are skipped.
func ParsePEM(raw []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, raw = pem.Decode(raw)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate in the file")
	}
	return out, nil
}

// Verify parses chain (DER, the leaf first) and verifies the leaf against
// roots at now, with the rest as intermediates; usages are the extended
// key usages accepted. It returns the leaf.
func Verify(chain [][]byte, roots *x509.CertPool, now time.Time, usages ...x509.ExtKeyUsage) (*x509.Certificate, error) {
	leaf, _, err := VerifyChain(chain, roots, now, usages...)
	return leaf, err
}

// VerifyChain is Verify that also returns the chain it verified, from the
// leaf to a root, so that a caller can tell how long the verification
// holds.
func VerifyChain(chain [][]byte, roots *x509.CertPool, now time.Time, usages ...x509.ExtKeyUsage) (*x509.Certificate, []*x509.Certificate, error) {
	if len(chain) == 0 {
		return nil, nil, errors.New("no certificate")
	}
	certs := make([]*x509.Certificate, len(chain))
	for i, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, fmt.Errorf("certificate %d of the chain: %w", i, err)
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	chains, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: usages})
	if err != nil {
		return certs[0], nil, err
	}
	return certs[0], chains[0], nil
}
