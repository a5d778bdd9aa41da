//go:build integration

// Package integration runs real vxsec daemons in network namespaces and
// drives them through the remote API as dockerd would. It needs root, and
// fails (never skips) without it: a tier that cannot run must say so.
package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vxsec/vxsec/lab"
)

func TestMain(m *testing.M) {
	// The segmentation tests start this binary again as an injector, in
	// a namespace and as whatever user they test.
	lab.InjectorMain()
	// TestAttackStrangerFlood starts it again as a flooder, in a stranger's
	// namespace.
	lab.FloodMain()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "FAIL: the integration tier needs root (network namespaces); run it as root")
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// binary is the vxsec binary under test: $VXSEC_BIN or the repo's bin/vxsec.
func binary(t *testing.T) string { return repoBinary(t, "VXSEC_BIN", "vxsec") }

// repoBinary is $env or the repo's bin/name, which `make build` makes.
func repoBinary(t *testing.T, env, name string) string {
	t.Helper()
	if b := os.Getenv(env); b != "" {
		return b
	}
	b, err := filepath.Abs("../../bin/" + name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(b); err != nil {
		t.Fatalf("%s missing (%v): run `make build` first", b, err)
	}
	return b
}

// openLab makes a lab whose daemons get env, closed with the test (with
// every daemon's log tail when the test failed).
func openLab(t *testing.T, env []string) *lab.Lab {
	t.Helper()
	return openLabConfig(t, lab.Config{Env: env})
}

// openLabConfig is openLab with more of the lab's settings (the binary and
// the directory are the test's).
func openLabConfig(t *testing.T, cfg lab.Config) *lab.Lab {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg.Bin, cfg.Dir = binary(t), t.TempDir()
	l, err := lab.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range l.Hosts() {
				t.Logf("daemon log of %s (%s):\n%s", h.Name, h.LogPath, h.LogTail(60))
			}
		}
		if err := l.Close(); err != nil {
			t.Errorf("closing lab: %v", err)
		}
	})
	return l
}

// newLab starts a lab of n hosts, each running a daemon, torn down with t.
func newLab(t *testing.T, n int) (*lab.Lab, []*lab.Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l := openLab(t, nil)
	var hosts []*lab.Host
	for i := 1; i <= n; i++ {
		h, err := l.AddHost(ctx, fmt.Sprintf("h%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Start(ctx); err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, h)
	}
	return l, hosts
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func mustRun(t *testing.T, h *lab.Host, name, netID, addr string) *lab.Container {
	t.Helper()
	c, err := h.Run(ctxT(t), name, netID, addr)
	if err != nil {
		t.Fatalf("running container %s on %s: %v", name, netID, err)
	}
	return c
}

func mustCreateNetwork(t *testing.T, h *lab.Host, id string, opts map[string]string, pool, gw string) {
	t.Helper()
	if err := h.Client().CreateNetwork(ctxT(t), id, opts, pool, gw); err != nil {
		t.Fatalf("creating network %s: %v", id, err)
	}
}

// reach asserts that c reaches dst (want true) or does not (want false).
func reach(t *testing.T, c *lab.Container, dst string, want bool) {
	t.Helper()
	r, err := c.Ping(ctxT(t), dst, "-c", "2", "-i", "0.2", "-W", "1")
	if err != nil {
		t.Fatal(err)
	}
	got := r.Received > 0
	if got != want {
		t.Fatalf("%s → %s: reachable=%v, want %v\n%s", c.Name, dst, got, want, r.Output)
	}
}

// vxsecLinks lists the host's devices that vxsec owns (by alias).
func vxsecLinks(t *testing.T, h *lab.Host) []string {
	t.Helper()
	out, err := h.Exec(ctxT(t), "ip", "-o", "-d", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	var links []string
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "alias vxsec:") {
			f := strings.Fields(line)
			links = append(links, strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":"))
		}
	}
	return links
}

func nftTables(t *testing.T, h *lab.Host) string {
	t.Helper()
	out, err := h.Exec(ctxT(t), "nft", "list", "tables")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// stateFiles lists the state directory (the cluster's membership snapshot
// is kept elsewhere: it belongs to the installed plugin, not a network).
func stateFiles(t *testing.T, h *lab.Host) []string {
	t.Helper()
	entries, err := os.ReadDir(h.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}
