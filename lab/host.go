package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/vxsec/vxsec/plugin"
)

// Host is one lab host: a namespace with an underlay address, running a
// vxsec daemon, and the containers attached through it.
type Host struct {
	lab  *Lab
	Name string
	NS   string
	// Addr is the address the host advertises: its own, or its NAT's.
	Addr netip.Addr
	// NAT is the router in front of a host made by AddHostBehindNAT.
	NAT      *NAT
	Socket   string
	StateDir string
	LogPath  string
	// Env is added to the daemon's environment at its next start.
	Env []string
	// Bin is the vxsec binary the host runs from its next start; empty,
	// the lab's (Config.Bin). A test gives one host a test build.
	Bin string

	mu         sync.Mutex
	cmd        *exec.Cmd
	exited     <-chan struct{}
	containers map[string]*Container
	client     *plugin.Client
}

// Client is a remote API client of the host's daemon, standing in for
// dockerd. It is one per host, as dockerd has one per plugin: a client per
// call would leave a kept-alive connection behind each time, and a
// benchmark polling 50 hosts runs out of file descriptors.
func (h *Host) Client() *plugin.Client {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.client == nil {
		h.client = plugin.NewClient(h.Socket)
	}
	return h.client
}

// Start runs the daemon in the host's namespace and waits until it answers
// the remote API handshake.
func (h *Host) Start(ctx context.Context) error {
	h.mu.Lock()
	if h.cmd != nil {
		h.mu.Unlock()
		return fmt.Errorf("lab: %s: daemon already running", h.Name)
	}
	level := h.lab.cfg.LogLevel
	if level == "" {
		level = "debug"
	}
	bin := h.Bin
	if bin == "" {
		bin = h.lab.cfg.Bin
	}
	// Not CommandContext: the daemon outlives the call that starts it.
	cmd := exec.Command("ip", "netns", "exec", h.NS, bin, "daemon",
		"--socket", h.Socket, "--state-dir", h.StateDir, "--log-level", level,
		"--snapshot", filepath.Join(filepath.Dir(h.StateDir), "serf.snapshot"))
	// No swarm unless a test gives one (VXSEC_SWARM_DIR in h.Env, which
	// comes later and wins): the machine's own engine may be a swarm node.
	cmd.Env = append(append(os.Environ(), "VXSEC_ADVERTISE_ADDR="+h.Addr.String(),
		"VXSEC_SWARM_DIR="+filepath.Join(filepath.Dir(h.StateDir), "no-swarm")), h.Env...)
	exited, err := startLogged(cmd, h.LogPath, 0o600)
	if err != nil {
		h.mu.Unlock()
		return fmt.Errorf("lab: starting daemon on %s: %w", h.Name, err)
	}
	h.cmd, h.exited = cmd, exited
	h.mu.Unlock()

	err = waitFor(ctx, 10*time.Second, func() error {
		select {
		case <-exited:
			return errors.New("daemon exited")
		default:
		}
		_, err := h.Client().Activate(ctx)
		return err
	})
	if err != nil {
		h.Kill()
		return fmt.Errorf("lab: daemon on %s did not come up: %w; log tail:\n%s", h.Name, err, h.LogTail(20))
	}
	return nil
}

// Kill ends the daemon at once (SIGKILL), as a crash would.
func (h *Host) Kill() { h.stop(syscall.SIGKILL) }

// Stop ends the daemon the way Docker does (SIGTERM) and waits for it.
func (h *Host) Stop() { h.stop(syscall.SIGTERM) }

func (h *Host) stop(sig syscall.Signal) {
	h.mu.Lock()
	cmd, exited := h.cmd, h.exited
	h.cmd = nil
	h.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
}

// Restart stops (by sig) and starts the daemon again.
func (h *Host) Restart(ctx context.Context, sig syscall.Signal) error {
	h.stop(sig)
	return h.Start(ctx)
}

// Running reports whether the daemon process is alive.
func (h *Host) Running() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd == nil {
		return false
	}
	select {
	case <-h.exited:
		return false
	default:
		return true
	}
}

// LogTail returns the last n lines of the daemon's log.
func (h *Host) LogTail(n int) string { return tail(h.LogPath, n) }

// Exec runs a command in the host's namespace.
func (h *Host) Exec(ctx context.Context, args ...string) (string, error) {
	return output(ctx, "ip", append([]string{"netns", "exec", h.NS}, args...)...)
}
