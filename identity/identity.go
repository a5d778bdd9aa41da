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
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/vxsec/vxsec/announce"
)

// Identity is this host's certificate and key.
type Identity struct {
	// Name is the host's name (the certificate's CN).
	Name string
	Leaf *x509.Certificate
	// chain is the certificate, then any intermediates (DER).
	chain [][]byte
	key   crypto.Signer
}

// Verifier checks other hosts' signed tables against the cluster CA.
type Verifier struct {
	roots *x509.CertPool
	// now is the clock certificates are checked against.
	now func() time.Time
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
	v := &Verifier{roots: pool, now: time.Now}
	id := &Identity{Name: leaf.Subject.CommonName, Leaf: leaf, chain: pair.Certificate, key: key}
	if err := v.check(id.chain, addr); err != nil {
		return nil, nil, fmt.Errorf("the host identity in %s: %w (this host advertises %s: issue its identity with `vxsec ca issue --addr %s`)", dir, err, addr, addr)
	}
	return id, v, nil
}

// Expires is when the certificate ends.
func (id *Identity) Expires() time.Time { return id.Leaf.NotAfter }

// SignTable wraps a table's encoding in this host's signature.
func (id *Identity) SignTable(table []byte) ([]byte, error) {
	digest := sha256.Sum256(announce.SignedMessage(table))
	sig, err := id.key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("signing the table: %w", err)
	}
	return announce.EncodeSigned(announce.Signed{Chain: id.chain, Sig: sig, Table: table})
}

// Errors of OpenTable, for counting refusals by kind.
var (
	ErrNotForHost = errors.New("the certificate does not name the host's address")
	ErrSignature  = errors.New("the table's signature does not verify")
)

// OpenTable checks a signed table pulled from host and returns the table's
// encoding and the signer's name: the chain leads to the cluster CA now,
// the certificate is a host certificate naming host's address, and the
// signature holds.
func (v *Verifier) OpenTable(host netip.Addr, signed []byte) ([]byte, string, error) {
	s, err := announce.DecodeSigned(signed)
	if err != nil {
		return nil, "", err
	}
	if err := v.check(s.Chain, host); err != nil {
		return nil, "", err
	}
	leaf, _ := x509.ParseCertificate(s.Chain[0]) // check parsed it
	if err := leaf.CheckSignature(x509.ECDSAWithSHA256, announce.SignedMessage(s.Table), s.Sig); err != nil {
		return nil, "", fmt.Errorf("%w (signer %s): %v", ErrSignature, leaf.Subject.CommonName, err)
	}
	return s.Table, leaf.Subject.CommonName, nil
}

// check verifies a chain for host.
func (v *Verifier) check(chain [][]byte, host netip.Addr) error {
	certs := make([]*x509.Certificate, len(chain))
	for i, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("the signer's certificate: %w", err)
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	leaf := certs[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: v.roots, Intermediates: inter, CurrentTime: v.now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("the signer %q is not certified by this cluster's CA: %w", leaf.Subject.CommonName, err)
	}
	if !slices.Contains(leaf.Subject.OrganizationalUnit, hostOU) {
		return fmt.Errorf("the signer %q holds no vxsec host certificate (OU %v)", leaf.Subject.CommonName, leaf.Subject.OrganizationalUnit)
	}
	if !slices.ContainsFunc(leaf.IPAddresses, func(ip net.IP) bool {
		a, ok := netip.AddrFromSlice(ip)
		return ok && a.Unmap() == host.Unmap()
	}) {
		return fmt.Errorf("%w: %q is certified for %v, not %s", ErrNotForHost, leaf.Subject.CommonName, leaf.IPAddresses, host)
	}
	return nil
}

// Exists tells whether dir holds a host identity.
func Exists(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, CertFile))
	return err == nil
}
