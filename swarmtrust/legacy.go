package swarmtrust

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
)

// Protocol 1 is the previous release's: unsigned records, the oldest wins,
// and a node refuses any other version by closing the connection. So that
// a swarm upgrades host by host without a second secret appearing, this
// release still speaks it in two places, and in both the peer is a node
// of this swarm that passed the mutual TLS:
//   - a node holding no secret (just upgraded: `docker plugin upgrade`
//     drops the plugin's filesystem and the kept secret with it) asks a
//     manager named in state.json, whose certificate says manager, for its
//     record in protocol 1, and holds it unsigned; a manager of this
//     release then re-issues that same secret, signed (reissueDue);
//   - a node of the previous release asking this one gets this one's
//     secret in protocol 1.
//
// Nothing received in protocol 1 ever replaces a secret a node holds, so
// it cannot be used to pin one.
const legacyVersion = 1

var errLegacyPeer = errors.New("the peer speaks protocol 1 (the previous release)")

type legacyMessage struct {
	Version int           `json:"v"`
	Cluster string        `json:"cluster"`
	Record  *legacyRecord `json:"record"`
}

type legacyRecord struct {
	Secret  []byte `json:"secret"`
	Created int64  `json:"created"`
	By      string `json:"by"`
}

// wantsLegacy: the node has no secret of this swarm yet.
func (a *Agent) wantsLegacy() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.rec == nil || a.rec.placeholder()
}

// exchangeLegacy asks the manager node at addr for its secret in protocol
// 1, and holds it if this node still has none.
func (a *Agent) exchangeLegacy(ctx context.Context, creds credentials, addr, node string) error {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: dialTimeout}, Config: creds.clientConfig(node)}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	conn := c.(*tls.Conn)
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	peer, err := identity(conn.ConnectionState().PeerCertificates[0])
	if err != nil || peer.Role != RoleManager {
		return fmt.Errorf("%w, and is not a manager (%s): not asking it", errLegacyPeer, peer.Role)
	}
	hello, _ := json.Marshal(legacyMessage{Version: legacyVersion, Cluster: creds.node.ClusterID})
	if _, err := conn.Write(append(hello, '\n')); err != nil {
		return err
	}
	line, err := bufio.NewReader(io.LimitReader(conn, maxMessage)).ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("reading the peer's protocol 1 message: %w", err)
	}
	var m legacyMessage
	if err := json.Unmarshal(line, &m); err != nil {
		return fmt.Errorf("decoding the peer's protocol 1 message: %w", err)
	}
	switch {
	case m.Version != legacyVersion || m.Cluster != creds.node.ClusterID:
		return fmt.Errorf("the peer's protocol 1 message is of version %d, swarm %s", m.Version, m.Cluster)
	case m.Record == nil:
		return nil
	case len(m.Record.Secret) != SecretBytes:
		return fmt.Errorf("the peer's protocol 1 secret has %d bytes, want %d", len(m.Record.Secret), SecretBytes)
	}
	r := &record{Secret: m.Record.Secret, Created: m.Record.Created, By: m.Record.By}
	a.mu.Lock()
	adopt := a.cluster == creds.node.ClusterID && (a.rec == nil || a.rec.placeholder())
	if adopt {
		a.adoptLocked(r)
	}
	a.mu.Unlock()
	if adopt {
		a.log.Info("adopting the swarm's vxsec secret from a manager of the previous release", "from", addr, "node", node, "secret", r.id())
		a.publish()
	}
	return nil
}

// answerLegacy gives a node of the previous release this node's secret, in
// its protocol.
func (a *Agent) answerLegacy(conn net.Conn) error {
	a.mu.Lock()
	m := legacyMessage{Version: legacyVersion, Cluster: a.cluster}
	if a.rec != nil && !a.rec.placeholder() {
		m.Record = &legacyRecord{Secret: a.rec.Secret, Created: a.rec.Created, By: a.rec.By}
	}
	a.mu.Unlock()
	b, _ := json.Marshal(m)
	_, err := conn.Write(append(b, '\n'))
	return err
}
