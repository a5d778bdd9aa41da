package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/vxsec/vxsec/config"
	"github.com/vxsec/vxsec/engine"
	"github.com/vxsec/vxsec/gossip"
	"github.com/vxsec/vxsec/swarmtrust"
	"github.com/vxsec/vxsec/vxlan"
)

// seedEvery is how often a swarm node looks for managers it is not in a
// cluster with yet (new managers, or all of them after a partition).
const seedEvery = 15 * time.Second

// clusterRef holds the cluster once it has started: in swarm mode it
// starts only after the swarm's nodes agreed a secret, while the API
// already serves.
type clusterRef struct {
	mu      sync.Mutex
	c       *gossip.Cluster
	started chan struct{}
}

func newClusterRef() *clusterRef { return &clusterRef{started: make(chan struct{})} }

func (r *clusterRef) set(c *gossip.Cluster) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.c = c
	close(r.started)
}

// get is the cluster, or nil before it started.
func (r *clusterRef) get() *gossip.Cluster {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.c
}

// wait is the cluster once it started, or nil when ctx ends first.
func (r *clusterRef) wait(ctx context.Context) *gossip.Cluster {
	select {
	case <-r.started:
		return r.get()
	case <-ctx.Done():
		return nil
	}
}

// swarmTrust makes the swarm agreement when it is the way in: a swarm node
// with no VXSEC_SECRET. A node whose key is locked (autolock) or whose
// certificate cannot be read runs without it, loudly: plain networks work,
// encrypted ones are refused for want of a secret.
func swarmTrust(s config.Settings, under vxlan.Underlay, peers func() []netip.Addr, log *slog.Logger) *swarmtrust.Agent {
	if s.Secret != nil || !swarmtrust.InSwarm(s.SwarmDir) {
		return nil
	}
	var keep string
	if s.Snapshot != "" {
		// Beside the snapshot: in the plugin's own filesystem, so it goes
		// with `docker plugin rm`; after an upgrade it is fetched again.
		keep = filepath.Join(filepath.Dir(s.Snapshot), "swarm-secret.json")
	}
	a, err := swarmtrust.New(swarmtrust.Config{
		Dir: s.SwarmDir, Addr: under.Addr, Bind: under.Local, Port: s.TrustPort, SecretFile: keep, Peers: peers, Log: log,
		RotateEvery: s.SecretRotateEvery,
	})
	if err != nil {
		log.Error("swarm trust unavailable: running without a cluster secret", "err", err)
		return nil
	}
	return a
}

// peers lists the cluster's other members, for the trust agent to tell a
// new secret to.
func (r *clusterRef) peers() []netip.Addr {
	c := r.get()
	if c == nil {
		return nil
	}
	var out []netip.Addr
	for _, m := range c.Members() {
		if a, err := netip.ParseAddr(m.Name); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// followSwarm keeps the cluster in step with the swarm. It joins the
// swarm's managers (from the engine's state.json): swarm tells a plugin no
// other node's address, and every node knows its managers, so the managers
// are the seeds. And when the cluster's trust came from the swarm (trusted)
// and the engine leaves the swarm, the node leaves the cluster: it is no
// longer one of the nodes the secret was agreed among.
func followSwarm(ctx context.Context, s config.Settings, self netip.Addr, c *gossip.Cluster, trusted bool, log *slog.Logger) {
	for {
		n, err := swarmtrust.ReadNode(s.SwarmDir)
		if errors.Is(err, swarmtrust.ErrNotInSwarm) && trusted {
			log.Info("the engine left the swarm: leaving the vxsec cluster (disable and enable the plugin to use it again)")
			if err := c.Leave(); err != nil {
				log.Warn("leaving the cluster", "err", err)
			}
			return
		}
		if err == nil {
			alive := map[string]bool{}
			for _, m := range c.Members() {
				if m.Status == "alive" {
					alive[m.Name] = true
				}
			}
			var seeds []string
			for _, m := range n.Managers {
				h := m.Host()
				if a, err := netip.ParseAddr(h); err == nil && a == self || alive[h] {
					continue
				}
				seeds = append(seeds, net.JoinHostPort(h, strconv.Itoa(s.GossipPort)))
			}
			if len(seeds) > 0 {
				if n, err := c.TryJoin(seeds); err != nil {
					log.Debug("joining the swarm's managers", "seeds", seeds, "joined", n, "err", err)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(seedEvery):
		}
	}
}

// evictEvery is how often the swarm's leader compares the nodes whose
// tables it holds with the swarm's node list.
const evictEvery = 30 * time.Second

// evictRemoved runs on every swarm node and acts on the leader only: a
// node removed from the swarm (`docker node rm`) whose table is still held
// is evicted from the vxsec cluster (swarmtrust.Agent.EvictAbsent), as
// `vxsec evict` would, within evictEvery plus the time to spread the list.
// A node's certificate stays valid after its removal until it expires, so
// without this a removed node that kept running would stay a member.
func evictRemoved(ctx context.Context, docker *engine.Docker, trust *swarmtrust.Agent, cl *clusterRef, log *slog.Logger) {
	t := time.NewTicker(evictEvery)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c := cl.get()
		if c == nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		nodes, err := docker.SwarmNodes(cctx)
		cancel()
		if errors.Is(err, engine.ErrNotLeader) {
			continue
		}
		if err != nil {
			if err.Error() != lastErr {
				log.Warn("reading the swarm's nodes to evict removed ones", "err", err)
			}
			lastErr = err.Error()
			continue
		}
		lastErr = ""
		var known []string
		for _, id := range c.Signers() {
			known = append(known, id)
		}
		evicted, err := trust.EvictAbsent(nodes, known)
		if err != nil {
			log.Error("evicting nodes removed from the swarm", "err", err)
			continue
		}
		if len(evicted) > 0 {
			log.Info("nodes removed from the swarm evicted from the vxsec cluster", "nodes", evicted)
		}
	}
}
