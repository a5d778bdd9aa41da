package driver

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vxsec/vxsec/announce"
	"github.com/vxsec/vxsec/vxlan"
)

// Claims. Several endpoints may claim one address, or one MAC, in a
// network: two hosts' IPAM handing out the same address, or a member
// trying to take over another's. Exactly one claim gets the network's
// entries, and the order is kept by this host's own clock only. A local
// endpoint counts from when it was created here. A remote one counts from
// when this host first saw its host claim it. The Created a sender stamps
// on its endpoints is never used, so a member whose clock says 1970 gains
// nothing. The live holder keeps what it holds while it claims it, and
// every later claim is ignored and logged, once. The entries in the kernel
// at start are the memory that survives a restart: their claims count from
// before the start, ahead of any claim the cluster brings afterwards.

// claim is one host's claim on an address and a MAC in a network.
type claim struct {
	vni  uint32
	host netip.Addr
	ip   netip.Addr
	// mac keys the claim (vxlan.MAC48): an endpoint whose MAC is not 6
	// bytes can have no FDB entry, and makes no claim.
	mac vxlan.MAC48
}

// claimOf is the claim host makes with ep, if its MAC can make one.
func claimOf(host netip.Addr, ep announce.Endpoint) (claim, bool) {
	m, ok := vxlan.ToMAC48(ep.MAC)
	return claim{vni: ep.VNI, host: host, ip: ep.IP, mac: m}, ok
}

// claimsOf lists what a table claims.
func claimsOf(t announce.Table) map[claim]bool {
	out := make(map[claim]bool, len(t.Endpoints))
	for _, ep := range t.Endpoints {
		if c, ok := claimOf(t.Host, ep); ok {
			out[c] = true
		}
	}
	return out
}

// noteClaimsLocked records when this host first saw each claim of t, and
// forgets the claims t's host no longer makes (a claim made again later
// counts from then).
// old is the host's table held before t, if any: the claims to forget are
// then among its own, and the rest of what was seen (every host's) is not
// walked for each table that arrives.
func (d *Driver) noteClaimsLocked(old *announce.Table, t announce.Table) {
	now := d.now()
	current := claimsOf(t)
	forget := func(c claim) {
		if c.host == t.Host && !current[c] {
			delete(d.seen, c)
			delete(d.ignored, c)
		}
	}
	if old != nil {
		for c := range claimsOf(*old) {
			forget(c)
		}
	} else {
		// The first table of the host: claims seeded from the kernel at
		// start may be its.
		for c := range d.seen {
			forget(c)
		}
	}
	for c := range current {
		if _, ok := d.seen[c]; !ok {
			d.seen[c] = now
		}
	}
}

// dropClaimsLocked forgets every claim of a host that is gone.
func (d *Driver) dropClaimsLocked(host netip.Addr) {
	for c := range d.seen {
		if c.host == host {
			delete(d.seen, c)
			delete(d.ignored, c)
		}
	}
}

// seedClaims makes the entries the kernel holds at start the oldest
// claims: the holders before a restart stay the holders after it.
func (d *Driver) seedClaims() {
	before := d.started.Add(-time.Nanosecond)
	for _, n := range d.nets {
		peers, err := d.cfg.DataPath.Peers(d.dpNetwork(n))
		if err != nil {
			continue // no device yet: Reconcile makes it, with no entries
		}
		for _, p := range peers {
			if m, ok := vxlan.ToMAC48(p.MAC); ok {
				d.seen[claim{vni: n.VNI, host: p.Host, ip: p.IP, mac: m}] = before
			}
		}
	}
}

// seenLocked is when this host first saw c; a claim not noted yet counts
// from now.
func (d *Driver) seenLocked(c claim) time.Time {
	if at, ok := d.seen[c]; ok {
		return at
	}
	return d.now()
}

// olderClaim orders two claims: the one seen first, then (a tie, which
// only a coarse clock makes) by host, address and MAC, so that every pass
// decides alike.
func olderClaim(a, b claim, aSeen, bSeen time.Time) bool {
	if c := aSeen.Compare(bSeen); c != 0 {
		return c < 0
	}
	if c := a.host.Compare(b.host); c != 0 {
		return c < 0
	}
	if c := a.ip.Compare(b.ip); c != 0 {
		return c < 0
	}
	return bytes.Compare(a.mac[:], b.mac[:]) < 0
}

// peersLocked lists the remote endpoints of a network that hold their
// claims. A host whose network of this VNI conflicts with ours contributes
// nothing, a local endpoint holds its address and MAC against every remote
// claim, and of remote claims on one address or one MAC the oldest holds
// it. A claim that holds its address but not its MAC (or the reverse) gets
// no entry: an FDB entry is by MAC and a neighbour entry by address, and
// either one would divert the holder's traffic.
func (d *Driver) peersLocked(n *Network) []vxlan.Peer {
	localIP := make(map[netip.Addr]bool, len(n.Endpoints))
	localMAC := make(map[vxlan.MAC48]bool, len(n.Endpoints))
	for _, ep := range n.Endpoints {
		localIP[ep.Address.Addr()] = true
		if m, ok := vxlan.ToMAC48(ep.MAC); ok {
			localMAC[m] = true
		}
	}
	type cand struct {
		c    claim
		mac  net.HardwareAddr
		seen time.Time
	}
	// Sized once: a pass runs after every batch of tables, over every
	// entry of the network, and growing these maps was most of its cost.
	total := 0
	for _, t := range d.remote {
		total += len(t.Endpoints)
	}
	// The indexes hold positions in cands, not copies: small values
	// without pointers make the maps cheaper to fill.
	cands := make([]cand, 0, total)
	byIP := make(map[netip.Addr]int32, total)
	byMAC := make(map[vxlan.MAC48]int32, total)
	for host, t := range d.remote {
		if rn, ok := findVNI(t, n.VNI); !ok || conflicts(n, rn) != "" {
			continue
		}
		for _, ep := range t.Endpoints {
			if ep.VNI != n.VNI {
				continue
			}
			c, ok := claimOf(host, ep)
			if !ok {
				continue // its MAC cannot have an FDB entry
			}
			if localIP[c.ip] || localMAC[c.mac] {
				d.ignoreLocked(c, "an endpoint of this host")
				continue
			}
			k := cand{c: c, mac: ep.MAC, seen: d.seenLocked(c)}
			i := int32(len(cands))
			cands = append(cands, k)
			if b, ok := byIP[c.ip]; !ok || olderClaim(k.c, cands[b].c, k.seen, cands[b].seen) {
				byIP[c.ip] = i
			}
			if b, ok := byMAC[c.mac]; !ok || olderClaim(k.c, cands[b].c, k.seen, cands[b].seen) {
				byMAC[c.mac] = i
			}
		}
	}
	out := make([]vxlan.Peer, 0, len(cands))
	for i, k := range cands {
		ipAt := byIP[k.c.ip]
		ipHolder, macHolder := cands[ipAt], cands[byMAC[k.c.mac]]
		switch {
		case ipHolder.c != k.c:
			d.ignoreLocked(k.c, "host "+ipHolder.c.host.String())
		case macHolder.c != k.c:
			d.ignoreLocked(k.c, "host "+macHolder.c.host.String())
		case ipAt != int32(i):
			// A table that lists an endpoint twice: its first listing
			// holds the claim and has the entry.
		default:
			out = append(out, vxlan.Peer{IP: k.c.ip, MAC: k.mac, Host: k.c.host})
			delete(d.ignored, k.c)
		}
	}
	return out
}

// ignoreLocked logs, once per claim, that it is ignored.
func (d *Driver) ignoreLocked(c claim, holder string) {
	if d.ignored[c] {
		return
	}
	d.ignored[c] = true
	d.log.Warn("ignoring an endpoint claim: its address or MAC is held by an earlier endpoint in the network",
		"host", c.host, "vni", c.vni, "ip", c.ip, "mac", c.mac.String(), "holder", holder)
}

// addressConflict refuses a local endpoint's address or MAC that a remote
// endpoint of the same network held first, by this host's clock (created
// is the local endpoint's creation, or now for a new one).
func (d *Driver) addressConflict(n *Network, addr netip.Addr, mac net.HardwareAddr, created time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for host, t := range d.remote {
		if rn, ok := findVNI(t, n.VNI); !ok || conflicts(n, rn) != "" {
			continue
		}
		for _, ep := range t.Endpoints {
			if ep.VNI != n.VNI || (ep.IP != addr && !bytes.Equal(ep.MAC, mac)) {
				continue
			}
			c, ok := claimOf(host, ep)
			if !ok {
				continue
			}
			if created.Before(d.seenLocked(c)) {
				continue
			}
			what := "address " + addr.String()
			if ep.IP != addr {
				what = "MAC " + mac.String()
			}
			return fmt.Errorf("%s is already used in network vni %d by an endpoint on host %s; give containers on different hosts distinct addresses (e.g. --ip-range per host)",
				what, n.VNI, host)
		}
	}
	return nil
}
