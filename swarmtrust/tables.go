package swarmtrust

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/vxsec/vxsec/announce"
)

// Tables signs this node's tables with its swarm node key and checks
// other nodes' (gossip's TableSigner and TableVerifier): a table is
// accepted only signed by a node certificate of this swarm, valid now,
// carrying a pass that a current manager issued to that very node for the
// address the table was pulled from. So no node, and nobody holding the
// cluster secret, can serve a table as another address's.
type Tables struct {
	a   *Agent
	now func() time.Time
}

// Tables is the agent's signer and checker of tables.
func (a *Agent) Tables() *Tables { return &Tables{a: a, now: time.Now} }

var errNoCredentials = errors.New("the swarm node identity is not read yet")

// SignTable signs a table with the node key, its pass in front.
func (t *Tables) SignTable(table []byte) ([]byte, error) {
	return t.sign(announce.SignedMessage(table), table)
}

// SignRaw is SignTable's signature alone, without the chain, the pass
// or the eviction list: what a table delta carries (announce.Delta),
// checked with those of the last table the receiver pulled from this
// node.
func (t *Tables) SignRaw(table []byte) ([]byte, error) {
	creds, _ := t.a.identityNow()
	if creds == nil {
		return nil, errNoCredentials
	}
	sig, err := creds.sign(announce.SignedMessage(table))
	if err != nil {
		return nil, fmt.Errorf("signing with the swarm node key: %w", err)
	}
	return sig, nil
}

// SignPeer proves this node's identity to a member it pulls from: the
// same block with no table.
func (t *Tables) SignPeer(msg []byte) ([]byte, error) { return t.sign(msg, nil) }

func (t *Tables) sign(msg, table []byte) ([]byte, error) {
	creds, p := t.a.identityNow()
	if creds == nil {
		return nil, errNoCredentials
	}
	if p == nil {
		return nil, ErrNoPass
	}
	sig, err := creds.sign(msg)
	if err != nil {
		return nil, fmt.Errorf("signing with the swarm node key: %w", err)
	}
	raw, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	var list []byte
	if table != nil {
		// The eviction list rides in front of the table, in the
		// revocation list's place, so that it reaches every member.
		list = t.a.evictionList()
	}
	return announce.EncodeSigned(announce.Signed{Chain: creds.cert.Certificate, Sig: sig, CRL: list, Pass: raw, Table: table})
}

// OpenTable checks a table pulled from host (see Tables) and returns its
// encoding and signer (the node ID). An eviction list in front of it, a
// current manager's and newer than the one held, is adopted first
// (newCRL), whatever the table.
func (t *Tables) OpenTable(host netip.Addr, signed []byte) (table []byte, signer string, newCRL bool, err error) {
	s, err := announce.DecodeSigned(signed)
	if err != nil {
		return nil, "", false, err
	}
	if creds, _ := t.a.identityNow(); creds != nil && s.CRL != nil {
		if e, err := decodeEvictions(s.CRL); err == nil {
			newCRL = t.a.considerEvictions(*creds, e, "the table of "+host.String())
		}
	}
	node, err := t.check(s, announce.SignedMessage(s.Table), host)
	if err != nil {
		return nil, "", newCRL, err
	}
	return s.Table, node, newCRL, nil
}

// CheckPeer checks a puller's identity block: a node of this swarm with a
// pass for host, that signed msg.
func (t *Tables) CheckPeer(host netip.Addr, block, msg []byte) error {
	s, err := announce.DecodeSigned(block)
	if err != nil {
		return err
	}
	if len(s.Table) != 0 || s.CRL != nil {
		return errors.New("an identity block carries nothing but a chain, a signature and a pass")
	}
	_, err = t.check(s, msg, host)
	return err
}

// Revoked tells whether a signer OpenTable returned (a node ID) is on the
// eviction list held.
func (t *Tables) Revoked(signer string) bool { return t.a.isEvicted(signer) }

// KeyName is the node ID a signer OpenTable returned is.
func (t *Tables) KeyName(signer string) string { return signer }

// Name is this node's ID, "" while it has no swarm identity: what its
// IPsec epochs are bound to.
func (t *Tables) Name() string {
	creds, _ := t.a.identityNow()
	if creds == nil {
		return ""
	}
	return creds.node.ID
}

// CRLNumber is the eviction list's sequence number (0: none).
func (t *Tables) CRLNumber() uint64 { return t.a.evictionSeq() }

// check verifies s as signed by a node of this swarm holding a pass for
// host, over msg, and returns the node's ID.
func (t *Tables) check(s announce.Signed, msg []byte, host netip.Addr) (string, error) {
	creds, _ := t.a.identityNow()
	if creds == nil {
		return "", errNoCredentials
	}
	now := t.now()
	leaf, node, err := creds.signerOf(s.Chain, now)
	if err != nil {
		return "", err
	}
	if t.a.isEvicted(node.ID) {
		return "", fmt.Errorf("%w: node %s", ErrEvicted, node.ID)
	}
	p, err := decodePass(s.Pass)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrPass, err)
	}
	if err := creds.verifyPass(p, node.ID, host, now); err != nil {
		return "", fmt.Errorf("%w (node %s): %w", ErrPass, node.ID, err)
	}
	if err := checkSig(leaf, msg, s.Sig); err != nil {
		return "", fmt.Errorf("the signature of node %s: %w", node.ID, err)
	}
	return node.ID, nil
}
