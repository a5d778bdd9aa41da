package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// manifest is the handshake answer: one socket, both drivers.
const manifest = `{"Implements": ["NetworkDriver", "IpamDriver"]}`

// contentType is what Docker's plugin client sends and expects.
const contentType = "application/vnd.docker.plugins.v1.2+json"

// maxBody bounds a request's body. Docker's largest calls (CreateNetwork
// with its options, labels and IPAM data, CreateEndpoint) are a few KiB;
// 1 MiB is hundreds of times that, and keeps a client gone wrong from
// making the daemon buffer without end.
const maxBody = 1 << 20

// vxsec's own calls on the socket, for operators and tests; Docker never
// makes them. Leave makes the daemon leave the cluster gracefully: its
// peers forget its endpoints at once (for decommissioning a host).
const (
	statusPath = "/VxSec.Status"
	leavePath  = "/VxSec.Leave"
	rotatePath = "/VxSec.Rotate"
	// reconcilePath repairs drift in the kernel now, instead of at the
	// next periodic reconcile.
	reconcilePath = "/VxSec.Reconcile"
	// rotateSecretPath issues a new cluster secret (a swarm manager).
	rotateSecretPath = "/VxSec.RotateSecret"
	// loadCRLPath gives the daemon a revocation list of the cluster CA,
	// which it spreads through the cluster.
	loadCRLPath = "/VxSec.LoadCRL"
	// evictPath cuts swarm nodes off the cluster (a swarm manager).
	evictPath = "/VxSec.Evict"
	// doctorPath checks this host and every path between members.
	doctorPath = "/VxSec.Doctor"
)

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

// Engine remembers the pid of the process that makes Docker's calls on the
// plugin's socket: the engine. The plugin sees it when it shares the host's
// pid namespace (pidhost); otherwise the kernel reports 0.
type Engine struct{ pid atomic.Int64 }

// Pid is the engine's pid, 0 before its first call.
func (e *Engine) Pid() int { return int(e.pid.Load()) }

type peerKey struct{}

// peerPid reads a unix connection's peer process.
func peerPid(c net.Conn) int {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0
	}
	pid := 0
	raw.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return pid
}

// noteEngine records the caller of Docker's APIs (not of vxsec's own
// calls, which the CLI makes) as the engine.
func noteEngine(e *Engine, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if pid, ok := r.Context().Value(peerKey{}).(int); ok && pid > 0 && e != nil &&
			(strings.HasPrefix(r.URL.Path, "/NetworkDriver.") || strings.HasPrefix(r.URL.Path, "/IpamDriver.") || r.URL.Path == "/Plugin.Activate") {
			e.pid.Store(int64(pid))
		}
		next.ServeHTTP(w, r)
	})
}

// observe reports each call to f (nil: next as is): the method is the
// path without its slash, failed an answer of status 400 or more.
func observe(f func(string, time.Duration, bool), next http.Handler) http.Handler {
	if f == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		method := strings.TrimPrefix(r.URL.Path, "/")
		if rec.status == http.StatusNotFound || !knownMethod(method) {
			method = "other" // a label per path a caller makes up would be unbounded
		}
		f(method, time.Since(start), rec.status >= 400)
	})
}

// statusRecorder keeps the status an answer was written with.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// knownMethod: a call of one of the APIs vxsec serves.
func knownMethod(m string) bool {
	for _, p := range []string{"NetworkDriver.", "IpamDriver.", "VxSec.", "Plugin."} {
		if strings.HasPrefix(m, p) && len(m) < 64 {
			return true
		}
	}
	return false
}

// Serve answers the network driver and IPAM driver APIs on l until ctx
// ends; engine (may be nil) learns who calls them.
func Serve(ctx context.Context, l net.Listener, api *API, ipam *IPAM, engine *Engine) error {
	srv := &http.Server{Handler: observe(api.observe, noteEngine(engine, limitBody(newMux(api, ipam)))), ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, peerKey{}, peerPid(c))
		}}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case <-ctx.Done():
		srv.Close()
		<-errc
		return nil
	case err := <-errc:
		return fmt.Errorf("serving the remote API: %w", err)
	}
}

// newMux routes every call of both APIs. The request and response types,
// and the interfaces API and IPAM satisfy, are go-plugins-helpers'; the
// routing is ours, because its handlers each claim /Plugin.Activate and one
// socket serves both drivers.
func newMux(api *API, ipam *IPAM) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/Plugin.Activate", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		fmt.Fprintln(w, manifest)
	})
	for path, h := range networkRoutes(api) {
		mux.HandleFunc("/NetworkDriver."+path, h)
	}
	for path, h := range ipamRoutes(ipam) {
		mux.HandleFunc("/IpamDriver."+path, h)
	}
	if api.status != nil {
		mux.HandleFunc(statusPath, handle(func(r *StatusRequest) (any, error) { return api.status(*r), nil }))
	}
	if api.rotate != nil {
		mux.HandleFunc(rotatePath, handle(func(*struct{}) (any, error) {
			ctx, cancel := api.call("VxSec.Rotate")
			defer cancel()
			return nil, api.rotate(ctx)
		}))
	}
	if api.reconcile != nil {
		mux.HandleFunc(reconcilePath, handle(func(*struct{}) (any, error) {
			ctx, cancel := api.call("VxSec.Reconcile")
			defer cancel()
			return nil, api.reconcile(ctx)
		}))
	}
	if api.rotateSecret != nil {
		mux.HandleFunc(rotateSecretPath, handle(func(*struct{}) (any, error) {
			ctx, cancel := api.call("VxSec.RotateSecret")
			defer cancel()
			return api.rotateSecret(ctx)
		}))
	}
	if api.evict != nil {
		mux.HandleFunc(evictPath, handle(func(req *EvictRequest) (any, error) {
			ctx, cancel := api.call("VxSec.Evict")
			defer cancel()
			return api.evict(ctx, req.Nodes)
		}))
	}
	if api.doctor != nil {
		mux.HandleFunc(doctorPath, handle(func(*struct{}) (any, error) {
			ctx, cancel := api.call("VxSec.Doctor")
			defer cancel()
			return api.doctor(ctx)
		}))
	}
	if api.loadCRL != nil {
		mux.HandleFunc(loadCRLPath, handle(func(req *LoadCRLRequest) (any, error) {
			ctx, cancel := api.call("VxSec.LoadCRL")
			defer cancel()
			return api.loadCRL(ctx, req.CRL)
		}))
	}
	if api.leave != nil {
		mux.HandleFunc(leavePath, handle(func(*struct{}) (any, error) { return nil, api.leave() }))
	}
	return mux
}

// limitBody refuses a body over maxBody: at once when its length says so,
// else when reading reaches the bound (handle tells the decoder's error).
func limitBody(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > maxBody {
			tooLarge(w, r.ContentLength)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		h.ServeHTTP(w, r)
	})
}

// tooLarge answers an oversized request, in the protocol's error form.
func tooLarge(w http.ResponseWriter, size int64) {
	msg := fmt.Sprintf("request body over the remote API's limit of %d bytes", maxBody)
	if size > 0 {
		msg = fmt.Sprintf("request body of %d bytes is over the remote API's limit of %d bytes", size, maxBody)
	}
	w.Header().Set("Content-Type", contentType)
	// The rest of the body is not read: the connection goes.
	w.Header().Set("Connection", "close")
	w.WriteHeader(http.StatusRequestEntityTooLarge)
	json.NewEncoder(w).Encode(map[string]string{"Err": msg})
}

// handle decodes a request of type Req, calls f, and encodes its answer:
// an empty object for nil, {"Err": ...} with status 500 for an error.
func handle[Req any](f func(*Req) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req := new(Req)
		if err := json.NewDecoder(r.Body).Decode(req); err != nil && !errors.Is(err, io.EOF) {
			if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
				tooLarge(w, -1)
				return
			}
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		resp, err := f(req)
		w.Header().Set("Content-Type", contentType)
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			json.NewEncoder(w).Encode(map[string]string{"Err": err.Error()})
			return
		}
		if resp == nil {
			resp = struct{}{}
		}
		json.NewEncoder(w).Encode(resp)
	}
}

// nothing adapts a call that answers only an error.
func nothing[Req any](f func(*Req) error) http.HandlerFunc {
	return handle(func(r *Req) (any, error) { return nil, f(r) })
}
