package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/docker/docker/client"
)

// Engine is one Docker engine of a lab: its own containerd and dockerd in a
// network namespace (and a UTS namespace of their own, whose hostname is the
// swarm node's name), with a data root, an exec root and a socket of their
// own, and a Docker API client on that socket. Everything that queries or
// drives the engine goes through Client (the Docker Go client, with API
// version negotiation: Docker 20.10's API 1.41 as well as newer engines);
// only the processes themselves are started with os/exec. Modelled on moby's
// testutil/daemon (Daemon, and its swarm helpers).
//
// The engine's processes run in sessions of their own (setsid): a test that
// stops leaves them to whoever collects the logs.
type Engine struct {
	EngineConfig
	// Client is the engine's API client (unix socket, negotiated version).
	Client *client.Client

	mu     sync.Mutex
	proc   *os.Process     // dockerd (the starter execs into it)
	exited <-chan struct{} // closed when proc has exited
}

// EngineConfig places an engine.
type EngineConfig struct {
	// Name is the network namespace the engine runs in (which must exist),
	// its hostname and so its swarm node name.
	Name string
	// Addr is its underlay address (the swarm's advertise address).
	Addr netip.Addr
	// RunDir holds the sockets, pid files, configuration and logs.
	RunDir string
	// DataRoot is dockerd's --data-root; ContainerdRoot containerd's root.
	DataRoot, ContainerdRoot string
	// InsecureRegistries go to daemon.json (a lab registry over HTTP).
	InsecureRegistries []string
	// CallTimeout bounds each call the helpers make (240 s if zero), as
	// the lab's CLI calls were.
	CallTimeout time.Duration
}

// NewEngine makes an engine's client and directories; Start starts it.
func NewEngine(cfg EngineConfig) (*Engine, error) {
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = 240 * time.Second
	}
	for _, d := range []string{cfg.RunDir, cfg.DataRoot, cfg.ContainerdRoot} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("lab: engine %s: %w", cfg.Name, err)
		}
	}
	e := &Engine{EngineConfig: cfg}
	c, err := client.NewClientWithOpts(client.WithHost("unix://"+e.Socket()), client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("lab: engine %s: client: %w", cfg.Name, err)
	}
	e.Client = c
	return e, nil
}

// Socket is dockerd's API socket.
func (e *Engine) Socket() string { return filepath.Join(e.RunDir, "docker.sock") }

// ContainerdSocket is the socket of the engine's own containerd.
func (e *Engine) ContainerdSocket() string { return filepath.Join(e.RunDir, "containerd.sock") }

// LogPath is dockerd's log (which also carries its managed plugins' output).
func (e *Engine) LogPath() string { return filepath.Join(e.RunDir, "dockerd.log") }

// ContainerdLogPath is containerd's log.
func (e *Engine) ContainerdLogPath() string { return filepath.Join(e.RunDir, "containerd.log") }

// DaemonJSON is the path of dockerd's configuration file.
func (e *Engine) DaemonJSON() string { return filepath.Join(e.RunDir, "daemon.json") }

// SwarmDir is the engine's swarm directory (certificates, state.json).
func (e *Engine) SwarmDir() string { return filepath.Join(e.DataRoot, "swarm") }

// call is a context for one call of a helper.
func (e *Engine) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, e.CallTimeout)
}

// WriteDaemonJSON writes dockerd's configuration: live-restore as given
// (Docker refuses it on a swarm node), the insecure registries, log level
// info. It takes effect at the next start.
func (e *Engine) WriteDaemonJSON(liveRestore bool) error {
	cfg := map[string]any{
		"live-restore":        liveRestore,
		"insecure-registries": append([]string{}, e.InsecureRegistries...),
		"log-level":           "info",
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(e.DaemonJSON(), append(b, '\n'), 0o644)
}

func (e *Engine) dockerdArgs() []string {
	return []string{"--containerd", e.ContainerdSocket(), "--data-root", e.DataRoot,
		"--exec-root", filepath.Join(e.RunDir, "docker"), "--pidfile", filepath.Join(e.RunDir, "dockerd.pid"),
		"-H", "unix://" + e.Socket(), "--config-file", e.DaemonJSON()}
}

// Start starts containerd, then dockerd, in the engine's network namespace,
// in one mount namespace (`ip netns exec` makes one, with the namespace's
// /sys; dockerd's overlay2 mounts must be visible to its containerd) and a
// UTS namespace with the engine's name as hostname. It returns at once:
// Wait waits for the API.
func (e *Engine) Start() error {
	toml := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = ""
`, e.ContainerdRoot, filepath.Join(e.RunDir, "containerd"), e.ContainerdSocket(), e.ContainerdSocket()+".ttrpc")
	if err := os.WriteFile(filepath.Join(e.RunDir, "containerd.toml"), []byte(toml), 0o644); err != nil {
		return fmt.Errorf("lab: engine %s: %w", e.Name, err)
	}
	if _, err := os.Stat(e.DaemonJSON()); err != nil {
		if err := e.WriteDaemonJSON(false); err != nil {
			return fmt.Errorf("lab: engine %s: %w", e.Name, err)
		}
	}
	// After a kill, stale sockets would pass for a running containerd.
	for _, f := range []string{"dockerd.pid", "containerd.pid", "containerd.sock", "containerd.sock.ttrpc", "docker.sock"} {
		os.Remove(filepath.Join(e.RunDir, f))
	}
	// `ip netns exec` mounts the namespace's own sysfs on /sys, which
	// hides the cgroup2 mount under it: mount it again ("Devices cgroup
	// isn't mounted" otherwise).
	// A plugin with a propagated mount runs with its root's propagation
	// rshared, and runc refuses to pivot_root into it unless the data
	// root is a shared mount ("pivot_root .: invalid argument"): Docker
	// 20.10 made it one itself, Docker 28 leaves it to the host.
	script := fmt.Sprintf(`hostname %[1]s
mount -t cgroup2 -o nsdelegate none /sys/fs/cgroup 2>/dev/null || mount -t cgroup2 none /sys/fs/cgroup
mkdir -p %[6]q
mountpoint -q %[6]q || mount --bind %[6]q %[6]q
mount --make-shared %[6]q
containerd --config %[2]q >>%[3]q 2>&1 &
echo $! >%[4]q
n=0
until [ -S %[5]q ]; do
	sleep 0.2; n=$((n + 1))
	[ $n -lt 900 ] || { echo 'containerd did not start' >&2; exit 1; }
done
exec dockerd "$@"`, e.Name, filepath.Join(e.RunDir, "containerd.toml"), e.ContainerdLogPath(),
		filepath.Join(e.RunDir, "containerd.pid"), e.ContainerdSocket(), e.DataRoot)
	args := append([]string{"netns", "exec", e.Name, "unshare", "--uts", "sh", "-c", script, "sh"}, e.dockerdArgs()...)
	return e.startProc(exec.Command("ip", args...))
}

// StartDockerd starts dockerd alone, in the namespaces of the engine's
// running containerd: a restart of the engine with containerd staying up.
func (e *Engine) StartDockerd() error {
	pid, err := e.ContainerdPid()
	if err != nil || !pidAlive(pid) {
		return fmt.Errorf("lab: engine %s: no running containerd to start dockerd beside (%v)", e.Name, err)
	}
	os.Remove(filepath.Join(e.RunDir, "dockerd.pid"))
	args := append([]string{"-t", strconv.Itoa(pid), "-m", "-u", "-n", "--", "dockerd"}, e.dockerdArgs()...)
	return e.startProc(exec.Command("nsenter", args...))
}

func (e *Engine) startProc(cmd *exec.Cmd) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.proc != nil && pidAlive(e.proc.Pid) {
		return fmt.Errorf("lab: engine %s: dockerd already running (pid %d)", e.Name, e.proc.Pid)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	exited, err := startLogged(cmd, e.LogPath(), 0o644)
	if err != nil {
		return fmt.Errorf("lab: engine %s: starting: %w", e.Name, err)
	}
	e.proc, e.exited = cmd.Process, exited
	return nil
}

// Pid is dockerd's pid (0 if never started).
func (e *Engine) Pid() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.proc == nil {
		return 0
	}
	return e.proc.Pid
}

// Exited is closed once the dockerd last started has exited.
func (e *Engine) Exited() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.exited == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return e.exited
}

// Running reports whether the dockerd last started still runs.
func (e *Engine) Running() bool {
	select {
	case <-e.Exited():
		return false
	default:
		return true
	}
}

// ContainerdPid is the pid of the engine's containerd.
func (e *Engine) ContainerdPid() (int, error) {
	b, err := os.ReadFile(filepath.Join(e.RunDir, "containerd.pid"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// ContainerdRunning reports whether the engine's containerd runs.
func (e *Engine) ContainerdRunning() bool {
	pid, err := e.ContainerdPid()
	return err == nil && pidAlive(pid)
}

// Up reports whether the engine answers its API's ping (within 10 s).
func (e *Engine) Up(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := e.Client.Ping(ctx)
	return err == nil
}

// Wait waits until the engine answers, or fails with its logs' tails when
// dockerd exits or the timeout runs out.
func (e *Engine) Wait(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	exited := e.Exited()
	for {
		if e.Up(ctx) {
			return nil
		}
		why := ""
		select {
		case <-exited:
			why = "dockerd exited"
		case <-ctx.Done():
			why = fmt.Sprintf("no answer after %v", timeout)
		case <-time.After(500 * time.Millisecond):
			continue
		}
		return fmt.Errorf("lab: engine %s: %s; dockerd.log ends:\n%s\ncontainerd.log ends:\n%s",
			e.Name, why, tail(e.LogPath(), 12), tail(e.ContainerdLogPath(), 12))
	}
}

// StopDockerd sends dockerd SIGTERM and waits (at most 120 s) until it is
// gone.
func (e *Engine) StopDockerd() error {
	e.mu.Lock()
	p, exited := e.proc, e.exited
	e.mu.Unlock()
	if p == nil {
		return nil
	}
	p.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		return nil
	case <-time.After(120 * time.Second):
		return fmt.Errorf("lab: engine %s: dockerd (pid %d) still runs 120 s after SIGTERM", e.Name, p.Pid)
	}
}

// Kill sends SIGKILL to everything of the engine, as a crash of the node's
// Docker would: dockerd, containerd, the shims and what they run (managed
// plugins, tasks). The namespace and its kernel state stay. It returns the
// pids it killed, once they are gone (or 30 s passed for each).
func (e *Engine) Kill() ([]int, error) {
	var pids []int
	if p := e.Pid(); p > 0 {
		pids = append(pids, p)
	}
	if p, err := e.ContainerdPid(); err == nil {
		pids = append(pids, p)
	}
	shims := procsWithArg("-address", e.ContainerdSocket())
	for _, s := range shims {
		pids = append(pids, s)
		pids = append(pids, childrenOf(s)...)
	}
	for _, p := range pids {
		syscall.Kill(p, syscall.SIGKILL)
	}
	var alive []string
	for _, p := range pids {
		deadline := time.Now().Add(30 * time.Second)
		for pidAlive(p) && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		if pidAlive(p) {
			alive = append(alive, strconv.Itoa(p))
		}
	}
	if len(alive) > 0 {
		return pids, fmt.Errorf("lab: engine %s: pids %s still alive after SIGKILL", e.Name, strings.Join(alive, ","))
	}
	return pids, nil
}

// Exec runs a command in the engine's network namespace (iproute2, nft,
// bridge: the node's kernel state).
func (e *Engine) Exec(ctx context.Context, args ...string) (string, error) {
	return output(ctx, "ip", append([]string{"netns", "exec", e.Name}, args...)...)
}

// pidAlive: the process exists and is no zombie.
func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

// procsWithArg lists the processes whose command line holds flag followed
// by value (containerd's shims: `-address <socket>`).
func procsWithArg(flag, value string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
		for i := 0; i+1 < len(args); i++ {
			if args[i] == flag && args[i+1] == value {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// childrenOf lists the direct children of pid.
func childrenOf(pid int) []int {
	var kids []int
	ents, _ := os.ReadDir("/proc")
	for _, d := range ents {
		p, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			kids = append(kids, p)
		}
	}
	return kids
}

// tail is the last n lines of a file.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// LogSince is what dockerd's log gained after offset (a size from LogSize).
func (e *Engine) LogSince(offset int64) (string, error) {
	f, err := os.Open(e.LogPath())
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := f.Seek(offset, 0); err != nil {
		return "", err
	}
	var b bytes.Buffer
	_, err = b.ReadFrom(f)
	return b.String(), err
}

// LogSize is the size of dockerd's log now.
func (e *Engine) LogSize() int64 {
	st, err := os.Stat(e.LogPath())
	if err != nil {
		return 0
	}
	return st.Size()
}

// errNotFound is what the helpers return for an object that is not there.
var errNotFound = errors.New("not found")

// Command runs a program (args[0]) to its end and returns its output,
// stdout and stderr together; a failure's error carries the output.
func Command(ctx context.Context, args ...string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("lab: no command")
	}
	return output(ctx, args[0], args[1:]...)
}
