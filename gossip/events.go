package gossip

import (
	"context"
	"maps"
	"net/netip"
	"sort"
	"time"

	"github.com/hashicorp/serf/serf"
)

// DefaultFailGrace: see Config.FailGrace. Long enough for a plugin to be
// disabled and enabled, or killed and restarted, without its peers
// forgetting its endpoints (whose data path never stopped).
const DefaultFailGrace = 10 * time.Second

// DefaultRestartGrace: see Config.RestartGrace. Long enough for `docker
// plugin upgrade` (disable, pull from a registry, enable) on a slow host.
const DefaultRestartGrace = 60 * time.Second

func (c *Cluster) eventLoop(ctx context.Context, events <-chan serf.Event) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-events:
			if q, ok := ev.(*serf.Query); ok {
				// Answered apart: the loop must not wait on a
				// handler (nor a handler on the loop).
				c.answer(q)
				continue
			}
			me, ok := ev.(serf.MemberEvent)
			if !ok {
				continue
			}
			for _, m := range me.Members {
				if m.Name == c.serf.LocalMember().Name {
					continue
				}
				c.memberEvent(me.Type, m)
			}
			// A new table version changes no member's status.
			if me.Type != serf.EventMemberUpdate {
				c.updateMembers()
			}
		}
	}
}

func (c *Cluster) memberEvent(t serf.EventType, m serf.Member) {
	c.log.Debug("member event", "event", t.String(), "member", m.Name, "status", m.Status.String())
	switch t {
	case serf.EventMemberJoin, serf.EventMemberUpdate:
		c.mu.Lock()
		delete(c.failed, m.Name)
		c.mu.Unlock()
		c.maybePull(m)
	case serf.EventMemberFailed:
		grace := c.cfg.FailGrace
		if m.Tags[tagRestarting] != "" {
			// It said it was stopping to start again (Close): its data
			// path runs on meanwhile, so keep its entries longer.
			grace = max(grace, c.cfg.RestartGrace)
		}
		c.mu.Lock()
		c.failed[m.Name] = time.Now().Add(grace)
		c.mu.Unlock()
	case serf.EventMemberLeave, serf.EventMemberReap:
		c.drop(m.Name)
	}
}

func (c *Cluster) drop(name string) {
	c.mu.Lock()
	_, had := c.known[name]
	delete(c.known, name)
	delete(c.held, name)
	delete(c.early, name)
	delete(c.failed, name)
	c.mu.Unlock()
	addr, err := netip.ParseAddr(name)
	if err != nil {
		return
	}
	if had {
		c.log.Info("forgetting member's endpoints", "member", name)
	}
	c.cfg.Sink.DropRemote(addr)
}

// updateMembers hands the sink every member that may send VXLAN: alive,
// suspected, or failed but still within the grace period, and not refused
// for its identity.
func (c *Cluster) updateMembers() {
	var addrs, known []netip.Addr
	for _, m := range c.serf.Members() {
		if a, ok := netip.AddrFromSlice(m.Addr); ok {
			known = append(known, a.Unmap())
		}
		c.mu.Lock()
		untrusted := c.untrusted[m.Name]
		c.mu.Unlock()
		if untrusted {
			continue
		}
		switch m.Status {
		case serf.StatusAlive, serf.StatusLeaving:
		case serf.StatusFailed:
			c.mu.Lock()
			until, ok := c.failed[m.Name]
			c.mu.Unlock()
			if !ok || !time.Now().Before(until) {
				continue
			}
		default:
			continue
		}
		if a, ok := netip.AddrFromSlice(m.Addr); ok {
			addrs = append(addrs, a.Unmap())
		}
	}
	// Connections from any address serf knows, failed or left members'
	// included (they come back), wait under the members' limits.
	c.tr.setMembers(known)
	sort.Slice(addrs, func(i, j int) bool { return addrs[i].Less(addrs[j]) })
	c.cfg.Sink.SetMembers(addrs)
}

// Member is a cluster member as status reports show it.
type Member struct {
	Name   string `json:"Name"`
	Addr   string `json:"Addr"`
	Status string `json:"Status"`
}

// Members lists the cluster as this host sees it.
// Signers are the identities (node IDs in swarm mode) that signed the
// tables installed, by member name.
func (c *Cluster) Signers() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.signers)
}

func (c *Cluster) Members() []Member {
	var out []Member
	for _, m := range c.serf.Members() {
		out = append(out, Member{Name: m.Name, Addr: m.Addr.String(), Status: m.Status.String()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
