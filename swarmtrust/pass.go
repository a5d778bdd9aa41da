package swarmtrust

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/vxsec/vxsec/announce"
	"github.com/vxsec/vxsec/internal/certs"
)

// A pass is a manager's statement that a node holds an address until a
// time. Swarm node certificates name nodes, not addresses, so a table
// signed with a node key alone would say nothing about which member it
// is for: any node could sign a table and serve it as another address's.
// A manager issues a pass only to a node that proved its certificate over
// mutual TLS from that very address (the exchange's TCP source), so the
// pass plays the part the address in a `vxsec ca issue` certificate plays
// outside swarm.
type pass struct {
	Node     string `json:"node"`
	Addr     string `json:"addr"`
	NotAfter int64  `json:"not_after"`
	By       string `json:"by"`
	// Chain is the issuer's certificate chain (DER).
	Chain [][]byte `json:"chain"`
	Sig   []byte   `json:"sig"`
}

// Pass timing: a pass lasts PassLife, and a node renews it at its
// exchanges with managers once less than passRenew is left, so a node
// always holds one with at least passRenew to run while a manager
// answers within that time. Passes bind addresses, they do not revoke
// (eviction lists do): a long life lets the data plane ride out a long
// absence of every manager, as swarm's own tasks do, and a renewal (a new
// table version, pulled by every member) comes twice a day.
const (
	PassLife  = 24 * time.Hour
	passRenew = 12 * time.Hour
)

var (
	// ErrNoPass: the node holds no manager's pass for its address yet.
	ErrNoPass = errors.New("no manager has issued this node a pass for its address yet")
	// ErrPass marks a table or pull refused for its pass.
	ErrPass = errors.New("the signer's pass")
)

// signedBytes is what the issuer signs: every field but the chain, and
// the swarm's ID.
func (p *pass) signedBytes(cluster string) []byte {
	b := []byte("vxsec swarm address pass v1\x00")
	for _, f := range []string{cluster, p.By, p.Node, p.Addr} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return binary.BigEndian.AppendUint64(b, uint64(p.NotAfter))
}

// issuePass signs a pass for node at addr; the issuer must be a manager.
func issuePass(creds credentials, node string, addr netip.Addr, now time.Time) (*pass, error) {
	if creds.node.Role != RoleManager {
		return nil, fmt.Errorf("node %s is a %s: only managers issue passes", creds.node.ID, creds.node.Role)
	}
	p := &pass{
		Node: node, Addr: addr.Unmap().String(), NotAfter: now.Add(PassLife).Unix(),
		By: creds.node.ID, Chain: slices.Clone(creds.cert.Certificate),
	}
	sig, err := creds.sign(p.signedBytes(creds.node.ClusterID))
	if err != nil {
		return nil, fmt.Errorf("signing a pass: %w", err)
	}
	p.Sig = sig
	return p, nil
}

// verifyPass accepts a pass a current manager of this swarm signed for
// node at addr that has not run out.
func (c credentials) verifyPass(p *pass, node string, addr netip.Addr, now time.Time) error {
	if len(p.Chain) == 0 || len(p.Chain) > maxChain || len(p.Sig) == 0 || len(p.Sig) > maxSig {
		return fmt.Errorf("a pass with %d certificates and a %d-byte signature (bounds 1..%d, 1..%d)", len(p.Chain), len(p.Sig), maxChain, maxSig)
	}
	leaf, err := c.verifyManager(p.Chain, p.By, "pass")
	if err != nil {
		return err
	}
	if err := checkSig(leaf, p.signedBytes(c.node.ClusterID), p.Sig); err != nil {
		return fmt.Errorf("the pass's signature: %w", err)
	}
	switch {
	case p.Node != node:
		return fmt.Errorf("the pass is node %s's, not %s's", p.Node, node)
	case p.Addr != addr.Unmap().String():
		return fmt.Errorf("the pass is for address %s, not %s", p.Addr, addr.Unmap())
	case !now.Before(time.Unix(p.NotAfter, 0)):
		return fmt.Errorf("the pass ran out at %s", time.Unix(p.NotAfter, 0).UTC().Format(time.RFC3339))
	}
	return nil
}

// decodePass reads a pass as a signed table carries it.
func decodePass(b []byte) (*pass, error) {
	if len(b) == 0 {
		return nil, errors.New("no pass: swarm nodes sign their tables with a manager's pass for their address")
	}
	if len(b) > announce.MaxPass {
		return nil, fmt.Errorf("a pass of %d bytes, over %d", len(b), announce.MaxPass)
	}
	var p pass
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("decoding the pass: %w", err)
	}
	return &p, nil
}

// signerOf checks a chain of a node certificate of this swarm, valid now,
// and returns the node.
func (c credentials) signerOf(chain [][]byte, now time.Time) (*x509.Certificate, Node, error) {
	leaf, err := certs.Verify(chain, c.roots, now, x509.ExtKeyUsageAny)
	if err != nil {
		return nil, Node{}, fmt.Errorf("the signer is not certified by this swarm's CA: %w", err)
	}
	n, err := identity(leaf)
	if err != nil {
		return nil, Node{}, fmt.Errorf("the signer's certificate: %w", err)
	}
	if n.ClusterID != c.node.ClusterID {
		return nil, Node{}, fmt.Errorf("the signer %s is a node of swarm %s, not %s", n.ID, n.ClusterID, c.node.ClusterID)
	}
	return leaf, n, nil
}

// wantsPass: this node holds no pass that its own credentials accept (a
// current manager's, for its address), or one with less than passRenew
// to run.
func (a *Agent) wantsPass(creds credentials, now time.Time) bool {
	a.mu.Lock()
	p := a.pass
	a.mu.Unlock()
	if p == nil || time.Unix(p.NotAfter, 0).Sub(now) < passRenew {
		return true
	}
	return creds.verifyPass(p, creds.node.ID, a.cfg.Addr, now) != nil
}

// considerPass adopts a pass for this node's address if it is valid and
// this node wants one (wantsPass), and tells the cluster (PassChanged).
func (a *Agent) considerPass(creds credentials, p *pass, from string) {
	now := time.Now()
	if err := creds.verifyPass(p, creds.node.ID, a.cfg.Addr, now); err != nil {
		a.lim.Log(slog.LevelWarn, "pass refused", "swarm trust: refusing a pass", "from", from, "err", err)
		return
	}
	if !a.wantsPass(creds, now) {
		return
	}
	a.mu.Lock()
	a.pass = p
	a.ver++ // kept with the secret, so that a restart signs at once
	a.status.PassBy, a.status.PassNotAfter = p.By, time.Unix(p.NotAfter, 0)
	a.mu.Unlock()
	a.publish()
	a.log.Info("holding a manager's pass for this node's address", "addr", p.Addr, "by", p.By, "not_after", time.Unix(p.NotAfter, 0).UTC())
	select {
	case a.passChanged <- struct{}{}:
	default:
	}
}

// answerPass is a manager's answer to a client asking for a pass for
// asked: issued only if the connection comes from that address.
func (a *Agent) answerPass(creds credentials, conn *tls.Conn, asked string, from netip.Addr) *pass {
	refuse := func(err error) *pass {
		a.lim.Log(slog.LevelWarn, "pass not issued", "swarm trust: not issuing a pass", "peer", from, "err", err)
		a.mu.Lock()
		a.status.PassesRefused++
		a.status.LastPassRefusal = fmt.Sprintf("%s: %v", from, err)
		a.mu.Unlock()
		return nil
	}
	want, err := netip.ParseAddr(asked)
	if err != nil {
		return refuse(fmt.Errorf("asked for a pass for %q: %w", asked, err))
	}
	if want.Unmap() != from.Unmap() {
		return refuse(fmt.Errorf("asked for a pass for %s from %s: a pass names the address its holder proved itself from", want, from))
	}
	node, ok := peerNode(conn)
	if !ok {
		return refuse(errors.New("no client certificate of a swarm node"))
	}
	p, err := issuePass(creds, node.ID, from, time.Now())
	if err != nil {
		return refuse(err)
	}
	a.mu.Lock()
	a.status.PassesIssued++
	a.mu.Unlock()
	return p
}

// PassChanged is signalled when this node holds a new pass: the cluster
// signs its table with it (gossip's Resign).
func (a *Agent) PassChanged() <-chan struct{} { return a.passChanged }

// identityNow is what this node signs with: its credentials and pass.
func (a *Agent) identityNow() (*credentials, *pass) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.creds, a.pass
}
