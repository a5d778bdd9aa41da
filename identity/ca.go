package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vxsec/vxsec/internal/certs"
)

// Files: a CA directory holds CAFile and CAKeyFile (which never leaves the
// operator's machine); a host directory, what `vxsec ca issue` writes and
// the plugin reads, holds CertFile, KeyFile and CAFile.
const (
	CAFile    = "ca.crt"
	CAKeyFile = "ca.key"
	CertFile  = "host.crt"
	KeyFile   = "host.key"
)

// Defaults of the CLI.
const (
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultHostValidity = 365 * 24 * time.Hour
)

// hostOU marks a host certificate of a vxsec cluster CA.
const hostOU = "vxsec-host"

// InitCA makes a cluster CA in dir (created if missing): a P-256 key and a
// self-signed certificate. It refuses to overwrite an existing CA, whose
// hosts would all lose their identity.
func InitCA(dir, name string, validity time.Duration) error {
	if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); err == nil {
		return fmt.Errorf("%s already holds a CA (%s): remove it first to make another, and re-issue every host", dir, CAKeyFile)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: name, OrganizationalUnit: []string{"vxsec-ca"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(validity),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("making the CA certificate: %w", err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, CAKeyFile), "PRIVATE KEY", pk, 0o600); err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, CAFile), "CERTIFICATE", der, 0o644)
}

// Issue makes host's identity with the CA in caDir and writes it to out
// (created if missing): its key, its certificate naming host and addrs
// (the underlay addresses it advertises), and the CA certificate.
func Issue(caDir, out, host string, addrs []netip.Addr, validity time.Duration) (*x509.Certificate, error) {
	if host == "" || len(addrs) == 0 {
		return nil, errors.New("a host certificate needs the host's name and at least one underlay address (--addr)")
	}
	if strings.ContainsAny(host, `/\`) || host == "." || host == ".." {
		return nil, fmt.Errorf("host name %q: accepted: a name without slashes", host)
	}
	caCert, caKey, err := loadCA(caDir)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(validity)
	if notAfter.After(caCert.NotAfter) {
		notAfter = caCert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: host, OrganizationalUnit: []string{hostOU}},
		NotBefore:    now.Add(-time.Hour), NotAfter: notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, a := range addrs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(a.Unmap().AsSlice()))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("issuing the host certificate: %w", err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(out, 0o700); err != nil {
		return nil, err
	}
	if err := writePEM(filepath.Join(out, KeyFile), "PRIVATE KEY", pk, 0o600); err != nil {
		return nil, err
	}
	if err := writePEM(filepath.Join(out, CertFile), "CERTIFICATE", der, 0o644); err != nil {
		return nil, err
	}
	if err := writePEM(filepath.Join(out, CAFile), "CERTIFICATE", caCert.Raw, 0o644); err != nil {
		return nil, err
	}
	// The CA keeps what it issued, to revoke it by host name.
	if err := os.MkdirAll(filepath.Join(caDir, issuedDir), 0o700); err != nil {
		return nil, err
	}
	if err := writePEM(filepath.Join(caDir, issuedDir, fmt.Sprintf("%s-%x.crt", host, tmpl.SerialNumber)), "CERTIFICATE", der, 0o644); err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func loadCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certs, err := readCerts(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, nil, fmt.Errorf("the cluster CA (run `vxsec ca init` first): %w", err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, nil, fmt.Errorf("the cluster CA key: %w", err)
	}
	b, _ := pem.Decode(raw)
	if b == nil {
		return nil, nil, fmt.Errorf("%s holds no PEM key", filepath.Join(dir, CAKeyFile))
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("the cluster CA key: %w", err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, fmt.Errorf("the cluster CA key is a %T, want ECDSA", k)
	}
	return certs[0], key, nil
}

func readCerts(path string) ([]*x509.Certificate, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out, err := certs.ParsePEM(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}
