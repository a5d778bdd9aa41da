package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vxsec/vxsec/announce"
	"github.com/vxsec/vxsec/internal/certs"
)

// Identity is this host's certificate and key.
type Identity struct {
	// Name is the host's name (the certificate's CN); a renewal keeps it.
	Name string
	// crl is the revocation list this host holds, sent in front of
	// every table it signs so that the list spreads through the cluster.
	crl *revocations

	// mu guards what a renewal replaces (Renew).
	mu   sync.RWMutex
	leaf *x509.Certificate
	// chain is the certificate, then any intermediates (DER).
	chain [][]byte
	key   crypto.Signer
}

// Verifier checks other hosts' signed tables against the cluster CA and
// its newest revocation list.
type Verifier struct {
	roots *x509.CertPool
	crl   *revocations
	// now is the clock certificates are checked against.
	now func() time.Time
	// chains remembers chains verified (nil: none are).
	chains *chainCache
}

// Load reads a host directory (`vxsec ca issue`): the host's identity, and
// the verifier of its cluster. addr is the address the host advertises,
// which its certificate must name: a host with a certificate for another
// address would sign tables nobody accepts.
func Load(dir string, addr netip.Addr) (*Identity, *Verifier, error) {
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, nil, fmt.Errorf("the host identity in %s (from `vxsec ca issue`): %w", dir, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, fmt.Errorf("the host key in %s is a %T, want ECDSA (from `vxsec ca issue`)", dir, pair.PrivateKey)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, nil, err
	}
	roots, err := readCerts(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, nil, fmt.Errorf("the cluster CA of the host identity: %w", err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	crl := &revocations{ca: roots}
	v := &Verifier{roots: pool, crl: crl, now: time.Now, chains: newChainCache()}
	id := &Identity{Name: leaf.Subject.CommonName, leaf: leaf, chain: pair.Certificate, key: key, crl: crl}
	if raw, err := os.ReadFile(filepath.Join(dir, CRLFile)); err == nil {
		if _, err := crl.offer(raw); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", filepath.Join(dir, CRLFile), err)
		}
	}
	if _, err := v.check(id.chain, addr); err != nil {
		return nil, nil, fmt.Errorf("the host identity in %s: %w (this host advertises %s: issue its identity with `vxsec ca issue --addr %s`)", dir, err, addr, addr)
	}
	return id, v, nil
}

// Expires is when the certificate ends.
func (id *Identity) Expires() time.Time {
	id.mu.RLock()
	defer id.mu.RUnlock()
	return id.leaf.NotAfter
}

// Serial is the certificate's serial number.
func (id *Identity) Serial() *big.Int {
	id.mu.RLock()
	defer id.mu.RUnlock()
	return id.leaf.SerialNumber
}

// Renew makes next's certificate and key this identity's, from the next
// signature on: a renewed certificate (`vxsec ca issue` again into the
// host's directory) replaces the running one without a restart. next must
// name the same host and not be revoked; the revocation list held stays.
func (id *Identity) Renew(next *Identity) error {
	next.mu.RLock()
	leaf, chain, key := next.leaf, next.chain, next.key
	next.mu.RUnlock()
	switch {
	case next.Name != id.Name:
		return fmt.Errorf("the identity directory now holds host %q's certificate, not %q's: keeping %q's", next.Name, id.Name, id.Name)
	case id.crl.revoked(leaf.SerialNumber):
		return fmt.Errorf("%w: the new certificate of %q (serial %x)", ErrRevoked, next.Name, leaf.SerialNumber)
	}
	id.mu.Lock()
	defer id.mu.Unlock()
	id.leaf, id.chain, id.key = leaf, chain, key
	return nil
}

// signer is what a signature is made with now.
func (id *Identity) signer() ([][]byte, crypto.Signer) {
	id.mu.RLock()
	defer id.mu.RUnlock()
	return id.chain, id.key
}

// SignTable wraps a table's encoding in this host's signature.
func (id *Identity) SignTable(table []byte) ([]byte, error) {
	chain, key := id.signer()
	digest := sha256.Sum256(announce.SignedMessage(table))
	sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("signing the table: %w", err)
	}
	crl, _ := id.crl.current()
	return announce.EncodeSigned(announce.Signed{Chain: chain, Sig: sig, CRL: crl, Table: table})
}

// SignRaw is the signature alone that SignTable puts in front of a
// table's encoding, with no chain or list: what a table delta carries
// (announce.Delta), checked by OpenTable with the chain of the last table
// the receiver pulled from this host.
func (id *Identity) SignRaw(table []byte) ([]byte, error) {
	_, key := id.signer()
	digest := sha256.Sum256(announce.SignedMessage(table))
	sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("signing the table delta: %w", err)
	}
	return sig, nil
}

// Errors of OpenTable, for counting refusals by kind.
var (
	ErrNotForHost = errors.New("the certificate does not name the host's address")
	ErrSignature  = errors.New("the table's signature does not verify")
)

// OpenTable checks a signed table pulled from host and returns the table's
// encoding and its signer (name#serial): the chain leads to the cluster CA
// now, the certificate is a host certificate naming host's address and not
// revoked, and the signature holds. A revocation list in front of the
// table, signed by the CA and newer than the one held, is adopted first
// (newCRL), whatever the table.
func (v *Verifier) OpenTable(host netip.Addr, signed []byte) (table []byte, signer string, newCRL bool, err error) {
	s, err := announce.DecodeSigned(signed)
	if err != nil {
		return nil, "", false, err
	}
	if s.CRL != nil {
		// A list that does not verify is ignored: the table is judged
		// on its own.
		newCRL, _ = v.crl.offer(s.CRL)
	}
	leaf, err := v.signedBy(s, announce.SignedMessage(s.Table), host)
	if err != nil {
		return nil, "", newCRL, err
	}
	return s.Table, leaf.Subject.CommonName + "#" + leaf.SerialNumber.String(), newCRL, nil
}

// signedBy checks that msg was signed by a host certificate of the cluster
// for host, valid now and not revoked, and returns that certificate.
func (v *Verifier) signedBy(s announce.Signed, msg []byte, host netip.Addr) (*x509.Certificate, error) {
	leaf, err := v.check(s.Chain, host)
	if err != nil {
		return nil, err
	}
	if v.crl.revoked(leaf.SerialNumber) {
		return nil, fmt.Errorf("%w: %q (serial %x)", ErrRevoked, leaf.Subject.CommonName, leaf.SerialNumber)
	}
	if err := leaf.CheckSignature(x509.ECDSAWithSHA256, msg, s.Sig); err != nil {
		return nil, fmt.Errorf("%w (signer %s): %v", ErrSignature, leaf.Subject.CommonName, err)
	}
	return leaf, nil
}

// KeyName is the host name of a signer OpenTable returned (its "CN#serial"
// without the serial, which a renewal changes).
func (v *Verifier) KeyName(signer string) string {
	if i := strings.LastIndexByte(signer, '#'); i >= 0 {
		return signer[:i]
	}
	return signer
}

// Revoked tells whether a signer OpenTable returned is revoked now.
func (v *Verifier) Revoked(signer string) bool {
	_, serial, ok := strings.Cut(signer, "#")
	n, good := new(big.Int).SetString(serial, 10)
	return ok && good && v.crl.revoked(n)
}

// OfferCRL adopts a revocation list (PEM or DER) if the cluster CA signed
// it and it is newer than the one held.
func (v *Verifier) OfferCRL(raw []byte) (bool, error) { return v.crl.offer(raw) }

// CRLNumber is the number of the revocation list held (0: none).
func (v *Verifier) CRLNumber() uint64 {
	_, n := v.crl.current()
	return n
}

// KeepCRL has keep called with every revocation list adopted from now on.
func (v *Verifier) KeepCRL(keep func(der []byte)) {
	v.crl.mu.Lock()
	defer v.crl.mu.Unlock()
	v.crl.keep = keep
}

// check verifies a chain for host and returns its certificate.
func (v *Verifier) check(chain [][]byte, host netip.Addr) (*x509.Certificate, error) {
	now := v.now()
	leaf, ok := v.chains.get(chain, now)
	if !ok {
		var verified []*x509.Certificate
		var err error
		leaf, verified, err = certs.VerifyChain(chain, v.roots, now, x509.ExtKeyUsageAny)
		if leaf == nil {
			return nil, fmt.Errorf("the signer's certificate: %w", err)
		}
		if err != nil {
			return nil, fmt.Errorf("the signer %q is not certified by this cluster's CA: %w", leaf.Subject.CommonName, err)
		}
		v.chains.put(chain, verified)
	}
	if !slices.Contains(leaf.Subject.OrganizationalUnit, hostOU) {
		return nil, fmt.Errorf("the signer %q holds no vxsec host certificate (OU %v)", leaf.Subject.CommonName, leaf.Subject.OrganizationalUnit)
	}
	if !slices.ContainsFunc(leaf.IPAddresses, func(ip net.IP) bool {
		a, ok := netip.AddrFromSlice(ip)
		return ok && a.Unmap() == host.Unmap()
	}) {
		return nil, fmt.Errorf("%w: %q is certified for %v, not %s", ErrNotForHost, leaf.Subject.CommonName, leaf.IPAddresses, host)
	}
	return leaf, nil
}

// Exists tells whether dir holds a host identity.
func Exists(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, CertFile))
	return err == nil
}

// SignPeer proves this host's identity to a member it pulls a table from:
// its chain and its signature of msg, in announce.Signed's form with no
// table.
func (id *Identity) SignPeer(msg []byte) ([]byte, error) {
	chain, key := id.signer()
	digest := sha256.Sum256(msg)
	sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("signing the pull: %w", err)
	}
	return announce.EncodeSigned(announce.Signed{Chain: chain, Sig: sig})
}

// CheckPeer checks a client's identity block for a pull from host: its
// certificate is the cluster CA's, names host, is not revoked, and signed
// msg.
func (v *Verifier) CheckPeer(host netip.Addr, block, msg []byte) error {
	s, err := announce.DecodeSigned(block)
	if err != nil {
		return err
	}
	if len(s.Table) != 0 || s.CRL != nil || s.Pass != nil {
		return errors.New("an identity block carries nothing but a chain and a signature")
	}
	_, err = v.signedBy(s, msg, host)
	return err
}
