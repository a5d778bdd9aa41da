//go:build e2e

// Package e2e drives the real Docker engine and the real vxsec managed plugin
// through the docker CLI: the product's acceptance tests. Run them with
// scripts/e2e.sh, which installs what they need, starts an engine when none
// runs, builds the test image and installs the plugin first.
//
// They run as root, change the host's network (they add and remove vxsec
// networks, restart the plugin and, when the harness started it, the engine)
// and clean up what they create.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vxsec/vxsec/internal/testutil"
	"github.com/vxsec/vxsec/vxlan"
)

const (
	pluginName = "vxsec"
	// Docker 20.10 registers a managed plugin's network driver under the
	// plugin's full name: `-d vxsec` fails with "could not resolve driver
	// vxsec in registry"; `-d vxsec:latest` works.
	driverName  = pluginName + ":latest"
	testImage   = "vxsec-busybox:latest"
	cmdTimeout  = 90 * time.Second
	linkPrefix  = vxlan.LinkPrefix
	epPrefix    = vxlan.EndpointLinkPrefix
	aliasNet    = "vxsec:network:"
	aliasEP     = "vxsec:endpoint:"
	autoVNIBase = 1 << 20 // 1048576
	vxlanMaxVNI = 1<<24 - 1
)

// runID makes this run's names unique, so a leftover of an earlier run never
// collides with (or is mistaken for) this one's objects.
var runID = func() string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}()

var nameSeq struct {
	sync.Mutex
	n int
}

// uniqueName returns e2e-<run>-<kind><n>.
func uniqueName(kind string) string {
	nameSeq.Lock()
	defer nameSeq.Unlock()
	nameSeq.n++
	return fmt.Sprintf("e2e-%s-%s%d", runID, kind, nameSeq.n)
}

// run runs a command with a timeout and returns its combined output.
func run(timeout time.Duration, name string, args ...string) (string, error) {
	return runEnv(timeout, nil, name, args...)
}

// runEnv is run with env added to the test's environment.
func runEnv(timeout time.Duration, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("timed out after %s: %w", timeout, err)
	}
	return out.String(), err
}

func docker(args ...string) (string, error) {
	return run(cmdTimeout, "docker", args...)
}

func mustDocker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := docker(args...)
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(out)
}

func mustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := run(cmdTimeout, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(out)
}

// repoRoot is the repository root (tests run in the package directory).
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory: cannot find the repository")
		}
		dir = parent
	}
}

var prereq struct {
	once sync.Once
	err  error
}

// engineMajor is the engine's major version (20 for 20.10, 28 for 28.5).
func engineMajor(t testing.TB) int {
	t.Helper()
	out, err := run(20*time.Second, "docker", "version", "-f", "{{.Server.Version}}")
	if err != nil {
		t.Fatalf("docker version: %v: %s", err, out)
	}
	major, _, _ := strings.Cut(strings.TrimSpace(out), ".")
	n, err := strconv.Atoi(major)
	if err != nil {
		t.Fatalf("engine version %q", out)
	}
	return n
}

// requirePlugin fails the test (never skips it) when the engine, the vxsec
// plugin or the test image is missing.
func requirePlugin(t testing.TB) {
	t.Helper()
	prereq.once.Do(func() {
		if os.Geteuid() != 0 {
			prereq.err = errors.New("the e2e tests must run as root (they inspect and change the host's network)")
			return
		}
		if out, err := run(20*time.Second, "docker", "info", "-f", "{{.ServerVersion}}"); err != nil {
			prereq.err = fmt.Errorf("no Docker engine answers (`docker info`: %v: %s); run scripts/e2e.sh, which starts one", err, strings.TrimSpace(out))
			return
		}
		out, err := docker("plugin", "inspect", "-f", "{{.Enabled}}", pluginName)
		if err != nil {
			prereq.err = fmt.Errorf("the %s plugin is not installed in this Docker engine (`docker plugin inspect %s`: %v: %s); install it with `make plugin` or run scripts/e2e.sh",
				pluginName, pluginName, err, strings.TrimSpace(out))
			return
		}
		if strings.TrimSpace(out) != "true" {
			prereq.err = fmt.Errorf("the %s plugin is installed but disabled; `docker plugin enable %s` (or `make plugin`)", pluginName, pluginName)
			return
		}
		if out, err := docker("image", "inspect", testImage); err != nil {
			prereq.err = fmt.Errorf("the test image %s is missing (%v: %s); build it with scripts/image.sh", testImage, err, strings.TrimSpace(out))
			return
		}
		for _, tool := range []string{"ip", "nft", "nsenter", "ping"} {
			if _, err := exec.LookPath(tool); err != nil {
				prereq.err = fmt.Errorf("host tool %q is missing (%v); scripts/e2e.sh installs it", tool, err)
				return
			}
		}
	})
	if prereq.err != nil {
		t.Fatalf("e2e prerequisite missing: %v", prereq.err)
	}
}

// ---------------------------------------------------------------------------
// Networks and containers.

type network struct {
	Name string
	ID   string
}

// createNetwork creates a vxsec network; it is removed when the test ends
// (after its containers, which are created later and cleaned up first).
func createNetwork(t testing.TB, kind string, args ...string) *network {
	t.Helper()
	name := uniqueName(kind)
	full := append([]string{"network", "create", "-d", driverName}, args...)
	full = append(full, name)
	id := mustDocker(t, full...)
	n := &network{Name: name, ID: id}
	t.Cleanup(func() { removeNetwork(t, n) })
	t.Logf("network %s (%s) created: %s", name, short(id), strings.Join(args, " "))
	return n
}

func removeNetwork(t testing.TB, n *network) {
	t.Helper()
	out, err := docker("network", "rm", n.Name)
	if err != nil && !strings.Contains(out, "not found") && !strings.Contains(out, "No such network") {
		t.Errorf("cleanup: docker network rm %s: %v\n%s", n.Name, err, out)
	}
}

type container struct {
	Name       string
	Net        *network
	IP         string // address on Net
	SandboxKey string // its network namespace
}

// runContainer starts a sleeping container on n (first network, so its
// vxsec interface is eth0); it is removed when the test ends.
func runContainer(t testing.TB, n *network, extra ...string) *container {
	t.Helper()
	return runContainerCmd(t, n, extra, "sleep", "3600")
}

// runContainerCmd is runContainer with the container's command.
func runContainerCmd(t testing.TB, n *network, extra []string, cmd ...string) *container {
	t.Helper()
	name := uniqueName("c")
	args := []string{"run", "-d", "--name", name, "--network", n.Name}
	args = append(args, extra...)
	args = append(args, testImage)
	args = append(args, cmd...)
	t.Cleanup(func() {
		if out, err := docker("rm", "-f", name); err != nil && !strings.Contains(out, "No such container") {
			t.Errorf("cleanup: docker rm -f %s: %v\n%s", name, err, out)
		}
	})
	mustDocker(t, args...)
	c := &container{Name: name, Net: n}
	c.refresh(t)
	return c
}

func (c *container) refresh(t testing.TB) {
	t.Helper()
	out := mustDocker(t, "inspect", "-f", "{{json .NetworkSettings}}", c.Name)
	var ns struct {
		SandboxKey string
		Networks   map[string]struct {
			IPAddress string
			NetworkID string
		}
	}
	if err := json.Unmarshal([]byte(out), &ns); err != nil {
		t.Fatalf("docker inspect %s: %v\n%s", c.Name, err, out)
	}
	ep, ok := ns.Networks[c.Net.Name]
	if !ok || ep.IPAddress == "" {
		t.Fatalf("container %s has no address on network %s: %s", c.Name, c.Net.Name, out)
	}
	c.IP = ep.IPAddress
	c.SandboxKey = ns.SandboxKey
}

func (c *container) exec(args ...string) (string, error) {
	return docker(append([]string{"exec", c.Name}, args...)...)
}

func (c *container) mustExec(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.exec(args...)
	if err != nil {
		t.Fatalf("docker exec %s %s: %v\n%s", c.Name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(out)
}

// nsenter runs a host program (iputils ping, ip) in the container's network
// namespace.
func (c *container) nsenter(timeout time.Duration, args ...string) (string, error) {
	return run(timeout, "nsenter", append([]string{"--net=" + c.SandboxKey}, args...)...)
}

// vxsecIface returns the name of the container's interface that holds its
// address on its vxsec network, and checks that it is eth0.
func (c *container) vxsecIface(t testing.TB) string {
	t.Helper()
	out := c.mustExec(t, "ip", "-o", "-4", "addr", "show")
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && strings.HasPrefix(f[3], c.IP+"/") {
			if f[1] != "eth0" {
				t.Fatalf("container %s: the vxsec address %s is on %s, expected eth0:\n%s", c.Name, c.IP, f[1], out)
			}
			return f[1]
		}
	}
	t.Fatalf("container %s: no interface holds %s:\n%s", c.Name, c.IP, out)
	return ""
}

// ping sends a few busybox pings from c to ip; nil when replies came back.
func (c *container) ping(ip string) (string, error) {
	return c.exec("ping", "-c", "3", "-W", "2", "-w", "6", ip)
}

func mustPing(t testing.TB, from *container, ip, what string) {
	t.Helper()
	out, err := from.ping(ip)
	if err != nil || !strings.Contains(out, "bytes from") {
		t.Fatalf("positive control failed: %s (%s -> %s) should answer: %v\n%s", what, from.Name, ip, err, out)
	}
	t.Logf("reachable as expected: %s (%s -> %s): %s", what, from.Name, ip, firstLineWith(out, "packets transmitted"))
}

// probe is one ping that must fail.
type probe struct {
	what string
	from *container
	ip   string
}

// expectUnreachable runs the probes concurrently (each a few seconds) and
// fails for every one that got a reply.
func expectUnreachable(t testing.TB, probes []probe) {
	t.Helper()
	type res struct {
		out string
		err error
	}
	results := make([]res, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := p.from.exec("ping", "-c", "3", "-W", "1", "-w", "3", p.ip)
			results[i] = res{out, err}
		}()
	}
	wg.Wait()
	for i, p := range probes {
		r := results[i]
		switch {
		case strings.Contains(r.out, "bytes from"):
			t.Errorf("ISOLATION BROKEN: %s: %s -> %s got replies:\n%s", p.what, p.from.Name, p.ip, r.out)
		case r.err == nil:
			t.Errorf("%s: ping %s -> %s exited 0 without replies?\n%s", p.what, p.from.Name, p.ip, r.out)
		case !strings.Contains(r.out, "PING") && !strings.Contains(r.out, "ping:"):
			t.Errorf("%s: ping %s -> %s did not run (%v):\n%s", p.what, p.from.Name, p.ip, r.err, r.out)
		default:
			t.Logf("isolated as expected: %s (%s -> %s): %s", p.what, p.from.Name, p.ip, lastLine(r.out))
		}
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// ---------------------------------------------------------------------------
// The host's kernel state.

type hostLink struct {
	Name     string `json:"ifname"`
	Index    int    `json:"ifindex"`
	Alias    string `json:"ifalias"`
	MTU      int    `json:"mtu"`
	LinkInfo *struct {
		Kind string         `json:"info_kind"`
		Data map[string]any `json:"info_data"`
	} `json:"linkinfo"`
}

func (l hostLink) vni() int {
	if l.LinkInfo == nil || l.LinkInfo.Data == nil {
		return -1
	}
	if v, ok := l.LinkInfo.Data["id"].(float64); ok {
		return int(v)
	}
	return -1
}

func hostLinks(t testing.TB) []hostLink {
	t.Helper()
	out := mustRun(t, "ip", "-d", "-j", "link", "show")
	var links []hostLink
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		t.Fatalf("ip -j link show: %v\n%s", err, out)
	}
	return links
}

// vxsecLinks lists the host's links named vxsec-* or vxe-*, sorted.
func vxsecLinks(t testing.TB) []string {
	t.Helper()
	var names []string
	for _, l := range hostLinks(t) {
		if strings.HasPrefix(l.Name, linkPrefix) || strings.HasPrefix(l.Name, epPrefix) {
			names = append(names, l.Name)
		}
	}
	sort.Strings(names)
	return names
}

// networkLink finds the VXLAN link of a network by its alias.
func networkLink(t testing.TB, n *network) (hostLink, bool) {
	t.Helper()
	for _, l := range hostLinks(t) {
		if l.Alias == aliasNet+n.ID {
			return l, true
		}
	}
	return hostLink{}, false
}

func mustNetworkLink(t testing.TB, n *network) hostLink {
	t.Helper()
	l, ok := networkLink(t, n)
	if !ok {
		t.Fatalf("network %s (%s): no host link with alias %q; vxsec links: %v", n.Name, short(n.ID), aliasNet+n.ID, vxsecLinks(t))
	}
	if l.LinkInfo == nil || l.LinkInfo.Kind != "vxlan" {
		t.Fatalf("network %s: link %s is not a VXLAN device: %+v", n.Name, l.Name, l.LinkInfo)
	}
	if want := fmt.Sprintf("%s%d", linkPrefix, l.vni()); l.Name != want {
		t.Fatalf("network %s: VXLAN link is named %s, want %s (vxsec-<vni>)", n.Name, l.Name, want)
	}
	return l
}

// nftVxsecTables lists "family name" of nftables tables named vxsec.
func nftVxsecTables(t testing.TB) []string {
	t.Helper()
	out := mustRun(t, "nft", "list", "tables")
	var tables []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "table" && f[2] == "vxsec" {
			tables = append(tables, f[1]+" "+f[2])
		}
	}
	sort.Strings(tables)
	return tables
}

// underlay returns the host's default-route interface, its IPv4 address and MTU.
func underlay(t testing.TB) (dev, addr string, mtu int) {
	t.Helper()
	def := mustRun(t, "ip", "-j", "-4", "route", "show", "default")
	var defs []struct {
		Dev string `json:"dev"`
	}
	if err := json.Unmarshal([]byte(def), &defs); err != nil || len(defs) == 0 {
		t.Fatalf("the host has no IPv4 default route (ip -j route show default: %v: %s)", err, def)
	}
	dev = defs[0].Dev
	for _, l := range hostLinks(t) {
		if l.Name == dev {
			mtu = l.MTU
		}
	}
	aout := mustRun(t, "ip", "-j", "-4", "addr", "show", "dev", dev)
	var ifs []struct {
		AddrInfo []struct {
			Local string `json:"local"`
			Scope string `json:"scope"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(aout), &ifs); err != nil {
		t.Fatalf("ip addr show dev %s: %v\n%s", dev, err, aout)
	}
	for _, i := range ifs {
		for _, a := range i.AddrInfo {
			if a.Scope == "global" && addr == "" {
				addr = a.Local
			}
		}
	}
	if addr == "" || mtu == 0 {
		t.Fatalf("default-route interface %s: address %q, MTU %d", dev, addr, mtu)
	}
	return dev, addr, mtu
}

// ---------------------------------------------------------------------------
// The plugin's process and state.

type pluginInfo struct {
	ID       string
	StateDir string // the propagated mount on the host
}

func plugin(t testing.TB) pluginInfo {
	t.Helper()
	id := mustDocker(t, "plugin", "inspect", "-f", "{{.Id}}", pluginName)
	root := mustDocker(t, "info", "-f", "{{.DockerRootDir}}")
	return pluginInfo{ID: id, StateDir: filepath.Join(root, "plugins", id, "propagated-mount")}
}

// pluginPIDs lists the running `/vxsec daemon` processes of the plugin (its
// cgroup names the plugin's id).
func pluginPIDs(t testing.TB, p pluginInfo) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.HasPrefix(cmdline, []byte("/vxsec\x00daemon\x00")) && !bytes.Equal(cmdline, []byte("/vxsec\x00daemon")) {
			continue
		}
		cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if err != nil || !bytes.Contains(cg, []byte(p.ID)) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

func pluginPID(t testing.TB, p pluginInfo) int {
	t.Helper()
	pids := pluginPIDs(t, p)
	if len(pids) != 1 {
		t.Fatalf("expected exactly one `/vxsec daemon` process of plugin %s, found %v", short(p.ID), pids)
	}
	return pids[0]
}

// pluginAnswers asks the plugin process's own socket for Plugin.Activate.
func pluginAnswers(pid int) error {
	sock := fmt.Sprintf("/proc/%d/root/run/docker/plugins/vxsec.sock", pid)
	c := http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}},
	}
	resp, err := c.Post("http://plugin/Plugin.Activate", "application/vnd.docker.plugins.v1.2+json", strings.NewReader("{}"))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct{ Implements []string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("Plugin.Activate: %v", err)
	}
	for _, i := range body.Implements {
		if i == "NetworkDriver" {
			return nil
		}
	}
	return fmt.Errorf("Plugin.Activate answered %v", body.Implements)
}

// waitPluginUp waits for one plugin process other than notPID that answers
// on its socket, and returns its pid.
func waitPluginUp(t testing.TB, p pluginInfo, notPID int, timeout time.Duration) int {
	t.Helper()
	var pid int
	testutil.UntilEvery(t, timeout, pollDocker, "the plugin came back: one process, answering on its socket", func() error {
		pids := pluginPIDs(t, p)
		if len(pids) != 1 || pids[0] == notPID {
			return fmt.Errorf("plugin processes %v; %s", pids, pluginLogHint())
		}
		if err := pluginAnswers(pids[0]); err != nil {
			return fmt.Errorf("pid %d does not answer yet: %v; %s", pids[0], err, pluginLogHint())
		}
		pid = pids[0]
		return nil
	})
	return pid
}

func pluginLogHint() string {
	return "see the plugin's output in the dockerd log (/var/log/vxsec-e2e-dockerd.log for the harness's engine, lines with plugin=<id>)"
}

// stateFiles lists the regular files under the plugin's state directory.
func stateFiles(t testing.TB, p pluginInfo) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(p.StateDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(p.StateDir, path)
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading the plugin's state directory %s: %v", p.StateDir, err)
	}
	return files
}

// vxsecNetworks lists the IDs of all vxsec networks Docker knows.
func vxsecNetworks(t testing.TB) []string {
	t.Helper()
	out := mustDocker(t, "network", "ls", "--no-trunc", "--filter", "driver="+driverName, "--format", "{{.ID}} {{.Name}}")
	var ids []string
	for _, line := range strings.Split(out, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			ids = append(ids, line)
		}
	}
	sort.Strings(ids)
	return ids
}

// pollDocker is how often the tests poll (testutil.UntilEvery) what docker
// commands and the plugin's socket say: each poll starts processes.
const pollDocker = 250 * time.Millisecond

// ---------------------------------------------------------------------------
// A continuous ping (iputils, 20 packets a second) inside a container's
// network namespace.

type pingStream struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startPingStream(t testing.TB, from *container, ip string) *pingStream {
	t.Helper()
	cmd := exec.Command("nsenter", "--net="+from.SandboxKey, "ping", "-n", "-O", "-i", "0.05", "-W", "1", ip)
	out := &syncBuffer{}
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting ping: %v", err)
	}
	s := &pingStream{cmd: cmd, out: out, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return s
}

var (
	reStats = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)
	reReply = regexp.MustCompile(`bytes from .*icmp_seq=(\d+)`)
)

// replies counts the echo replies the ping has printed so far.
func (s *pingStream) replies() int {
	return len(reReply.FindAllStringIndex(s.out.String(), -1))
}

// stop ends the ping (SIGINT, so it prints its statistics) and returns the
// sequence numbers that got no reply. Only the very last request may be in
// flight when ping is interrupted: it is not counted as lost.
func (s *pingStream) stop(t testing.TB) (sent int, lost []int) {
	t.Helper()
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		t.Fatalf("ping did not stop on SIGINT:\n%s", s.out.String())
	}
	out := s.out.String()
	m := reStats.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no statistics in ping's output:\n%s", tail(out, 20))
	}
	sent, _ = strconv.Atoi(m[1])
	got := map[int]bool{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if r := reReply.FindStringSubmatch(sc.Text()); r != nil {
			n, _ := strconv.Atoi(r[1])
			got[n] = true
		}
	}
	for seq := 1; seq < sent; seq++ {
		if !got[seq] {
			lost = append(lost, seq)
		}
	}
	return sent, lost
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
