package plugin

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// serveTest serves the remote API (no driver: the calls used here never
// reach it) on a socket in a temporary directory.
func serveTest(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "vxsec.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	api := NewAPI(ctx, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), nil, func() any { return map[string]int{"ok": 1} })
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, l, api, &IPAM{}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return sock
}

func unixClient(sock string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
}

// TestOversizedBodyRefused: a body over maxBody is refused with the
// protocol's error, whether its length is declared or it comes chunked;
// a call within the bound is answered.
func TestOversizedBodyRefused(t *testing.T) {
	sock := serveTest(t)
	big := `{"NetworkID":"` + strings.Repeat("x", 2*maxBody) + `"}`

	// Declared length, through the client the lab and tests use.
	err := NewClient(sock).Call(context.Background(), "NetworkDriver.CreateNetwork", json.RawMessage(big), nil)
	if err == nil || !strings.Contains(err.Error(), "over the remote API's limit") {
		t.Fatalf("oversized CreateNetwork: err = %v, want the limit named", err)
	}
	if !IsRemote(err) {
		t.Fatalf("oversized CreateNetwork: %v is not the plugin's error", err)
	}

	// Chunked: no length to refuse up front; the read stops at the bound.
	body := io.MultiReader(strings.NewReader(big)) // hides the length
	res, err := unixClient(sock).Post("http://plugin/NetworkDriver.CreateNetwork", contentType, body)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var e struct{ Err string }
	json.NewDecoder(res.Body).Decode(&e)
	if res.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(e.Err, "limit") {
		t.Fatalf("chunked oversized body: HTTP %d, %q", res.StatusCode, e.Err)
	}

	// Within the bound: answered.
	var st map[string]int
	if err := NewClient(sock).Call(context.Background(), "VxSec.Status", struct{}{}, &st); err != nil || st["ok"] != 1 {
		t.Fatalf("status = %v, %v", st, err)
	}
}
