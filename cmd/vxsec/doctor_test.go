package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vxsec/vxsec/config"
)

// TestDoctorOneAtATime: while a doctor run holds this host's token, another
// is refused at once (429 over HTTP) rather than queued: each run asks
// every member, and any local user can ask for one. Without a cluster yet,
// a run says so (503).
func TestDoctorOneAtATime(t *testing.T) {
	r := newDoctorRunner(newClusterRef(), netip.MustParseAddr("198.18.0.1"), config.Settings{}, time.Now)
	cases := []struct {
		name string
		busy bool
		code int
		says string
		err  error
	}{
		{"busy", true, http.StatusTooManyRequests, "already under way", errDoctorBusy},
		{"no-cluster-yet", false, http.StatusServiceUnavailable, "has not started", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.busy {
				r.running <- struct{}{}
				defer func() { <-r.running }()
			}
			_, err := r.run(context.Background())
			if err == nil || (tc.err != nil && !errors.Is(err, tc.err)) || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("run: %v, want an error saying %q", err, tc.says)
			}
			for _, asJSON := range []bool{false, true} {
				w := httptest.NewRecorder()
				r.serveDoctor(asJSON)(w, httptest.NewRequest(http.MethodGet, "/doctor", nil))
				if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.says) {
					t.Errorf("HTTP (json %v): %d %q, want %d saying %q", asJSON, w.Code, w.Body.String(), tc.code, tc.says)
				}
			}
		})
	}
	// The token is back: a run is refused now only for want of a cluster.
	if _, err := r.run(context.Background()); errors.Is(err, errDoctorBusy) {
		t.Errorf("after the runs, still busy: %v", err)
	}
}
