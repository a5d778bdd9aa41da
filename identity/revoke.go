package identity

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// CRLFile is the cluster CA's revocation list, in the CA directory (where
// `vxsec ca revoke` writes it) and in a host directory or the daemon's
// state directory (where a host keeps the newest it has seen).
const CRLFile = "crl.pem"

// issuedDir keeps, in the CA directory, a copy of every certificate
// issued, so that a host can be revoked by name.
const issuedDir = "issued"

// ErrRevoked: the signer's identity is on the cluster CA's revocation list.
var ErrRevoked = errors.New("the signer's identity is revoked")

// Revoke puts every certificate issued to host (or, if host is a serial
// number in hex, that one) on the CA's revocation list, with the next
// list number, and writes the list to caDir/crl.pem. It returns the list
// and the serials revoked by this call.
func Revoke(caDir, host string) ([]byte, []string, error) {
	caCert, caKey, err := loadCA(caDir)
	if err != nil {
		return nil, nil, err
	}
	var entries []x509.RevocationListEntry
	var number big.Int
	if raw, err := os.ReadFile(filepath.Join(caDir, CRLFile)); err == nil {
		crl, err := parseCRL(raw)
		if err != nil {
			return nil, nil, fmt.Errorf("the CA's current revocation list: %w", err)
		}
		entries, number = crl.RevokedCertificateEntries, *crl.Number
	}
	issued, err := filepath.Glob(filepath.Join(caDir, issuedDir, "*.crt"))
	if err != nil {
		return nil, nil, err
	}
	var revoked []string
	for _, f := range issued {
		certs, err := readCerts(f)
		if err != nil {
			return nil, nil, err
		}
		c := certs[0]
		serial := hex.EncodeToString(c.SerialNumber.Bytes())
		if c.Subject.CommonName != host && !strings.EqualFold(serial, host) {
			continue
		}
		already := false
		for _, e := range entries {
			if e.SerialNumber.Cmp(c.SerialNumber) == 0 {
				already = true
			}
		}
		if !already {
			entries = append(entries, x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: time.Now()})
			revoked = append(revoked, serial)
		}
	}
	if len(revoked) == 0 {
		return nil, nil, fmt.Errorf("no certificate issued by %s names %q (by host name or serial) that is not revoked already", caDir, host)
	}
	number.Add(&number, big.NewInt(1))
	now := time.Now()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: &number, ThisUpdate: now, NextUpdate: caCert.NotAfter,
		RevokedCertificateEntries: entries,
	}, caCert, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("signing the revocation list: %w", err)
	}
	raw := pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
	if err := os.WriteFile(filepath.Join(caDir, CRLFile), raw, 0o644); err != nil {
		return nil, nil, err
	}
	return raw, revoked, nil
}

func parseCRL(raw []byte) (*x509.RevocationList, error) {
	if b, _ := pem.Decode(raw); b != nil {
		raw = b.Bytes
	}
	return x509.ParseRevocationList(raw)
}

// revocations is the newest revocation list of the cluster CA a host
// holds. Lists come from files and from peers' signed tables; only one
// signed by the CA with a higher number than the one held replaces it.
type revocations struct {
	mu      sync.Mutex
	ca      []*x509.Certificate
	der     []byte
	number  *big.Int
	serials map[string]bool
	// keep is called with each list adopted (the daemon writes it to its
	// state directory); nil keeps none.
	keep func(der []byte)
}

// offer adopts raw (PEM or DER) if the CA signed it and it is newer.
func (r *revocations) offer(raw []byte) (bool, error) {
	crl, err := parseCRL(raw)
	if err != nil {
		return false, fmt.Errorf("a revocation list: %w", err)
	}
	var signed error = errors.New("no CA")
	for _, ca := range r.ca {
		if signed = crl.CheckSignatureFrom(ca); signed == nil {
			break
		}
	}
	if signed != nil {
		return false, fmt.Errorf("a revocation list not signed by the cluster CA: %w", signed)
	}
	r.mu.Lock()
	if crl.Number == nil || (r.number != nil && crl.Number.Cmp(r.number) <= 0) {
		r.mu.Unlock()
		return false, nil
	}
	serials := map[string]bool{}
	for _, e := range crl.RevokedCertificateEntries {
		serials[e.SerialNumber.String()] = true
	}
	r.der, r.number, r.serials = crl.Raw, crl.Number, serials
	keep := r.keep
	r.mu.Unlock()
	if keep != nil {
		keep(crl.Raw)
	}
	return true, nil
}

func (r *revocations) revoked(serial *big.Int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.serials[serial.String()]
}

func (r *revocations) current() ([]byte, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.number == nil {
		return nil, 0
	}
	return r.der, r.number.Uint64()
}
