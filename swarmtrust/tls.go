package swarmtrust

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vxsec/vxsec/internal/certs"
)

// credentials are the node's certificate and the swarm's roots, read afresh
// for every connection: swarm renews node certificates (and may rotate the
// root CA) underneath a running plugin.
type credentials struct {
	node  Node
	cert  tls.Certificate
	roots *x509.CertPool
}

func loadCredentials(dir string) (credentials, error) {
	node, err := ReadNode(dir)
	if err != nil {
		return credentials{}, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, keyFile))
	if err != nil {
		return credentials{}, fmt.Errorf("reading the swarm node key: %w", err)
	}
	if locked(keyPEM) {
		return credentials{}, ErrLocked
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, certFile))
	if err != nil {
		return credentials{}, fmt.Errorf("reading the swarm node certificate: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// Swarm writes the certificate and the key one after the other: a
		// renewal caught in between mismatches until the next read.
		return credentials{}, fmt.Errorf("loading the swarm node key pair: %w", err)
	}
	rootPEM, err := os.ReadFile(filepath.Join(dir, rootFile))
	if err != nil {
		return credentials{}, fmt.Errorf("reading the swarm root CA: %w", err)
	}
	roots, err := certs.ParsePEM(rootPEM)
	if err != nil {
		return credentials{}, fmt.Errorf("swarm root CA %s: %w", filepath.Join(dir, rootFile), err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	return credentials{node: node, cert: cert, roots: pool}, nil
}

// locked tells a key encrypted by swarm autolock ("ENCRYPTED PRIVATE KEY",
// or a legacy PEM with a Proc-Type ENCRYPTED header).
func locked(keyPEM []byte) bool {
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		return false
	}
	return strings.Contains(b.Type, "ENCRYPTED") || strings.Contains(b.Headers["Proc-Type"], "ENCRYPTED")
}

// verifyPeer accepts only a certificate chaining to the swarm's root CA and
// naming this swarm (O) and a node role (OU); wantNode, if set, must be its
// CN. Host names play no part: swarm certificates name nodes, not hosts.
func (c credentials) verifyPeer(wantNode string) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("the peer sent no certificate")
		}
		leaf, err := certs.Verify(raw, c.roots, time.Now(), x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth)
		if err != nil {
			return fmt.Errorf("peer certificate is not from this swarm's CA: %w", err)
		}
		peer, err := identity(leaf)
		if err != nil {
			return fmt.Errorf("peer certificate: %w", err)
		}
		if peer.ClusterID != c.node.ClusterID {
			return fmt.Errorf("peer certificate is of swarm %s, not %s", peer.ClusterID, c.node.ClusterID)
		}
		if wantNode != "" && peer.ID != wantNode {
			return fmt.Errorf("peer is node %s, not the expected %s", peer.ID, wantNode)
		}
		return nil
	}
}

// serverConfig requires and checks the client's certificate.
func (c credentials) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		Certificates:          []tls.Certificate{c.cert},
		ClientAuth:            tls.RequireAnyClientCert,
		VerifyPeerCertificate: c.verifyPeer(""),
	}
}

// clientConfig checks the server's certificate itself (verifyPeer), which
// is why the standard host name check is off.
func (c credentials) clientConfig(wantNode string) *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		Certificates:          []tls.Certificate{c.cert},
		InsecureSkipVerify:    true,
		VerifyPeerCertificate: c.verifyPeer(wantNode),
	}
}
