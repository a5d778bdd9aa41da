package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Underlay is the address range of lab hosts: RFC 2544's benchmarking
// range, which no real network uses.
var Underlay = netip.MustParsePrefix("198.18.0.0/24")

// Underlay6 is the address range of the hosts of an IPv6 lab
// (Config.IPv6): RFC 5180's benchmarking range, IPv6's 198.18.0.0/15.
var Underlay6 = netip.MustParsePrefix("2001:2::/64")

// deadEnd is the hosts' default gateway, which nobody answers for: a
// daemon finds its underlay by the default route, as on a real host, and
// nothing leaves the lab.
var (
	deadEnd  = netip.MustParseAddr("198.18.0.254")
	deadEnd6 = netip.MustParseAddr("2001:2::fe")
)

// maxHosts is how many hosts fit below the dead-end gateway.
const maxHosts = 253

// Config describes a lab.
type Config struct {
	// Bin is the vxsec binary every host runs.
	Bin string
	// Dir holds sockets, state and logs; a temporary one if empty.
	Dir string
	// Env is added to every daemon's environment (VXSEC_...=...).
	Env []string
	// LogLevel is the daemons' --log-level; "debug" if empty, which is
	// what a failing test wants to read. Benchmarks use the default
	// level a real host runs at.
	LogLevel string
	// IPv6 makes the underlay IPv6 only: hosts have addresses of
	// Underlay6, a default route over IPv6, and no IPv4 address.
	IPv6 bool
}

// Lab is a set of hosts on one switch.
type Lab struct {
	cfg  Config
	name string // prefix of every namespace it makes
	sw   string // the switch's namespace

	mu    sync.Mutex
	hosts []*Host
	nodes []*Host // outsiders without a daemon (AddNode)
}

// New makes the switch: a bridge in a namespace of its own, so that the
// machine's own namespace is never touched.
func New(ctx context.Context, cfg Config) (*Lab, error) {
	if cfg.Bin == "" {
		return nil, errors.New("lab: no vxsec binary given")
	}
	if _, err := os.Stat(cfg.Bin); err != nil {
		return nil, fmt.Errorf("lab: vxsec binary: %w", err)
	}
	if err := raiseNeighbourLimits(); err != nil {
		return nil, err
	}
	id := randomHex(3)
	if cfg.Dir == "" {
		dir, err := os.MkdirTemp("", "vxsec-lab-")
		if err != nil {
			return nil, fmt.Errorf("lab: %w", err)
		}
		cfg.Dir = dir
	}
	l := &Lab{cfg: cfg, name: "vxl" + id}
	l.sw = l.name + "-sw"
	if err := run(ctx, "ip", "netns", "add", l.sw); err != nil {
		return nil, err
	}
	for _, args := range [][]string{
		{"-n", l.sw, "link", "add", "br0", "type", "bridge"},
		{"-n", l.sw, "link", "set", "br0", "up"},
		{"-n", l.sw, "link", "set", "lo", "up"},
	} {
		if err := run(ctx, "ip", args...); err != nil {
			l.Close()
			return nil, err
		}
	}
	return l, nil
}

// Name is the lab's unique prefix.
func (l *Lab) Name() string { return l.name }

// Underlay is the range the lab's hosts take their addresses from.
func (l *Lab) Underlay() netip.Prefix {
	if l.cfg.IPv6 {
		return Underlay6
	}
	return Underlay
}

func (l *Lab) gateway() netip.Addr {
	if l.cfg.IPv6 {
		return deadEnd6
	}
	return deadEnd
}

// Dir is where sockets, state and logs live.
func (l *Lab) Dir() string { return l.cfg.Dir }

// Hosts returns the hosts in the order they were added.
func (l *Lab) Hosts() []*Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Host(nil), l.hosts...)
}

// AddHost makes a host namespace wired to the switch, with the next
// underlay address and a default route, and starts no daemon yet.
func (l *Lab) AddHost(ctx context.Context, name string) (*Host, error) {
	l.mu.Lock()
	n := len(l.hosts) + 1
	l.mu.Unlock()
	if n > maxHosts {
		return nil, fmt.Errorf("lab: at most %d hosts", maxHosts)
	}
	addr := l.Underlay().Addr()
	for i := 0; i < n; i++ {
		addr = addr.Next()
	}
	h, err := l.newHost(name, addr)
	if err != nil {
		return nil, err
	}
	if err := l.wire(ctx, h.NS, addr, fmt.Sprintf("p%d", n), true); err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.hosts = append(l.hosts, h)
	l.mu.Unlock()
	return h, nil
}

// newHost is a host of the lab named name, advertising addr, with its
// directory made and no namespace yet.
func (l *Lab) newHost(name string, addr netip.Addr) (*Host, error) {
	h := &Host{
		lab:      l,
		Name:     name,
		NS:       l.name + "-" + name,
		Addr:     addr,
		Socket:   filepath.Join(l.cfg.Dir, name, "vxsec.sock"),
		StateDir: filepath.Join(l.cfg.Dir, name, "state"),
		LogPath:  filepath.Join(l.cfg.Dir, name, "daemon.log"),
		Env:      append([]string(nil), l.cfg.Env...),
	}
	if err := os.MkdirAll(filepath.Join(l.cfg.Dir, name), 0o700); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	return h, nil
}

// wire makes namespace ns a host of the switch: a veth whose switch end is
// port, address addr, and, for a full host, the dead-end default route by
// which a daemon finds its underlay.
func (l *Lab) wire(ctx context.Context, ns string, addr netip.Addr, port string, defaultRoute bool) error {
	steps := [][]string{
		{"netns", "add", ns},
		{"-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", l.sw},
		{"-n", l.sw, "link", "set", port, "master", "br0", "up"},
		addrAdd(ns, netip.PrefixFrom(addr, l.Underlay().Bits()), "eth0")[1:],
		{"-n", ns, "link", "set", "eth0", "up"},
		{"-n", ns, "link", "set", "lo", "up"},
	}
	if defaultRoute {
		steps = append(steps, []string{"-n", ns, "route", "add", "default", "via", l.gateway().String(), "dev", "eth0", "onlink"})
	}
	for _, s := range steps {
		if err := run(ctx, "ip", s...); err != nil {
			return err
		}
	}
	return nil
}

// addrAdd is `ip -n NS addr add PREFIX dev DEV`, with nodad for IPv6: the
// address is usable at once, not after duplicate address detection's
// second or two.
func addrAdd(ns string, p netip.Prefix, dev string) []string {
	args := []string{"ip", "-n", ns, "addr", "add", p.String(), "dev", dev}
	if p.Addr().Is6() {
		args = append(args, "nodad")
	}
	return args
}

// Close stops every daemon and removes every namespace the lab made. The
// kernel objects daemons made inside host namespaces go with them.
func (l *Lab) Close() error {
	var errs []error
	for _, h := range l.Hosts() {
		h.mu.Lock()
		for _, c := range h.containers {
			if err := run(context.Background(), "ip", "netns", "del", c.NS); err != nil {
				errs = append(errs, err)
			}
		}
		h.mu.Unlock()
		h.Kill()
		if err := run(context.Background(), "ip", "netns", "del", h.NS); err != nil {
			errs = append(errs, err)
		}
	}
	l.mu.Lock()
	nodes := l.nodes
	l.mu.Unlock()
	for _, n := range nodes {
		if err := run(context.Background(), "ip", "netns", "del", n.NS); err != nil {
			errs = append(errs, err)
		}
	}
	if err := run(context.Background(), "ip", "netns", "del", l.sw); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// run executes a command, folding its output into the error.
func run(ctx context.Context, name string, args ...string) error {
	_, err := output(ctx, name, args...)
	return err
}

func output(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// waitFor polls cond until it holds or ctx or the timeout ends.
func waitFor(ctx context.Context, timeout time.Duration, cond func() error) error {
	return WaitForEvery(ctx, timeout, pollEvery, cond)
}

// pollEvery is how often waitFor asks.
const pollEvery = 20 * time.Millisecond

// WaitForEvery is WaitFor asking every poll.
func WaitForEvery(ctx context.Context, timeout, poll time.Duration, cond func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s: %w", timeout, err)
		case <-time.After(poll):
		}
	}
}

// startLogged starts cmd with its output appended to logPath, and returns a
// channel closed once it has exited (and the log is closed).
func startLogged(cmd *exec.Cmd, logPath string, perm os.FileMode) (<-chan struct{}, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, perm)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(exited)
	}()
	return exited, nil
}

// neighbourLimits are the neighbour table's garbage-collection thresholds
// (gc_thresh1, 2 and 3) a lab needs. The table is one for every namespace
// of the machine, and its bounds are global: every lab host holds an entry
// for every other, so 40 hosts (1600 entries) overflow Linux's default
// hard bound of 1024 and a host's packets fail with ENOBUFS ("No buffer
// space available") for want of an entry. A real host holds its own
// entries only.
var neighbourLimits = [3]int{1024, 32768, 65536}

// raiseNeighbourLimits raises the machine's neighbour table bounds to
// neighbourLimits where they are lower, and leaves them raised: they are
// only bounds, and a lab running beside another must not lower them under
// it.
func raiseNeighbourLimits() error {
	for _, family := range []string{"ipv4", "ipv6"} {
		for i, want := range neighbourLimits {
			p := fmt.Sprintf("/proc/sys/net/%s/neigh/default/gc_thresh%d", family, i+1)
			raw, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("lab: neighbour table bound: %w", err)
			}
			have, err := strconv.Atoi(strings.TrimSpace(string(raw)))
			if err != nil {
				return fmt.Errorf("lab: %s: %w", p, err)
			}
			if have >= want {
				continue
			}
			if err := os.WriteFile(p, []byte(strconv.Itoa(want)), 0o644); err != nil {
				return fmt.Errorf("lab: raising the neighbour table bound %s to %d: %w", p, want, err)
			}
		}
	}
	return nil
}
