package lab

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/docker/docker/api/types/swarm"
)

// The swarm, as an engine drives and sees it (moby testutil/daemon's
// swarm.go does the same for its daemons).

// SwarmPort is swarm's default listening port.
const SwarmPort = 2377

// SwarmInit makes the engine the first manager of a new swarm (`docker swarm
// init --advertise-addr <Addr>`).
func (e *Engine) SwarmInit(ctx context.Context) error {
	ctx, cancel := e.call(ctx)
	defer cancel()
	_, err := e.Client.SwarmInit(ctx, swarm.InitRequest{
		ListenAddr:    fmt.Sprintf("0.0.0.0:%d", SwarmPort),
		AdvertiseAddr: e.Addr.String(),
	})
	return err
}

// JoinToken is the swarm's join token for managers (manager true) or workers.
func (e *Engine) JoinToken(ctx context.Context, manager bool) (string, error) {
	ctx, cancel := e.call(ctx)
	defer cancel()
	sw, err := e.Client.SwarmInspect(ctx)
	if err != nil {
		return "", err
	}
	if manager {
		return sw.JoinTokens.Manager, nil
	}
	return sw.JoinTokens.Worker, nil
}

// SwarmJoin joins the swarm that the engine at remote manages, with token
// (`docker swarm join --token T --advertise-addr <Addr> remote:2377`).
func (e *Engine) SwarmJoin(ctx context.Context, token string, remote *Engine) error {
	ctx, cancel := e.call(ctx)
	defer cancel()
	return e.Client.SwarmJoin(ctx, swarm.JoinRequest{
		ListenAddr:    fmt.Sprintf("0.0.0.0:%d", SwarmPort),
		AdvertiseAddr: e.Addr.String(),
		RemoteAddrs:   []string{net.JoinHostPort(remote.Addr.String(), fmt.Sprint(SwarmPort))},
		JoinToken:     token,
	})
}

// SwarmLeave leaves the swarm (`docker swarm leave`, --force if force).
func (e *Engine) SwarmLeave(ctx context.Context, force bool) error {
	ctx, cancel := e.call(ctx)
	defer cancel()
	return e.Client.SwarmLeave(ctx, force)
}

// SwarmID is the swarm's ID (its cluster ID), as the engine reports it.
func (e *Engine) SwarmID(ctx context.Context) (string, error) {
	ctx, cancel := e.call(ctx)
	defer cancel()
	sw, err := e.Client.SwarmInspect(ctx)
	return sw.ID, err
}

// NodeID is the engine's own swarm node ID, and whether it is a manager
// (the API's ControlAvailable).
func (e *Engine) NodeID(ctx context.Context) (id string, manager bool, err error) {
	ctx, cancel := e.call(ctx)
	defer cancel()
	info, err := e.Client.Info(ctx)
	return info.Swarm.NodeID, info.Swarm.ControlAvailable, err
}

// Nodes lists the swarm's nodes as this manager sees them.
func (e *Engine) Nodes(ctx context.Context) ([]swarm.Node, error) {
	ctx, cancel := e.call(ctx)
	defer cancel()
	return e.Client.NodeList(ctx, swarm.NodeListOptions{})
}

// ReadyNodes counts the nodes this manager sees ready.
func (e *Engine) ReadyNodes(ctx context.Context) (int, error) {
	nodes, err := e.Nodes(ctx)
	n := 0
	for _, nd := range nodes {
		if nd.Status.State == swarm.NodeStateReady {
			n++
		}
	}
	return n, err
}

// Leader is the hostname of the swarm's leader, as this manager sees it.
func (e *Engine) Leader(ctx context.Context) (string, error) {
	nodes, err := e.Nodes(ctx)
	if err != nil {
		return "", err
	}
	for _, nd := range nodes {
		if nd.ManagerStatus != nil && nd.ManagerStatus.Leader {
			return nd.Description.Hostname, nil
		}
	}
	return "", fmt.Errorf("lab: %s sees no leader among %d nodes", e.Name, len(nodes))
}

// NodeState is the state (ready, down, ...) of the node with hostname host,
// as this manager sees it; "" when it is not listed.
func (e *Engine) NodeState(ctx context.Context, host string) (swarm.NodeState, error) {
	nodes, err := e.Nodes(ctx)
	for _, nd := range nodes {
		if nd.Description.Hostname == host {
			return nd.Status.State, nil
		}
	}
	return "", err
}

// NodeUpdate changes the spec of the node named (hostname or ID) node
// through this manager: f edits it (`docker node update`, `node demote`).
func (e *Engine) NodeUpdate(ctx context.Context, node string, f func(*swarm.NodeSpec)) error {
	ctx, cancel := e.call(ctx)
	defer cancel()
	n, _, err := e.Client.NodeInspectWithRaw(ctx, node)
	if err != nil {
		return err
	}
	f(&n.Spec)
	return e.Client.NodeUpdate(ctx, n.ID, n.Version, n.Spec)
}

// NodeRemove removes a node from the swarm (`docker node rm [--force]`).
func (e *Engine) NodeRemove(ctx context.Context, node string, force bool) error {
	ctx, cancel := e.call(ctx)
	defer cancel()
	return e.Client.NodeRemove(ctx, node, swarm.NodeRemoveOptions{Force: force})
}

// RotateCA rotates the swarm's root CA and waits until the rotation is over
// and every node holds a certificate of the new root, as `docker swarm ca
// --rotate` does (its progress: no root rotation in progress, every node's
// TLSInfo.TrustRoot the swarm's).
func (e *Engine) RotateCA(ctx context.Context) error {
	ctx, cancel := e.call(ctx)
	defer cancel()
	sw, err := e.Client.SwarmInspect(ctx)
	if err != nil {
		return err
	}
	sw.Spec.CAConfig.ForceRotate++
	sw.Spec.CAConfig.SigningCACert, sw.Spec.CAConfig.SigningCAKey = "", ""
	if err := e.Client.SwarmUpdate(ctx, sw.Version, sw.Spec, swarm.UpdateFlags{}); err != nil {
		return err
	}
	for {
		sw, err := e.Client.SwarmInspect(ctx)
		if err == nil && !sw.RootRotationInProgress {
			nodes, err := e.Client.NodeList(ctx, swarm.NodeListOptions{})
			if err == nil && len(nodes) > 0 {
				done := true
				for _, n := range nodes {
					if n.Description.TLSInfo.TrustRoot != sw.TLSInfo.TrustRoot {
						done = false
					}
				}
				if done {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab: %s: the root CA rotation did not end: %w", e.Name, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
