//go:build swarmlab

package swarm

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vxsec/vxsec/lab"
)

// The lab's layout, inside the VM:
//
//	VM root namespace: bridge sl-br 10.77.0.254/24, docker-registry on 10.77.0.254:5000
//	  |-- sl-e1 10.77.0.1   containerd + dockerd, data root /var/lib/docker/e1/docker
//	  |-- sl-e2 10.77.0.2   ...
//	  |-- sl-e3 10.77.0.3   ...
//	  `-- sl-out 10.77.0.9  the outsider: two `vxsec daemon`s, no certificate of this swarm
const (
	nodeCount  = 3
	netPrefix  = "10.77.0"
	bridge     = "sl-br"
	regAddr    = netPrefix + ".254:5000"
	pluginRef  = regAddr + "/vxsec:lab"
	pluginRef2 = regAddr + "/vxsec:lab-upgrade"
	imageRef   = regAddr + "/busybox:lab"
	subnet     = "10.99.0.0/24"
	subnet2    = "10.98.0.0/24"
	outNS      = "sl-out"
	outIP      = netPrefix + ".9"
	libDir     = "/var/lib/docker" // a tmpfs in the kernel lab
	// webCmd is the tasks' command: busybox httpd serving the hostname.
	webCmd = `mkdir -p /tmp/www && hostname >/tmp/www/index.html && httpd -p 80 -h /tmp/www && exec sleep 86400`
)

// swarmLab is one lab: its engines and what the phases leave for the next.
type swarmLab struct {
	ctx   context.Context
	vxsec string // the plugin's binary: its CLI, and the outsiders' daemon
	v1    string // the plugin's version string, and the upgrade's
	v2    string

	e   [nodeCount + 1]*lab.Engine // e[1..3]: sl-e1..sl-e3
	reg *lab.Registry

	phases map[string]phaseState
	prereq bool // a phase runs as another's prerequisite: checks are steps

	push        *pusher
	installedAt time.Time
	secretID    string
	status      map[int][]byte // each node's last vxsec status, as sent
	statusMu    sync.Mutex
	out         *outsiders
	refused0    int
	rotatedAt   time.Time
	removed     int
	web, rr, fo map[int]lab.Task
}

func newSwarmLab(t *testing.T) *swarmLab {
	t.Helper()
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(env.art, name))
		if err != nil {
			t.Fatalf("the host-built artifacts: %v", err)
		}
		return strings.TrimSpace(string(b))
	}
	l := &swarmLab{
		ctx:    rootCx,
		vxsec:  filepath.Join(env.art, "plugin-v1", "rootfs", "vxsec"),
		v1:     read("version-v1"),
		v2:     read("version-v2"),
		phases: map[string]phaseState{},
		status: map[int][]byte{},
	}
	t.Cleanup(func() { l.finish(t) })
	return l
}

// all is the node indexes 1..3.
func all() []int {
	n := make([]int, nodeCount)
	for i := range n {
		n[i] = i + 1
	}
	return n
}

func addr(i int) string { return fmt.Sprintf("%s.%d", netPrefix, i) }

// ---------------------------------------------------------------------------
// Phases and checks
// ---------------------------------------------------------------------------

type phaseState int

const (
	notRun phaseState = iota
	aborted
	completed
)

type phaseDef struct {
	name string
	// needs are the phases whose state this one starts from: run first
	// when not run yet (a phase selected alone).
	needs []string
	// critical: nothing that needs this phase can run if it aborted.
	critical bool
	run      func(*swarmLab, testing.TB)
}

// phase runs p as a subtest of t (the phases it needs, when not run yet,
// first, as steps of that subtest).
func (l *swarmLab) phase(t *testing.T, p phaseDef) {
	t.Run(p.name, func(t *testing.T) {
		for _, n := range p.needs {
			l.need(t, n)
		}
		l.do(t, p)
	})
}

func (l *swarmLab) need(t testing.TB, name string) {
	t.Helper()
	p, ok := phaseNamed(name)
	if !ok {
		t.Fatalf("no phase %q", name)
	}
	switch l.phases[name] {
	case completed:
		return
	case aborted:
		if p.critical {
			t.Fatalf("needs phase %s, which was aborted", name)
		}
		return
	}
	for _, n := range p.needs {
		l.need(t, n)
	}
	t.Logf("phase %s has not run: it runs first, as a prerequisite (its checks are steps of this test)", name)
	prev := l.prereq
	l.prereq = true
	defer func() { l.prereq = prev }()
	l.do(t, p)
}

func (l *swarmLab) do(t testing.TB, p phaseDef) {
	t.Helper()
	if err := l.ctx.Err(); err != nil {
		t.Fatalf("the lab ran out of time (SWARM_LAB_DEADLINE=%v) before phase %s", env.deadline, p.name)
	}
	l.phases[p.name] = aborted
	start := time.Now()
	defer func() {
		if l.phases[p.name] != completed {
			t.Logf("phase %s ABORTED after %.1f s: a step the rest of it needs failed", p.name, time.Since(start).Seconds())
			if l.ctx.Err() != nil {
				t.Errorf("the lab ran out of time (SWARM_LAB_DEADLINE=%v) in phase %s", env.deadline, p.name)
			}
		}
	}()
	p.run(l, t)
	l.phases[p.name] = completed
	t.Logf("phase %s completed in %.1f s", p.name, time.Since(start).Seconds())
}

// check runs one named check: a subtest of the phase's test, or a step of
// the running test when the phase runs as a prerequisite. It reports
// whether the check passed.
func (l *swarmLab) check(t testing.TB, id string, f func(t testing.TB)) bool {
	t.Helper()
	if tt, ok := t.(*testing.T); ok && !l.prereq {
		return tt.Run(id, func(t *testing.T) { f(t) })
	}
	s := &stepT{TB: t, id: id}
	f(s)
	return !s.failed
}

// must is check, aborting the phase if the check failed.
func (l *swarmLab) must(t testing.TB, id string, f func(t testing.TB)) {
	t.Helper()
	if !l.check(t, id, f) {
		t.Fatalf("check %s failed: the rest of the phase needs it", id)
	}
}

// checkErr is a check that passes when err is nil: what it checked (ok)
// is logged, or the error is reported.
func (l *swarmLab) checkErr(t testing.TB, id string, err error, ok string) bool {
	t.Helper()
	return l.check(t, id, func(t testing.TB) {
		t.Helper()
		if err != nil {
			t.Errorf("%s: %v", ok, err)
			return
		}
		t.Logf("ok: %s", ok)
	})
}

// stepT is a check run as a step of another test: its failures are the
// test's, its messages carry its ID, and it knows whether it failed.
type stepT struct {
	testing.TB
	id     string
	failed bool
}

func (s *stepT) Error(args ...any) {
	s.TB.Helper()
	s.failed = true
	s.TB.Error(append([]any{"[" + s.id + "]"}, args...)...)
}

func (s *stepT) Errorf(f string, args ...any) {
	s.TB.Helper()
	s.failed = true
	s.TB.Errorf("["+s.id+"] "+f, args...)
}

func (s *stepT) Fatal(args ...any) {
	s.TB.Helper()
	s.failed = true
	s.TB.Fatal(append([]any{"[" + s.id + "]"}, args...)...)
}

func (s *stepT) Fatalf(f string, args ...any) {
	s.TB.Helper()
	s.failed = true
	s.TB.Fatalf("["+s.id+"] "+f, args...)
}

func (s *stepT) Fail() {
	s.failed = true
	s.TB.Fail()
}

func (s *stepT) FailNow() {
	s.failed = true
	s.TB.FailNow()
}

func (s *stepT) Failed() bool { return s.failed }

func (s *stepT) Log(args ...any) {
	s.TB.Helper()
	s.TB.Log(append([]any{"[" + s.id + "]"}, args...)...)
}

func (s *stepT) Logf(f string, args ...any) {
	s.TB.Helper()
	s.TB.Logf("["+s.id+"] "+f, args...)
}

// ---------------------------------------------------------------------------
// Waiting, parallel work
// ---------------------------------------------------------------------------

// poll runs cond every `every` until it returns nil or max has passed (or
// the lab's deadline came); it returns how long it took and cond's last
// error.
func (l *swarmLab) poll(max, every time.Duration, cond func() error) (time.Duration, error) {
	start := time.Now()
	for {
		err := cond()
		if err == nil {
			return time.Since(start), nil
		}
		if time.Since(start) > max {
			return time.Since(start), fmt.Errorf("after %.0f s: %w", max.Seconds(), err)
		}
		select {
		case <-l.ctx.Done():
			return time.Since(start), fmt.Errorf("the lab's deadline came: %w", err)
		case <-time.After(every):
		}
	}
}

// parallel runs f for each item at once and returns their errors in order.
func parallel[T any](items []T, f func(T) error) []error {
	errs := make([]error, len(items))
	var wg sync.WaitGroup
	for i, it := range items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(it)
		}()
	}
	wg.Wait()
	return errs
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

func since(t time.Time) string { return secs(time.Since(t)) }

// ---------------------------------------------------------------------------
// vxsec's own view
// ---------------------------------------------------------------------------

// vstatus is node i's plugin's status (kept, as sent, for the logs).
func (l *swarmLab) vstatus(i int) (lab.Status, error) {
	st, raw, err := l.e[i].VxsecStatus(l.ctx, pluginRef)
	l.statusMu.Lock()
	if err != nil {
		l.status[i] = []byte(fmt.Sprintf("{\"error\": %q}\n", err.Error()))
	} else {
		l.status[i] = raw
	}
	l.statusMu.Unlock()
	return st, err
}

func addrsOf(nodes []int) []string {
	var a []string
	for _, i := range nodes {
		a = append(a, addr(i))
	}
	sort.Strings(a)
	return a
}

// clusterOK: every node's plugin lists exactly those nodes as alive
// members, and all report the same, non-empty Trust.secret_id (returned).
// The error gives every node's view.
// waitCluster waits (up to 3 min) until every node's vxsec cluster lists
// all nodes alive with one secret, and returns that secret's ID.
func (l *swarmLab) waitCluster() (string, error) {
	var id string
	_, err := l.poll(180*time.Second, 2*time.Second, func() (err error) {
		id, err = l.clusterOK(all()...)
		return err
	})
	return id, err
}

func (l *swarmLab) clusterOK(nodes ...int) (string, error) {
	want := strings.Join(addrsOf(nodes), ",")
	first := ""
	var views []string
	ok := true
	for _, i := range nodes {
		st, err := l.vstatus(i)
		if err != nil {
			views = append(views, fmt.Sprintf("sl-e%d: no answer from vxsec status (%v)", i, err))
			ok = false
			continue
		}
		alive := st.Alive()
		sort.Strings(alive)
		id, terr := "", ""
		if st.Trust != nil {
			id, terr = st.Trust.SecretID, st.Trust.Err
		}
		views = append(views, fmt.Sprintf("sl-e%d: members [%s] secret_id %q trust error %q", i, strings.Join(alive, ","), id, terr))
		if strings.Join(alive, ",") != want || id == "" || (first != "" && id != first) {
			ok = false
		}
		if first == "" {
			first = id
		}
	}
	if !ok {
		return "", fmt.Errorf("vxsec cluster: want members [%s] and one secret_id on every node; saw %s", want, strings.Join(views, "; "))
	}
	return first, nil
}

// hasWord: s holds w as a word (grep -w).
func hasWord(s, w string) bool {
	return regexp.MustCompile(`(^|[^\w])` + regexp.QuoteMeta(w) + `([^\w]|$)`).MatchString(s)
}

// countLines counts the lines of s that start with prefix.
func countLines(s, prefix string) int {
	n := 0
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, prefix) {
			n++
		}
	}
	return n
}

// xfrm is node i's xfrm states and policies, as `ip xfrm` prints them.
func (l *swarmLab) xfrm(i int) (states, policies string) {
	states, _ = l.e[i].Exec(l.ctx, "ip", "xfrm", "state")
	policies, _ = l.e[i].Exec(l.ctx, "ip", "xfrm", "policy")
	return
}

// leftovers is what of vxsec is in node i's namespace (nothing when
// clean): devices vxsec-<vni> and vxe-<endpoint> (vxlan/datapath.go), xfrm
// states and policies, nftables tables named vxsec (firewall/firewall.go).
func (l *swarmLab) leftovers(i int) []string {
	var left []string
	links, err := l.e[i].Exec(l.ctx, "ip", "-o", "link", "show")
	if err != nil {
		left = append(left, "ip link: "+err.Error())
	}
	for _, line := range strings.Split(links, "\n") {
		f := strings.SplitN(line, ": ", 3)
		if len(f) > 1 {
			name := strings.SplitN(f[1], "@", 2)[0]
			if strings.HasPrefix(name, "vxsec-") || strings.HasPrefix(name, "vxe-") {
				left = append(left, "device "+name)
			}
		}
	}
	states, policies := l.xfrm(i)
	for _, line := range strings.Split(states, "\n") {
		if strings.HasPrefix(line, "src") {
			left = append(left, "xfrm state "+line)
		}
	}
	for _, line := range strings.Split(policies, "\n") {
		if strings.HasPrefix(line, "src") {
			left = append(left, "xfrm policy "+line)
		}
	}
	tables, _ := l.e[i].Exec(l.ctx, "nft", "list", "tables")
	for _, line := range strings.Split(tables, "\n") {
		if hasWord(line, "vxsec") {
			left = append(left, line)
		}
	}
	return left
}

// leader is the index of the swarm's leader, as the first manager that
// answers sees it.
func (l *swarmLab) leader(from ...int) (int, error) {
	var last error
	for _, m := range from {
		if l.e[m] == nil {
			continue
		}
		h, err := l.e[m].Leader(l.ctx)
		if err == nil {
			var n int
			if _, err := fmt.Sscanf(h, "sl-e%d", &n); err == nil && n >= 1 && n <= nodeCount {
				return n, nil
			}
			err = fmt.Errorf("leader %q is no lab node", h)
		}
		last = err
	}
	return 0, fmt.Errorf("no leader: %v", last)
}

// ---------------------------------------------------------------------------
// The underlay, the engines
// ---------------------------------------------------------------------------

func run(ctx context.Context, args ...string) error {
	_, err := runOut(ctx, args...)
	return err
}

func runOut(ctx context.Context, args ...string) (string, error) {
	return lab.Command(ctx, args...)
}

// underlay builds the bridge and a namespace per node on it, each with a
// default route: dockerd (swarm) and vxsec take their advertise address
// from the default-route interface.
func (l *swarmLab) underlay() error {
	ctx := l.ctx
	for _, c := range [][]string{
		// IPv4 forwarding on in the VM's own namespace, as on a host
		// running Docker (dockerd turns it on in its namespace, which on
		// a host is the first one). A new namespace copies its IPv4
		// settings from the first namespace (net.core.
		// devconf_inherit_init_net=0), not from the one that made it:
		// without this every lb_ namespace our engines make inherits
		// forwarding off, and overlay's VIP load balancer drops every
		// reply it un-SNATs back to the client (the SYN-ACKs arrive in
		// lb_, IpInAddrErrors grows, the client sees none; the IPVS
		// connections sit in SYN_RECV): no VIP connection ever completes.
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"ip", "link", "add", bridge, "type", "bridge"},
		{"ip", "addr", "add", netPrefix + ".254/24", "dev", bridge},
		{"ip", "link", "set", bridge, "up"},
	} {
		if err := run(ctx, c...); err != nil {
			return err
		}
	}
	for _, i := range all() {
		if err := l.wire(fmt.Sprintf("sl-e%d", i), fmt.Sprintf("sl-v%d", i), addr(i)); err != nil {
			return err
		}
	}
	return nil
}

// wire makes namespace ns with a veth (host end port) on the bridge.
func (l *swarmLab) wire(ns, port, ip string) error {
	ctx := l.ctx
	for _, c := range [][]string{
		{"ip", "netns", "add", ns},
		{"ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"ip", "link", "set", port, "master", bridge, "up"},
		{"ip", "-n", ns, "addr", "add", ip + "/24", "dev", "eth0"},
		{"ip", "-n", ns, "link", "set", "lo", "up"},
		{"ip", "-n", ns, "link", "set", "eth0", "up"},
		{"ip", "-n", ns, "route", "add", "default", "via", netPrefix + ".254"},
	} {
		if err := run(ctx, c...); err != nil {
			return err
		}
	}
	return nil
}

func (l *swarmLab) newEngines() error {
	for _, i := range all() {
		e, err := lab.NewEngine(lab.EngineConfig{
			Name:               fmt.Sprintf("sl-e%d", i),
			Addr:               netip.MustParseAddr(addr(i)),
			RunDir:             filepath.Join(env.run, fmt.Sprintf("e%d", i)),
			DataRoot:           filepath.Join(libDir, fmt.Sprintf("e%d", i), "docker"),
			ContainerdRoot:     filepath.Join(libDir, fmt.Sprintf("e%d", i), "containerd"),
			InsecureRegistries: []string{regAddr},
		})
		if err != nil {
			return err
		}
		l.e[i] = e
	}
	return nil
}

// ---------------------------------------------------------------------------
// The end: logs
// ---------------------------------------------------------------------------

// finish collects the logs (after SWARM_LAB_HOLD): per engine its dockerd
// and containerd logs, daemon.json, kernel state and vxsec status; the
// registry's and the pusher's logs. It runs even after the deadline.
func (l *swarmLab) finish(t *testing.T) {
	if env.hold > 0 {
		t.Logf("holding %v (SWARM_LAB_HOLD)", env.hold)
		time.Sleep(env.hold)
	}
	t.Logf("collecting logs into %s", env.logs)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l.ctx = ctx // the lab's own context may have ended
	if l.out != nil {
		l.out.stop(l)
	}
	for _, i := range all() {
		e := l.e[i]
		if e == nil {
			continue
		}
		dir := filepath.Join(env.logs, fmt.Sprintf("e%d", i))
		os.MkdirAll(dir, 0o755)
		for _, f := range []string{e.LogPath(), e.ContainerdLogPath(), e.DaemonJSON()} {
			copyFile(f, filepath.Join(dir, filepath.Base(f)))
		}
		var ks strings.Builder
		for _, c := range [][]string{
			{"ip", "-d", "link"}, {"ip", "xfrm", "state"}, {"ip", "xfrm", "policy"},
			{"nft", "list", "tables"}, {"bridge", "fdb", "show"},
		} {
			out, err := e.Exec(ctx, c...)
			fmt.Fprintf(&ks, "### %s\n%s", strings.Join(c, " "), out)
			if err != nil {
				fmt.Fprintf(&ks, "(%v)\n", err)
			}
		}
		os.WriteFile(filepath.Join(dir, "kernel-state.txt"), []byte(ks.String()), 0o644)
		if e.Running() {
			l.vstatus(i)
		}
		l.statusMu.Lock()
		os.WriteFile(filepath.Join(dir, "vxsec-status.json"), l.status[i], 0o644)
		l.statusMu.Unlock()
	}
	if l.reg != nil {
		copyFile(l.reg.LogPath(), filepath.Join(env.logs, "registry.log"))
	}
	if l.push != nil {
		os.WriteFile(filepath.Join(env.logs, "push.log"), []byte(l.push.logText()), 0o644)
	}
}

func copyFile(from, to string) {
	if b, err := os.ReadFile(from); err == nil {
		os.WriteFile(to, b, 0o644)
	}
}
