package lab

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vxsec/vxsec/ipsec"
	"github.com/vxsec/vxsec/plugin"
	"github.com/vxsec/vxsec/swarmtrust"
	"github.com/vxsec/vxsec/vxlan"
)

// What a cluster lab needs on top of single-host hosts: the daemons' status
// call, the switch ports (to cut a host off the underlay), the kernel's
// view of remote endpoints, and hosts that are no members at all.

// NewSecret returns a fresh cluster secret (base64 of 32 random bytes), the
// form `vxsec secret` prints and VXSEC_SECRET takes.
func NewSecret() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// ClusterEnv is the environment that makes every host of a lab one cluster:
// the same secret, and the first host's address as the seed (the first host
// joining itself is harmless).
func ClusterEnv(secret string) []string { return ClusterEnvOn(Underlay, secret) }

// ClusterEnvOn is ClusterEnv for a lab whose hosts take addresses of
// underlay (Underlay6 for an IPv6 lab).
func ClusterEnvOn(underlay netip.Prefix, secret string) []string {
	return []string{"VXSEC_SECRET=" + secret, "VXSEC_JOIN=" + underlay.Addr().Next().String()}
}

// Status is the answer of the daemon's VxSec.Status call.
type Status struct {
	Node string
	// Local is the host's own address when it is behind NAT.
	Local    string
	Members  []Member
	Networks []NetworkStatus
	IPsec    *ipsec.Status
	// Trust is the swarm agreement's state (swarm nodes without a secret).
	Trust *swarmtrust.Status
	// Drops counts each lock's drops (firewall.Locks, "xfrm:" counters).
	Drops map[string]uint64
	// Identity is the host identity (VXSEC_IDENTITY_DIR), if any.
	Identity *IdentityStatus
	// Refusals are Docker's last calls that failed.
	Refusals []struct{ Method, Error string }
}

// IdentityStatus is the daemon's host identity: its name, when it ends,
// its mode, and the number of the revocation list it holds.
type IdentityStatus struct {
	Name    string
	Expires time.Time
	Serial  string
	Mode    string
	CRL     uint64
}

// Peer is what st says of its IPsec SAs with the host at addr.
func (st Status) Peer(addr string) (ipsec.PeerStatus, bool) {
	if st.IPsec == nil {
		return ipsec.PeerStatus{}, false
	}
	for _, p := range st.IPsec.Peers {
		if p.Host.String() == addr {
			return p, true
		}
	}
	return ipsec.PeerStatus{}, false
}

// Member is one cluster member as a daemon sees it.
type Member struct {
	Name   string
	Addr   string
	Status string
}

// NetworkStatus counts a network's endpoints on a host: its own (Local) and
// those installed from other hosts (Remote).
type NetworkStatus struct {
	ID     string
	VNI    int
	Local  int
	Remote int
}

// Status asks the host's daemon for its view of the cluster.
func (h *Host) Status(ctx context.Context) (Status, error) {
	var st Status
	err := h.Client().Call(ctx, "VxSec.Status", struct{}{}, &st)
	return st, err
}

// BriefStatus is Status without the firewall's drop counters, which cost
// the daemon a dump of every rule: what a loop waiting for a state asks.
func (h *Host) BriefStatus(ctx context.Context) (Status, error) {
	var st Status
	err := h.Client().Call(ctx, "VxSec.Status", plugin.StatusRequest{Brief: true}, &st)
	return st, err
}

// Alive returns the addresses of the members st reports alive.
func (st Status) Alive() []string {
	var a []string
	for _, m := range st.Members {
		if m.Status == "alive" {
			a = append(a, m.Addr)
		}
	}
	return a
}

// Member returns the member with address addr, if st lists it.
func (st Status) Member(addr string) (Member, bool) {
	for _, m := range st.Members {
		if m.Addr == addr {
			return m, true
		}
	}
	return Member{}, false
}

// Network returns the network with the given VNI, if the host has it.
func (st Status) Network(vni int) (NetworkStatus, bool) {
	for _, n := range st.Networks {
		if n.VNI == vni {
			return n, true
		}
	}
	return NetworkStatus{}, false
}

// Index is the host's number on the switch (its address's last byte).
func (h *Host) Index() int { return int(h.Addr.As16()[15]) }

// Port is the name of the host's port in the switch namespace.
func (h *Host) Port() string { return fmt.Sprintf("p%d", h.Index()) }

// Switch is the namespace of the lab's underlay switch.
func (l *Lab) Switch() string { return l.sw }

// SetUnderlay brings the host's switch port up or down: down, the host is
// cut off from every other host as if its cable were pulled.
func (h *Host) SetUnderlay(ctx context.Context, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return run(ctx, "ip", "-n", h.lab.sw, "link", "set", h.Port(), state)
}

// Pid is the daemon's process id (ip netns exec execs the daemon in place),
// or 0 if it is not running.
func (h *Host) Pid() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd == nil || h.cmd.Process == nil {
		return 0
	}
	return h.cmd.Process.Pid
}

// RSS returns the daemon's resident and peak resident memory in bytes.
func (h *Host) RSS() (rss, hwm int64, err error) {
	pid := h.Pid()
	if pid == 0 {
		return 0, 0, fmt.Errorf("lab: %s: daemon not running", h.Name)
	}
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb * 1024
		case "VmHWM:":
			hwm = kb * 1024
		}
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("lab: no VmRSS for pid %d", pid)
	}
	return rss, hwm, nil
}

// FDBEntry is a static forwarding entry of a network's VXLAN device: frames
// for MAC go to host Dst.
type FDBEntry struct {
	MAC string
	Dst string
}

// FDB lists the entries with a destination on the host's vxsec-<vni>.
func (h *Host) FDB(ctx context.Context, vni int) ([]FDBEntry, error) {
	out, err := h.Exec(ctx, "bridge", "fdb", "show", "dev", vxlan.LinkName(uint32(vni)))
	if err != nil {
		return nil, err
	}
	var es []FDBEntry
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "dst" {
				es = append(es, FDBEntry{MAC: f[0], Dst: f[i+1]})
				break
			}
		}
	}
	return es, nil
}

// NeighEntry is a neighbour entry of a network's VXLAN device (what its
// proxy ARP answers from).
type NeighEntry struct {
	IP    string
	MAC   string
	State string
}

// Neigh lists the neighbour entries of the host's vxsec-<vni>.
func (h *Host) Neigh(ctx context.Context, vni int) ([]NeighEntry, error) {
	out, err := h.Exec(ctx, "ip", "neigh", "show", "dev", vxlan.LinkName(uint32(vni)))
	if err != nil {
		return nil, err
	}
	var es []NeighEntry
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[1] == "lladdr" {
			es = append(es, NeighEntry{IP: f[0], MAC: f[2], State: f[len(f)-1]})
		}
	}
	return es, nil
}

// AddNode makes a namespace on the switch with the given underlay address
// that runs no daemon and is no lab host: an outsider (say, an attacker on
// the underlay) for tests to build things in with Exec.
func (l *Lab) AddNode(ctx context.Context, name string, addr netip.Addr) (*Host, error) {
	if !l.Underlay().Contains(addr) || addr == l.gateway() || addr.As16()[15] == 0 {
		return nil, fmt.Errorf("lab: node address %s is not in %s or is the gateway", addr, l.Underlay())
	}
	h := &Host{lab: l, Name: name, NS: l.name + "-" + name, Addr: addr}
	port := fmt.Sprintf("p%d", addr.As16()[15])
	l.mu.Lock()
	l.nodes = append(l.nodes, h)
	l.mu.Unlock()
	if err := l.wire(ctx, h.NS, addr, port, false); err != nil {
		return nil, err
	}
	return h, nil
}

// WaitFor polls cond every 20 ms until it holds, ctx ends or timeout passes;
// the error is cond's last one.
func WaitFor(ctx context.Context, timeout time.Duration, cond func() error) error {
	return waitFor(ctx, timeout, cond)
}

// Ping runs iputils ping in the host's namespace (for nodes added with
// AddNode, which have no containers) and parses its statistics.
func (h *Host) Ping(ctx context.Context, dst string, args ...string) (PingResult, error) {
	return ping(ctx, h.NS, h.Name, dst, args)
}

// CPUTime returns the CPU time (user + system) the daemon has used so far.
func (h *Host) CPUTime() (time.Duration, error) {
	pid := h.Pid()
	if pid == 0 {
		return 0, fmt.Errorf("lab: %s: daemon not running", h.Name)
	}
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces) start at state.
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0, fmt.Errorf("lab: short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / ticksPerSecond, nil
}
