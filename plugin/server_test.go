package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// serveTest serves the remote API (no driver: the calls used here never
// reach it) on a socket in a temporary directory.
func serveTest(t *testing.T) string {
	sock, _ := serveEngineTest(t)
	return sock
}

func serveEngineTest(t *testing.T) (string, *Engine) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "vxsec.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	api := NewAPI(ctx, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), nil, func(r StatusRequest) any {
		st := map[string]int{"ok": 1}
		if r.Brief {
			st["brief"] = 1
		}
		return st
	})
	done := make(chan error, 1)
	engine := &Engine{}
	go func() { done <- Serve(ctx, l, api, &IPAM{}, engine) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return sock, engine
}

// TestEngineIsDockersCaller: the process that makes Docker's calls is taken
// for the engine (service VIPs find the engine's files through it); one
// that makes only vxsec's own calls (the CLI) is not.
func TestEngineIsDockersCaller(t *testing.T) {
	sock, engine := serveEngineTest(t)
	var st map[string]int
	if err := NewClient(sock).Call(context.Background(), "VxSec.Status", struct{}{}, &st); err != nil {
		t.Fatal(err)
	}
	if engine.Pid() != 0 {
		t.Fatalf("a caller of VxSec.Status only was taken for the engine (pid %d)", engine.Pid())
	}
	var caps map[string]any
	if err := NewClient(sock).Call(context.Background(), "NetworkDriver.GetCapabilities", struct{}{}, &caps); err != nil {
		t.Fatal(err)
	}
	if engine.Pid() != os.Getpid() {
		t.Fatalf("after Docker's call, the engine is pid %d, want the caller %d", engine.Pid(), os.Getpid())
	}
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

// TestStatusRequest: VxSec.Status hands its body to status: an empty one
// (what older clients send) asks for everything, Brief for the brief form.
func TestStatusRequest(t *testing.T) {
	sock := serveTest(t)
	for _, tc := range []struct {
		name      string
		req       any
		wantBrief int
	}{
		{"empty", struct{}{}, 0},
		{"full", StatusRequest{}, 0},
		{"brief", StatusRequest{Brief: true}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var st map[string]int
			if err := NewClient(sock).Call(context.Background(), "VxSec.Status", tc.req, &st); err != nil {
				t.Fatal(err)
			}
			if st["ok"] != 1 || st["brief"] != tc.wantBrief {
				t.Fatalf("status = %v, want brief %d", st, tc.wantBrief)
			}
		})
	}
}

// TestRefusalsKept: the last calls that failed are kept for status, the
// newest last, at most keptRefusals.
func TestRefusalsKept(t *testing.T) {
	api := NewAPI(context.Background(), nil, slog.New(slog.NewTextHandler(io.Discard, nil)), nil, nil)
	if api.fail("CreateNetwork", nil) != nil || len(api.Refusals()) != 0 {
		t.Fatal("a call that did not fail was kept")
	}
	for i := range keptRefusals + 2 {
		api.fail("CreateNetwork", fmt.Errorf("refusal %d", i))
	}
	got := api.Refusals()
	if len(got) != keptRefusals || got[0].Error != "refusal 2" || got[len(got)-1].Error != fmt.Sprintf("refusal %d", keptRefusals+1) || got[0].Method != "CreateNetwork" {
		t.Fatalf("kept %+v", got)
	}
}
