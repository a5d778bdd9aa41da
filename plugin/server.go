package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"

	"github.com/docker/go-plugins-helpers/network"
)

// statusPath is vxsec's own call on the socket, for operators and tests;
// Docker never makes it.
const statusPath = "/VxSec.Status"

// leavePath makes the daemon leave the cluster gracefully: its peers forget
// its endpoints at once. For decommissioning a host.
const leavePath = "/VxSec.Leave"

// Listen opens the unix socket at path, replacing a stale one. Docker waits
// only about 9.5 s for a managed plugin's socket, so this comes first at
// start, before anything slow.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating socket directory: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("removing stale socket %s: %w", path, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("restricting socket %s: %w", path, err)
	}
	return l, nil
}

// Serve answers the remote API on l until ctx ends. go-plugins-helpers'
// handler owns its http.Server, so closing the listener is how it stops.
func Serve(ctx context.Context, l net.Listener, api *API) error {
	h := network.NewHandler(api)
	if api.leave != nil {
		h.HandleFunc(leavePath, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			if err := api.leave(); err != nil {
				w.WriteHeader(http.StatusInternalServerError)
				json.NewEncoder(w).Encode(map[string]string{"Err": err.Error()})
				return
			}
			json.NewEncoder(w).Encode(struct{}{})
		})
	}
	if api.status != nil {
		h.HandleFunc(statusPath, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(api.status())
		})
	}
	errc := make(chan error, 1)
	go func() { errc <- h.Serve(l) }()
	select {
	case <-ctx.Done():
		l.Close()
		<-errc
		return nil
	case err := <-errc:
		return fmt.Errorf("serving the remote API: %w", err)
	}
}
