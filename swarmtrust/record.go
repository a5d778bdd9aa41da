package swarmtrust

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/vxsec/vxsec/internal/certs"
)

// A record is the cluster secret as a manager issued it. Only a manager's
// node key can sign one, so a worker (or a node removed from the swarm,
// once the managers' list no longer names it) cannot hand the cluster a
// secret of its own, and the newest generation wins, so an old record
// replayed rolls nothing back.
//
// Generation counts issues, not secrets: a manager re-issues the secret it
// holds (same bytes, next generation) when the record's signer is no
// longer a manager or its certificate nears its end, and nobody's secret
// changes.
type record struct {
	Secret []byte `json:"secret"`
	// Generation is 0 only in a record kept by a release before signed
	// records (protocol 1): held, never sent, and re-issued by managers.
	Generation uint64 `json:"generation,omitempty"`
	// Created is when the record was issued, by the issuer's clock; it
	// decides nothing.
	Created int64  `json:"created"`
	By      string `json:"by"`
	// Chain is the issuer's certificate chain (DER, its node certificate
	// first), as swarm-node.crt holds it.
	Chain [][]byte `json:"chain,omitempty"`
	Sig   []byte   `json:"sig,omitempty"`
}

// Bounds of a record received: swarm presents at most a node certificate
// and a cross-signed root; an ECDSA P-256 or RSA-4096 signature fits.
const (
	maxChain = 4
	maxSig   = 1024
)

var errUnsigned = errors.New("the record is not signed (a release before signed records made it)")

// signedBytes is what the signature covers: every field but the chain,
// and the swarm's ID, so that a record of one swarm means nothing in
// another.
func (r *record) signedBytes(cluster string) []byte {
	b := []byte("vxsec swarm secret record v2\x00")
	for _, f := range [][]byte{[]byte(cluster), []byte(r.By), r.Secret} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	b = binary.BigEndian.AppendUint64(b, r.Generation)
	return binary.BigEndian.AppendUint64(b, uint64(r.Created))
}

// issue signs secret as generation gen with the node's key; the node must
// be a manager.
func issue(creds credentials, secret []byte, gen uint64) (*record, error) {
	if creds.node.Role != RoleManager {
		return nil, fmt.Errorf("node %s is a %s: only managers issue the cluster secret", creds.node.ID, creds.node.Role)
	}
	r := &record{
		Secret: slices.Clone(secret), Generation: gen, Created: time.Now().UnixNano(),
		By: creds.node.ID, Chain: slices.Clone(creds.cert.Certificate),
	}
	sig, err := creds.sign(r.signedBytes(creds.node.ClusterID))
	if err != nil {
		return nil, fmt.Errorf("signing the cluster secret record: %w", err)
	}
	r.Sig = sig
	return r, nil
}

// newSecret is fresh randomness for a new cluster secret.
func newSecret() []byte {
	s := make([]byte, SecretBytes)
	rand.Read(s)
	return s
}

// verifyRecord accepts a record signed by a manager of this swarm: its
// chain leads to the swarm's root CA (now, so an expired certificate
// fails), its certificate names this swarm, the manager role and the
// record's issuer, the issuer is a manager as this node knows them
// (state.json: a node removed or demoted is no longer one), and the
// signature holds. It returns the issuer's certificate.
func (c credentials) verifyRecord(r *record) (*x509.Certificate, error) {
	if r.Generation == 0 || len(r.Chain) == 0 || len(r.Sig) == 0 {
		return nil, errUnsigned
	}
	if len(r.Chain) > maxChain || len(r.Sig) > maxSig {
		return nil, fmt.Errorf("the record's chain (%d certificates) or signature (%d bytes) is over the bound (%d, %d)", len(r.Chain), len(r.Sig), maxChain, maxSig)
	}
	leaf, err := c.verifyManager(r.Chain, r.By, "record")
	if err != nil {
		return nil, err
	}
	if err := checkSig(leaf, r.signedBytes(c.node.ClusterID), r.Sig); err != nil {
		return nil, fmt.Errorf("the record's signature: %w", err)
	}
	return leaf, nil
}

// verifyManager checks the chain of something a manager signed (what):
// it leads to the swarm's root CA now, its certificate names this swarm,
// the manager role and by, and by is a manager as this node knows them
// (state.json: a node removed or demoted is no longer one).
func (c credentials) verifyManager(chain [][]byte, by, what string) (*x509.Certificate, error) {
	leaf, err := certs.Verify(chain, c.roots, time.Now(), x509.ExtKeyUsageAny)
	if err != nil {
		return nil, fmt.Errorf("the %s's issuer is not certified by this swarm's CA: %w", what, err)
	}
	issuer, err := identity(leaf)
	if err != nil {
		return nil, fmt.Errorf("the %s's issuer: %w", what, err)
	}
	switch {
	case issuer.ClusterID != c.node.ClusterID:
		return nil, fmt.Errorf("the %s was issued in swarm %s, not %s", what, issuer.ClusterID, c.node.ClusterID)
	case issuer.Role != RoleManager:
		return nil, fmt.Errorf("the %s was signed by node %s, a %s: only managers issue it", what, issuer.ID, issuer.Role)
	case issuer.ID != by:
		return nil, fmt.Errorf("the %s says it was issued by %s but is signed by %s", what, by, issuer.ID)
	case !c.isManager(issuer.ID):
		return nil, fmt.Errorf("the %s was signed by %s, which is not among this swarm's managers as this node knows them", what, issuer.ID)
	}
	return leaf, nil
}

// checkSig checks a signature by a swarm certificate's key over
// SHA-256(msg).
func checkSig(leaf *x509.Certificate, msg, sig []byte) error {
	var alg x509.SignatureAlgorithm
	switch leaf.PublicKey.(type) {
	case *ecdsa.PublicKey:
		alg = x509.ECDSAWithSHA256
	case *rsa.PublicKey:
		alg = x509.SHA256WithRSA
	default:
		return fmt.Errorf("a %T key: swarm keys are ECDSA or RSA", leaf.PublicKey)
	}
	return leaf.CheckSignature(alg, msg, sig)
}

// sign signs SHA-256(msg) with the node's key.
func (c credentials) sign(msg []byte) ([]byte, error) {
	signer, ok := c.cert.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("the node key (%T) cannot sign", c.cert.PrivateKey)
	}
	digest := sha256.Sum256(msg)
	return signer.Sign(rand.Reader, digest[:], crypto.SHA256)
}

// isManager: id is this node (a manager) or one of the managers in
// state.json.
func (c credentials) isManager(id string) bool {
	if id == c.node.ID {
		return c.node.Role == RoleManager
	}
	return slices.ContainsFunc(c.node.Managers, func(m Manager) bool { return m.NodeID == id })
}

// reissueDue tells a manager to re-issue the record it holds: it is not
// one this node would accept (unsigned, or its issuer is no longer a
// manager or no longer certified), or its issuer's certificate ends
// before half of this node's remaining lifetime, so that a record stays
// acceptable to nodes joining later while certificates are renewed.
func (c credentials) reissueDue(r *record, now time.Time) (bool, string) {
	leaf, err := c.verifyRecord(r)
	if err != nil {
		return true, err.Error()
	}
	if half := now.Add(c.node.NotAfter.Sub(now) / 2); leaf.NotAfter.Before(half) {
		return true, fmt.Sprintf("its issuer's certificate ends %s, this node's %s", leaf.NotAfter.Format(time.RFC3339), c.node.NotAfter.Format(time.RFC3339))
	}
	return false, ""
}

// newer orders records: the higher generation; at one generation (two
// managers issuing at once), the lower hash of the secret. Nothing a peer
// picks freely but the secret itself decides, and every node decides
// alike, so the cluster converges.
func (r *record) newer(o *record) bool {
	switch {
	case r == nil:
		return false
	case o == nil:
		return true
	case r.Generation != o.Generation:
		return r.Generation > o.Generation
	}
	a, b := sha256.Sum256(r.Secret), sha256.Sum256(o.Secret)
	return bytes.Compare(a[:], b[:]) < 0
}

// placeholder: a random secret a node holds after it moved to another
// swarm, until that swarm's record arrives; never sent, never re-issued.
func (r *record) placeholder() bool { return r.Generation == 0 && r.By == "" }

func (r *record) id() string {
	sum := sha256.Sum256(r.Secret)
	return hex.EncodeToString(sum[:6])
}
