package main

import (
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vxsec/vxsec/driver"
	"github.com/vxsec/vxsec/firewall"
	"github.com/vxsec/vxsec/gossip"
	"github.com/vxsec/vxsec/ipsec"
	"github.com/vxsec/vxsec/metrics"
	"github.com/vxsec/vxsec/plugin"
	"github.com/vxsec/vxsec/swarmtrust"
	"github.com/vxsec/vxsec/vip"
)

// daemonStatus is what `vxsec status` prints.
type daemonStatus struct {
	driver.Status
	Members []gossip.Member    `json:"Members"`
	Trust   *swarmtrust.Status `json:"Trust,omitempty"`
	// Drops counts what each lock dropped: the firewall's rules by name
	// (firewall.Locks) and the kernel's IPsec refusals ("xfrm:" counters).
	Drops map[string]uint64 `json:"Drops,omitempty"`
	// Gossip counts what the gossip port let through and refused.
	Gossip *gossip.Stats `json:"Gossip,omitempty"`
	// Identity is this host's identity outside swarm.
	Identity *identityStatus `json:"Identity,omitempty"`
	// Services are the swarm service VIPs this node serves (swarm nodes).
	Services *vip.Status `json:"Services,omitempty"`
	// Refusals are Docker's last calls that failed (in swarm mode, what
	// tasks show as their error).
	Refusals []plugin.Refusal `json:"Refusals,omitempty"`
}

// identityStatus shows a host identity: its name, when it ends, whether
// unsigned tables are refused, and the revocation list's number held.
type identityStatus struct {
	Name    string    `json:"Name"`
	Expires time.Time `json:"Expires"`
	// Serial is the certificate's serial in hex, as `vxsec ca revoke`
	// takes it: a renewal changes it.
	Serial string `json:"Serial"`
	Mode   string `json:"Mode"`
	CRL    uint64 `json:"CRL"`
}

// xfrmLocks are the kernel's IPsec counters that count a lock holding: an
// inbound packet without the SA its policy requires, or cleartext refused,
// and an outbound one the guard policy blocked.
var xfrmLocks = []string{"XfrmInTmplMismatch", "XfrmInNoPols", "XfrmInNoStates", "XfrmInPolBlock", "XfrmOutPolBlock"}

// lockDrops gathers the drop counters of every lock for status.
func lockDrops(fw *firewall.Firewall, log *slog.Logger) map[string]uint64 {
	drops, err := fw.Drops()
	if err != nil {
		log.Warn("reading the firewall's drop counters", "err", err)
		drops = map[string]uint64{}
	}
	for name, n := range xfrmStat() {
		if slices.Contains(xfrmLocks, name) {
			drops["xfrm:"+name] = n
		}
	}
	return drops
}

// xfrmStat reads the kernel's xfrm counters for this network namespace
// (the plugin runs in the host's); none on a kernel without xfrm.
func xfrmStat() map[string]uint64 {
	out := map[string]uint64{}
	stat, err := os.ReadFile("/proc/self/net/xfrm_stat")
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(stat), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 {
			if n, err := strconv.ParseUint(f[1], 10, 64); err == nil {
				out[f[0]] = n
			}
		}
	}
	return out
}

// snapshot is what a metrics scrape reads. The kernel is asked without
// any of the driver's locks.
func snapshot(d *driver.Driver, c *gossip.Cluster, fw *firewall.Firewall, x *ipsec.Xfrm, keys *ipsec.Manager, self netip.Addr, log *slog.Logger) metrics.Snapshot {
	ds := d.Status()
	s := metrics.Snapshot{Self: self, Members: map[string]int{}, Networks: len(ds.Networks), IPsec: ds.IPsec,
		Drops: lockDrops(fw, log), Xfrm: xfrmStat(), Driver: d.Counts(), Now: time.Now()}
	for _, n := range ds.Networks {
		s.LocalEndpoints += n.Local
		s.RemoteEndpoints += n.Remote
	}
	if c != nil {
		for _, m := range c.Members() {
			s.Members[m.Status]++
		}
		gs := c.Stats()
		s.Gossip = &gs
	}
	if keys.Active() {
		sas, err := x.Stats()
		if err != nil {
			log.Warn("reading the SAs' counters for metrics", "err", err)
		}
		s.SAs = sas
	}
	return s
}
