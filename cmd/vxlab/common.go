package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vxsec/vxsec/identity"
	"github.com/vxsec/vxsec/lab"
)

// cluster is a lab whose hosts share a secret and join the first host.
type cluster struct {
	*lab.Lab
	hosts  []*lab.Host
	secret string
}

// keepLogs keeps every lab's directory (daemon logs) after it closes.
var keepLogs bool

// newCluster makes the switch and n hosts and starts their daemons
// (parallel at most 8 at a time), with a secret from `vxsec secret`,
// logging at level ("" for debug).
func newCluster(ctx context.Context, bin string, n int, level string) (*cluster, error) {
	out, err := exec.CommandContext(ctx, bin, "secret").Output()
	if err != nil {
		return nil, fmt.Errorf("vxsec secret: %w", err)
	}
	secret := strings.TrimSpace(string(out))
	dir, err := os.MkdirTemp("", "vxlab-")
	if err != nil {
		return nil, err
	}
	l, err := lab.New(ctx, lab.Config{Bin: bin, Dir: dir, Env: lab.ClusterEnv(secret), LogLevel: level})
	if err != nil {
		return nil, err
	}
	c := &cluster{Lab: l, secret: secret}
	// Every host has an identity, as encrypted networks require.
	ca := filepath.Join(dir, "ca")
	if err := identity.InitCA(ca, "vxlab", 24*time.Hour); err != nil {
		c.Close()
		return nil, err
	}
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("h%d", i)
		h, err := l.AddHost(ctx, name)
		if err != nil {
			c.Close()
			return nil, err
		}
		idDir := filepath.Join(dir, "identity-"+name)
		if _, err := identity.Issue(ca, idDir, name, []netip.Addr{h.Addr}, 24*time.Hour); err != nil {
			c.Close()
			return nil, err
		}
		h.Env = append(h.Env, "VXSEC_IDENTITY_DIR="+idDir)
		c.hosts = append(c.hosts, h)
	}
	if err := eachHost(c.hosts, 8, func(h *lab.Host) error { return h.Start(ctx) }); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Close tears the lab down and removes its directory unless it failed.
func (c *cluster) Close() error {
	err := c.Lab.Close()
	if err == nil && !keepLogs {
		os.RemoveAll(c.Dir())
	} else {
		fmt.Fprintf(os.Stderr, "vxlab: lab directory (daemon logs) kept: %s\n", c.Dir())
	}
	return err
}

// logTails gives the end of every daemon's log, for failure reports.
func (c *cluster) logTails(n int) string {
	var b strings.Builder
	for _, h := range c.hosts {
		fmt.Fprintf(&b, "--- daemon log of %s (%s)\n%s\n", h.Name, h.LogPath, h.LogTail(n))
	}
	return b.String()
}

// eachHost runs f for every host, at most par at once, and joins the errors.
func eachHost(hosts []*lab.Host, par int, f func(h *lab.Host) error) error {
	sem := make(chan struct{}, par)
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, h := range hosts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := f(h); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", h.Name, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// waitAlive waits until every host sees every host alive; it returns how
// long that took.
func (c *cluster) waitAlive(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	want := len(c.hosts)
	err := eachHost(c.hosts, 16, func(h *lab.Host) error {
		return lab.WaitFor(ctx, timeout, func() error {
			st, err := h.BriefStatus(ctx)
			if err != nil {
				return err
			}
			if n := len(st.Alive()); n != want {
				return fmt.Errorf("%d of %d members alive", n, want)
			}
			return nil
		})
	})
	return time.Since(start), err
}

// waitRemote waits until every host in hosts has remote endpoints on vni as
// want(h) says, polling every interval; it returns when each host got there
// (measured from start).
func waitRemote(ctx context.Context, hosts []*lab.Host, vni int, want func(*lab.Host) int, start time.Time, interval, timeout time.Duration) (map[*lab.Host]time.Duration, error) {
	var mu sync.Mutex
	at := map[*lab.Host]time.Duration{}
	err := eachHost(hosts, len(hosts), func(h *lab.Host) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		var last error
		for {
			st, err := h.BriefStatus(ctx)
			if err == nil {
				n, ok := st.Network(vni)
				if ok && n.Remote == want(h) {
					mu.Lock()
					at[h] = time.Since(start)
					mu.Unlock()
					return nil
				}
				last = fmt.Errorf("remote endpoints %d, want %d", n.Remote, want(h))
			} else {
				last = err
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("after %v: %w", timeout, last)
			case <-time.After(interval):
			}
		}
	})
	return at, err
}

// percentile is the nearest-rank percentile p (0..100) of sorted ds.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func sortedCopy(ds []time.Duration) []time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// sh runs a command and folds its output into the error.
func sh(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// indent prefixes every line of s.
func indent(s, prefix string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return prefix + "(nothing)"
	}
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix)
}
