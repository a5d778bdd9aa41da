package lab

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Registry is an image registry for a lab's engines: Debian's distribution
// (`docker-registry`), serving plain HTTP on Addr from a directory, in the
// namespace of the process that starts it (and its own session).
type Registry struct {
	// Addr is host:port, which the engines list as an insecure registry.
	Addr string
	// Dir holds the registry's storage, configuration and log.
	Dir string

	cmd    *exec.Cmd
	exited chan struct{}
}

// LogPath is the registry's log.
func (r *Registry) LogPath() string { return filepath.Join(r.Dir, "registry.log") }

// StartRegistry starts a registry on addr, keeping its files in dir.
func StartRegistry(addr, dir string) (*Registry, error) {
	r := &Registry{Addr: addr, Dir: dir, exited: make(chan struct{})}
	if err := os.MkdirAll(filepath.Join(dir, "storage"), 0o755); err != nil {
		return nil, fmt.Errorf("lab: registry: %w", err)
	}
	conf := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, filepath.Join(dir, "storage"), addr)
	cf := filepath.Join(dir, "registry.yml")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("lab: registry: %w", err)
	}
	logf, err := os.OpenFile(r.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lab: registry: %w", err)
	}
	r.cmd = exec.Command("docker-registry", "serve", cf)
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := r.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("lab: starting docker-registry (is the docker-registry package installed?): %w", err)
	}
	go func() {
		r.cmd.Wait()
		logf.Close()
		close(r.exited)
	}()
	return r, nil
}

// Wait waits until the registry answers its /v2/ endpoint.
func (r *Registry) Wait(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := &http.Client{Timeout: 5 * time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.Addr+"/v2/", nil)
		if err != nil {
			return err
		}
		if res, err := hc.Do(req); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-r.exited:
			return fmt.Errorf("lab: the registry exited: %s", tail(r.LogPath(), 3))
		case <-ctx.Done():
			return fmt.Errorf("lab: the registry does not answer at http://%s/v2/ after %v: %s", r.Addr, timeout, tail(r.LogPath(), 3))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Stop ends the registry.
func (r *Registry) Stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Kill()
		<-r.exited
	}
}
