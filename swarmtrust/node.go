package swarmtrust

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/vxsec/vxsec/internal/certs"
)

// Files of the engine's swarm directory (/var/lib/docker/swarm), as swarmkit
// writes them.
const (
	certFile  = "certificates/swarm-node.crt"
	keyFile   = "certificates/swarm-node.key"
	rootFile  = "certificates/swarm-root-ca.crt"
	stateFile = "state.json"
)

// Swarm node roles, the OU of a node certificate.
const (
	RoleManager = "swarm-manager"
	RoleWorker  = "swarm-worker"
)

// ErrNotInSwarm: the directory holds no node certificate.
var ErrNotInSwarm = errors.New("this engine is not a swarm node (no node certificate)")

// ErrLocked: swarm autolock encrypts the node key with a key only the
// engine holds after `docker swarm unlock`.
var ErrLocked = errors.New("the swarm node key is encrypted (swarm autolock), so vxsec cannot prove this node's " +
	"identity; set VXSEC_SECRET (from `vxsec secret`) on every node instead")

// Node is what the swarm directory says about this engine.
type Node struct {
	// ID is the swarm node ID (the certificate's CN).
	ID string
	// ClusterID is the swarm's ID (the certificate's O): certificates of
	// another swarm are never accepted, even under the same root CA.
	ClusterID string
	// Role is RoleManager or RoleWorker (the certificate's OU).
	Role string
	// NotAfter is when the node certificate expires; swarm renews it.
	NotAfter time.Time
	// Managers are the swarm's managers as this node last knew them.
	Managers []Manager
}

// Manager is one entry of swarmkit's state.json.
type Manager struct {
	NodeID string `json:"node_id"`
	// Addr is the manager's swarm address, host:2377.
	Addr string `json:"addr"`
}

// Host is the manager's address without the port.
func (m Manager) Host() string {
	host, _, err := net.SplitHostPort(m.Addr)
	if err != nil {
		return m.Addr
	}
	return host
}

// InSwarm tells whether dir holds a node certificate.
func InSwarm(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, certFile))
	return err == nil
}

// ReadNode reads the node's identity and its managers from dir.
func ReadNode(dir string) (Node, error) {
	raw, err := os.ReadFile(filepath.Join(dir, certFile))
	if errors.Is(err, os.ErrNotExist) {
		return Node{}, ErrNotInSwarm
	}
	if err != nil {
		return Node{}, fmt.Errorf("reading the swarm node certificate: %w", err)
	}
	leaf, err := firstCert(raw)
	if err != nil {
		return Node{}, fmt.Errorf("swarm node certificate %s: %w", filepath.Join(dir, certFile), err)
	}
	n, err := identity(leaf)
	if err != nil {
		return Node{}, fmt.Errorf("swarm node certificate %s: %w", filepath.Join(dir, certFile), err)
	}
	if raw, err := os.ReadFile(filepath.Join(dir, stateFile)); err == nil {
		// A half-written file is not fatal: swarmkit replaces it whole,
		// and the next read sees the new one.
		if err := json.Unmarshal(raw, &n.Managers); err != nil {
			return n, fmt.Errorf("reading the swarm managers (%s): %w", filepath.Join(dir, stateFile), err)
		}
	}
	return n, nil
}

// identity reads a swarm certificate's subject: O=cluster, OU=role, CN=node.
func identity(c *x509.Certificate) (Node, error) {
	s := c.Subject
	if len(s.Organization) != 1 || len(s.OrganizationalUnit) != 1 || s.CommonName == "" {
		return Node{}, fmt.Errorf("subject %q is not a swarm node's (O=<cluster>, OU=swarm-manager|swarm-worker, CN=<node>)", s.String())
	}
	role := s.OrganizationalUnit[0]
	if role != RoleManager && role != RoleWorker {
		return Node{}, fmt.Errorf("role %q is not %s or %s", role, RoleManager, RoleWorker)
	}
	return Node{ID: s.CommonName, ClusterID: s.Organization[0], Role: role, NotAfter: c.NotAfter}, nil
}

func firstCert(raw []byte) (*x509.Certificate, error) {
	chain, err := certs.ParsePEM(raw)
	if err != nil {
		return nil, err
	}
	return chain[0], nil
}

// lowestManager tells whether id is the first of the managers by node ID:
// the one manager that makes the secret when none exists yet, so that
// managers installing the plugin at the same moment do not each make one.
func lowestManager(id string, ms []Manager) bool {
	ids := []string{id}
	for _, m := range ms {
		ids = append(ids, m.NodeID)
	}
	return slices.Min(ids) == id
}
