package swarmtrust

import (
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"
)

// An eviction list names the nodes a manager has cut off the vxsec cluster
// (`vxsec evict`, after `docker node rm`): swarm publishes no revocation
// list, and a removed node's certificate stays valid until it expires, so
// without one it would keep its place. A node of the list gets no record
// and no pass, its tables and pulls are refused, and nobody hands it the
// secret the eviction rotates to. The list travels in trust exchanges and
// in front of every table (the revocation list's slot), so it reaches
// every member within one table pull.
type evictions struct {
	// Seq orders lists: each issue is the highest held plus one.
	Seq   uint64    `json:"seq"`
	Nodes []evicted `json:"nodes"`
	By    string    `json:"by"`
	Chain [][]byte  `json:"chain"`
	Sig   []byte    `json:"sig"`
}

// evicted is one node of the list, kept until its certificate must have
// expired (swarm's longest node certificate lifetime).
type evicted struct {
	ID    string `json:"id"`
	Until int64  `json:"until"`
}

// Bounds of a list: its nodes (a list must fit a trust message), a node
// ID's length, and how long an entry is kept.
const (
	maxEvicted   = 256
	maxNodeID    = 64
	evictionKeep = 90 * 24 * time.Hour
)

// ErrEvicted marks a node a manager evicted.
var ErrEvicted = errors.New("the node was evicted from the vxsec cluster")

func (e *evictions) signedBytes(cluster string) []byte {
	b := []byte("vxsec swarm evictions v1\x00")
	for _, f := range []string{cluster, e.By} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	b = binary.BigEndian.AppendUint64(b, e.Seq)
	b = binary.BigEndian.AppendUint32(b, uint32(len(e.Nodes)))
	for _, n := range e.Nodes {
		b = binary.BigEndian.AppendUint32(b, uint32(len(n.ID)))
		b = append(b, n.ID...)
		b = binary.BigEndian.AppendUint64(b, uint64(n.Until))
	}
	return b
}

// has tells whether id is evicted, now.
func (e *evictions) has(id string, now time.Time) bool {
	if e == nil {
		return false
	}
	return slices.ContainsFunc(e.Nodes, func(n evicted) bool { return n.ID == id && now.Unix() < n.Until })
}

// newer: a higher sequence number. Two managers issuing at once make two
// lists of one number; the longer wins (then the lower signature), and a
// manager whose additions lost issues them again (Agent.Evict keeps them).
func (e *evictions) newer(o *evictions) bool {
	switch {
	case e == nil:
		return false
	case o == nil:
		return true
	case e.Seq != o.Seq:
		return e.Seq > o.Seq
	case len(e.Nodes) != len(o.Nodes):
		return len(e.Nodes) > len(o.Nodes)
	}
	return string(e.Sig) < string(o.Sig)
}

// issueEvictions signs the list cur with add added (and entries past
// their time dropped), as the next sequence number.
func issueEvictions(creds credentials, cur *evictions, add []string, now time.Time) (*evictions, error) {
	if creds.node.Role != RoleManager {
		return nil, fmt.Errorf("node %s is a %s: only a swarm manager can evict nodes; run it on a manager", creds.node.ID, creds.node.Role)
	}
	e := &evictions{Seq: 1, By: creds.node.ID, Chain: slices.Clone(creds.cert.Certificate)}
	if cur != nil {
		e.Seq = cur.Seq + 1
		for _, n := range cur.Nodes {
			if now.Unix() < n.Until {
				e.Nodes = append(e.Nodes, n)
			}
		}
	}
	for _, id := range add {
		switch {
		case id == "" || len(id) > maxNodeID:
			return nil, fmt.Errorf("node ID %q: want 1 to %d characters (`docker node ls` shows them)", id, maxNodeID)
		case id == creds.node.ID:
			return nil, fmt.Errorf("node %s is this manager: a manager cannot evict itself", id)
		}
		if i := slices.IndexFunc(e.Nodes, func(n evicted) bool { return n.ID == id }); i >= 0 {
			e.Nodes[i].Until = now.Add(evictionKeep).Unix()
			continue
		}
		e.Nodes = append(e.Nodes, evicted{ID: id, Until: now.Add(evictionKeep).Unix()})
	}
	if len(e.Nodes) > maxEvicted {
		return nil, fmt.Errorf("the eviction list would hold %d nodes, over %d", len(e.Nodes), maxEvicted)
	}
	slices.SortFunc(e.Nodes, func(a, b evicted) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	sig, err := creds.sign(e.signedBytes(creds.node.ClusterID))
	if err != nil {
		return nil, fmt.Errorf("signing the eviction list: %w", err)
	}
	e.Sig = sig
	return e, nil
}

// verifyEvictions accepts a list a current manager of this swarm signed.
func (c credentials) verifyEvictions(e *evictions) error {
	if len(e.Nodes) > maxEvicted || len(e.Chain) == 0 || len(e.Chain) > maxChain || len(e.Sig) == 0 || len(e.Sig) > maxSig {
		return fmt.Errorf("an eviction list of %d nodes, %d certificates and a %d-byte signature (bounds %d, 1..%d, 1..%d)",
			len(e.Nodes), len(e.Chain), len(e.Sig), maxEvicted, maxChain, maxSig)
	}
	for _, n := range e.Nodes {
		if n.ID == "" || len(n.ID) > maxNodeID {
			return fmt.Errorf("an eviction list naming a node ID of %d characters", len(n.ID))
		}
	}
	leaf, err := c.verifyManager(e.Chain, e.By, "eviction list")
	if err != nil {
		return err
	}
	if err := checkSig(leaf, e.signedBytes(c.node.ClusterID), e.Sig); err != nil {
		return fmt.Errorf("the eviction list's signature: %w", err)
	}
	return nil
}

// decodeEvictions reads a list as a table carries it.
func decodeEvictions(b []byte) (*evictions, error) {
	var e evictions
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("decoding the eviction list: %w", err)
	}
	return &e, nil
}

// peerNode is the swarm node a TLS connection's verified certificate
// names.
func peerNode(conn *tls.Conn) (Node, bool) {
	certs := conn.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return Node{}, false
	}
	n, err := identity(certs[0])
	return n, err == nil
}

// isEvicted tells whether node id is on the eviction list held.
func (a *Agent) isEvicted(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.evict.has(id, time.Now())
}

// considerEvictions adopts a peer's eviction list if a current manager
// signed it and it is newer than the one held; the cluster drops the
// evicted nodes' tables at once (EvictionsChanged).
func (a *Agent) considerEvictions(creds credentials, e *evictions, from string) bool {
	if err := creds.verifyEvictions(e); err != nil {
		a.lim.Log(slog.LevelWarn, "refused: evictions", "swarm trust: refused an eviction list", "peer", from, "by", e.By, "seq", e.Seq, "err", err)
		a.mu.Lock()
		a.status.EvictionsRefused++
		a.status.LastEvictionRefusal = fmt.Sprintf("%s: %v", from, err)
		a.mu.Unlock()
		return false
	}
	if !a.adoptEvictions(e) {
		return false
	}
	a.log.Info("adopting the swarm's eviction list", "from", from, "seq", e.Seq, "by", e.By, "nodes", len(e.Nodes))
	a.publish()
	return true
}

// adoptEvictions makes e the list held if it is newer; the caller
// publishes.
func (a *Agent) adoptEvictions(e *evictions) bool {
	a.mu.Lock()
	if !e.newer(a.evict) {
		a.mu.Unlock()
		return false
	}
	a.evict = e
	a.ver++
	a.noteEvictionsLocked()
	a.mu.Unlock()
	select {
	case a.evictChanged <- struct{}{}:
	default:
	}
	return true
}

func (a *Agent) noteEvictionsLocked() {
	a.status.EvictionSeq, a.status.Evicted = 0, nil
	if a.evict != nil {
		a.status.EvictionSeq = a.evict.Seq
		for _, n := range a.evict.Nodes {
			a.status.Evicted = append(a.status.Evicted, n.ID)
		}
	}
}

// EvictionsChanged is signalled when the eviction list held is replaced:
// the cluster drops the tables of the nodes it names (gossip's
// RevocationChanged).
func (a *Agent) EvictionsChanged() <-chan struct{} { return a.evictChanged }

// Evict cuts nodes off the vxsec cluster (a manager, after `docker node
// rm`): it issues the eviction list with them, then a new cluster secret,
// which reaches every node but them. Their tables are dropped and their
// pulls refused as soon as the list arrives (within a table pull); they
// keep reading gossip only until the old secret's 2-minute grace ends.
func (a *Agent) Evict(ids []string) (seq uint64, secretID string, gen uint64, err error) {
	creds, err := loadCredentials(a.cfg.Dir)
	if err != nil {
		return 0, "", 0, err
	}
	if len(ids) == 0 {
		return 0, "", 0, errors.New("name the node IDs to evict (`docker node ls`)")
	}
	a.mu.Lock()
	cur := a.evict
	a.mu.Unlock()
	e, err := issueEvictions(creds, cur, ids, time.Now())
	if err != nil {
		return 0, "", 0, err
	}
	if !a.adoptEvictions(e) {
		return 0, "", 0, errors.New("a newer eviction list arrived meanwhile; try again")
	}
	a.mu.Lock()
	for _, id := range ids {
		if !slices.Contains(a.evictWant, id) {
			a.evictWant = append(a.evictWant, id)
		}
	}
	a.mu.Unlock()
	a.log.Info("evicted nodes from the vxsec cluster", "nodes", ids, "seq", e.Seq)
	secretID, gen, err = a.Rotate()
	if err != nil {
		return e.Seq, "", 0, fmt.Errorf("the nodes are evicted (list %d), but the secret was not rotated: %w", e.Seq, err)
	}
	return e.Seq, secretID, gen, nil
}

// reissueEvictions is a manager's part of a round: its own evictions that
// a concurrent list without them displaced are issued again.
func (a *Agent) reissueEvictions(creds credentials) {
	a.mu.Lock()
	cur, want := a.evict, slices.Clone(a.evictWant)
	a.mu.Unlock()
	var missing []string
	for _, id := range want {
		if !cur.has(id, time.Now()) {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return
	}
	e, err := issueEvictions(creds, cur, missing, time.Now())
	if err != nil {
		a.log.Error("issuing the eviction list again", "err", err)
		return
	}
	if a.adoptEvictions(e) {
		a.publish()
		a.push()
	}
}

// evictionList is the list held, as a signed table carries it (nil:
// none).
func (a *Agent) evictionList() []byte {
	a.mu.Lock()
	e := a.evict
	a.mu.Unlock()
	if e == nil {
		return nil
	}
	b, _ := json.Marshal(e)
	return b
}

// evictionSeq is the sequence number of the list held (0: none).
func (a *Agent) evictionSeq() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.evict == nil {
		return 0
	}
	return a.evict.Seq
}

// EvictAbsent evicts the nodes among known (the signers of the tables held)
// that the swarm no longer lists (`docker node rm`), and returns them: what
// the leader runs with the engine's node list, so that a removed node is
// cut off without a command. Nodes already evicted, and this node, are left
// alone; an empty swarm list (an engine answering oddly) evicts nobody.
func (a *Agent) EvictAbsent(swarmNodes, known []string) ([]string, error) {
	if len(swarmNodes) == 0 {
		return nil, nil
	}
	creds, err := loadCredentials(a.cfg.Dir)
	if err != nil {
		return nil, err
	}
	var absent []string
	for _, id := range known {
		if id == "" || id == creds.node.ID || slices.Contains(swarmNodes, id) || a.isEvicted(id) || slices.Contains(absent, id) {
			continue
		}
		absent = append(absent, id)
	}
	if len(absent) == 0 {
		return nil, nil
	}
	slices.Sort(absent)
	if _, _, _, err := a.Evict(absent); err != nil {
		return nil, err
	}
	return absent, nil
}
