package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// CA is a swarm root CA.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA makes a root CA named swarm-ca, as swarm's.
func NewCA() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "swarm-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return &CA{Cert: cert, Key: key}, err
}

// CrossSign is next's certificate signed by ca: what swarm hands out while
// it rotates from ca to next, so nodes still trusting ca accept next's.
func (ca *CA) CrossSign(next *CA) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, next.Cert, ca.Cert, next.Key.Public(), ca.Key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// Manager is one entry of state.json.
type Manager struct {
	NodeID string `json:"node_id"`
	Addr   string `json:"addr"`
}

// Node writes dir/certificates/{swarm-node.crt,swarm-node.key,swarm-root-ca.crt}
// and dir/state.json. roots are the trusted roots (default: ca); chain
// follows the leaf in swarm-node.crt (a cross-signed intermediate).
type Node struct {
	Dir, Cluster, ID, Role string
	Managers               []Manager
	Roots                  []*x509.Certificate
	Chain                  []*x509.Certificate
	// NotAfter ends the node certificate (default: in 12 hours).
	NotAfter time.Time
}

// Write issues the node's certificate from ca and writes the directory.
func (ca *CA) Write(n Node) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	notAfter := n.NotAfter
	if notAfter.IsZero() {
		notAfter = time.Now().Add(12 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{Organization: []string{n.Cluster}, OrganizationalUnit: []string{n.Role}, CommonName: n.ID},
		DNSNames:     []string{n.Role, n.ID},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	for _, c := range n.Chain {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Headers: map[string]string{"kek-version": "0", "raft-dek": "dGVzdA=="}, Bytes: pk})
	roots := n.Roots
	if roots == nil {
		roots = []*x509.Certificate{ca.Cert}
	}
	var rootPEM []byte
	for _, r := range roots {
		rootPEM = append(rootPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})...)
	}
	certs := filepath.Join(n.Dir, "certificates")
	if err := os.MkdirAll(certs, 0o755); err != nil {
		return err
	}
	state, err := json.Marshal(n.Managers)
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{
		"certificates/swarm-node.crt": certPEM, "certificates/swarm-node.key": keyPEM,
		"certificates/swarm-root-ca.crt": rootPEM, "state.json": state,
	} {
		if err := os.WriteFile(filepath.Join(n.Dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// Lock rewrites the node key as swarm autolock leaves it (encrypted).
func Lock(dir string) error {
	p := filepath.Join(dir, "certificates", "swarm-node.key")
	return os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY",
		Headers: map[string]string{"kek-version": "11"}, Bytes: []byte("opaque")}), 0o600)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 100))
	return n
}
