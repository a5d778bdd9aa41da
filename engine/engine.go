// Package engine is the local Docker engine as the plugin reaches it: the
// process that makes Docker's calls on the plugin's socket (plugin.Engine
// records its pid). The plugin shares the host's pid namespace, so the
// engine's API socket and the containers' network namespaces, which are
// paths in the engine's mount namespace, are reached through
// /proc/<pid>/root: nothing of the engine's is mounted into the plugin,
// whatever its exec root or socket, and an engine restarted with another
// pid is followed.
package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"
	"golang.org/x/sys/unix"
)

// Docker is the local engine, found by its pid.
type Docker struct {
	pid func() int

	mu  sync.Mutex
	cur int
	c   *client.Client
}

// New finds the engine by pid (the last caller of the plugin).
func New(pid func() int) *Docker { return &Docker{pid: pid} }

// client returns a client of the engine that called the plugin last.
func (d *Docker) client() (*client.Client, error) {
	pid := d.pid()
	if pid <= 0 {
		return nil, errors.New("the Docker engine's process is not known: it has not called the plugin yet, or the plugin does not share the host's pid namespace (pidhost in config.json)")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.c != nil && d.cur == pid {
		return d.c, nil
	}
	cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return nil, fmt.Errorf("reading the engine's command line: %w", err)
	}
	socket, err := InRoot(procRoot(pid), apiSocket(strings.Split(string(cmdline), "\x00")))
	if err != nil {
		return nil, fmt.Errorf("the engine's API socket: %w", err)
	}
	c, err := client.NewClientWithOpts(client.WithHost("unix://"+socket), client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("a Docker client for %s: %w", socket, err)
	}
	if d.c != nil {
		d.c.Close()
	}
	d.c, d.cur = c, pid
	return c, nil
}

// procRoot is the root of pid's mount namespace, as /proc shows it.
func procRoot(pid int) string { return filepath.Join("/proc", strconv.Itoa(pid), "root") }

// DefaultSocket is where dockerd listens unless -H says otherwise.
const DefaultSocket = "/var/run/docker.sock"

// apiSocket is the first unix socket of dockerd's -H/--host arguments, or
// the default one. (Hosts set only in daemon.json are not seen.)
func apiSocket(args []string) string {
	for i, a := range args {
		var v string
		switch {
		case (a == "-H" || a == "--host") && i+1 < len(args):
			v = args[i+1]
		case strings.HasPrefix(a, "-H="), strings.HasPrefix(a, "--host="):
			_, v, _ = strings.Cut(a, "=")
		case strings.HasPrefix(a, "-H") && len(a) > 2:
			v = a[2:]
		default:
			continue
		}
		if p, ok := strings.CutPrefix(v, "unix://"); ok && p != "" {
			return p
		}
	}
	return DefaultSocket
}

// NetworkServices is the engine's verbose inspection of a network: each
// service's VIP and its tasks' addresses on every swarm node, from
// libnetwork's gossip. An unknown network has none.
func (d *Docker) NetworkServices(ctx context.Context, id string) (map[string]network.ServiceInfo, error) {
	c, err := d.client()
	if err != nil {
		return nil, err
	}
	nw, err := c.NetworkInspect(ctx, id, network.InspectOptions{Verbose: true})
	if errdefs.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return nw.Services, nil
}

// SwarmActive reports whether the engine is an active swarm node (its
// `docker info` says so), whatever the plugin sees of the swarm directory.
func (d *Docker) SwarmActive(ctx context.Context) (bool, error) {
	c, err := d.client()
	if err != nil {
		return false, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return false, fmt.Errorf("asking the engine whether it is a swarm node: %w", err)
	}
	return info.Swarm.LocalNodeState == swarm.LocalNodeStateActive, nil
}

// ErrNotLeader: only the swarm's leader answers SwarmNodes.
var ErrNotLeader = errors.New("this engine is not the swarm's leader")

// SwarmNodes lists the swarm's node IDs, on the leader only (ErrNotLeader
// elsewhere, managers included, so that one node acts on the list).
func (d *Docker) SwarmNodes(ctx context.Context) ([]string, error) {
	c, err := d.client()
	if err != nil {
		return nil, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return nil, err
	}
	if !info.Swarm.ControlAvailable {
		return nil, ErrNotLeader
	}
	nodes, err := c.NodeList(ctx, swarm.NodeListOptions{})
	if err != nil {
		return nil, err
	}
	var ids []string
	leader := false
	for _, n := range nodes {
		ids = append(ids, n.ID)
		if n.ID == info.Swarm.NodeID && n.ManagerStatus != nil && n.ManagerStatus.Leader {
			leader = true
		}
	}
	if !leader {
		return nil, ErrNotLeader
	}
	return ids, nil
}

// OpenNetNS opens a container's network namespace by its sandbox key
// (Join's SandboxKey).
func (d *Docker) OpenNetNS(sandbox string) (int, func(), error) {
	if !filepath.IsAbs(sandbox) || strings.Contains(sandbox, "..") {
		return 0, nil, fmt.Errorf("sandbox key %q is not an absolute path", sandbox)
	}
	pid := d.pid()
	if pid <= 0 {
		return 0, nil, errors.New("the Docker engine's process is not known")
	}
	path, err := InRoot(procRoot(pid), sandbox)
	if err != nil {
		return 0, nil, fmt.Errorf("the network namespace %s: %w", sandbox, err)
	}
	return openNS(path)
}

// maxLinks bounds the symlinks InRoot follows, as the kernel's 40.
const maxLinks = 40

// InRoot is path as seen under root (a directory, such as
// /proc/<pid>/root): its symlinks are followed inside root. The kernel
// would follow an absolute link (Debian's /var/run -> /run) from the
// caller's own root instead, out of root. The last component is not
// followed if it is no link (a socket, a namespace file).
func InRoot(root, path string) (string, error) {
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("%q is not an absolute path", path)
	}
	rest := strings.Split(strings.Trim(filepath.Clean(path), "/"), "/")
	var cur []string
	for links := 0; len(rest) > 0; {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(cur) > 0 {
				cur = cur[:len(cur)-1]
			}
			continue
		}
		full := filepath.Join(root, filepath.Join(append(cur, c)...))
		fi, err := os.Lstat(full)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			// Missing or no link: taken as it is (the open or connect
			// says what is wrong).
			cur = append(cur, c)
			continue
		}
		if links++; links > maxLinks {
			return "", fmt.Errorf("%s: too many symlinks", path)
		}
		target, err := os.Readlink(full)
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(target) {
			cur = nil
		}
		rest = append(strings.Split(strings.Trim(target, "/"), "/"), rest...)
	}
	return filepath.Join(root, filepath.Join(cur...)), nil
}

func openNS(path string) (int, func(), error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, nil, fmt.Errorf("opening the network namespace %s: %w", path, err)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil || st.Type != unix.NSFS_MAGIC {
		unix.Close(fd)
		return 0, nil, fmt.Errorf("%s is not a network namespace yet", path)
	}
	return fd, func() { unix.Close(fd) }, nil
}
