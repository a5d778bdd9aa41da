package lab

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/vishvananda/netns"
)

// HTTPGet fetches path from addr (host:port) inside the host's network
// namespace, as a tool on that host would: the daemon's metrics and
// status (VXSEC_METRICS_ADDR, on the namespace's loopback).
func (h *Host) HTTPGet(ctx context.Context, addr, path string) ([]byte, error) {
	return httpGetIn(ctx, h.NS, h.Name, addr, path)
}

// HTTPGet fetches path from addr inside the engine's network namespace, as
// a tool on that node would: the plugin's metrics, status and doctor.
func (e *Engine) HTTPGet(ctx context.Context, addr, path string) ([]byte, error) {
	return httpGetIn(ctx, e.Name, e.Name, addr, path)
}

// httpGetIn is a GET of path from addr, dialled inside namespace ns; name
// says whose namespace in errors.
func httpGetIn(ctx context.Context, ns, name, addr, path string) ([]byte, error) {
	conn, err := dialIn(ns, addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	} else {
		conn.SetDeadline(time.Now().Add(10 * time.Second))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return nil, err
	}
	req.Close = true
	if err := req.Write(conn); err != nil {
		return nil, fmt.Errorf("lab: GET %s on %s: %w", path, name, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return nil, fmt.Errorf("lab: GET %s on %s: %w", path, name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("lab: GET %s on %s: %w", path, name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("lab: GET %s on %s: %s", path, name, resp.Status)
	}
	return body, nil
}

// dialIn opens a TCP connection from inside namespace ns. The socket is
// made on a thread switched into ns, and keeps ns after the thread
// returns to its own.
func dialIn(ns, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// Not unlocked: a thread whose namespace was switched is not
		// handed back to other goroutines; it ends with this one.
		orig, err := netns.Get()
		if err != nil {
			ch <- result{nil, err}
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(ns)
		if err != nil {
			ch <- result{nil, fmt.Errorf("lab: namespace %s: %w", ns, err)}
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			ch <- result{nil, fmt.Errorf("lab: entering %s: %w", ns, err)}
			return
		}
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}
