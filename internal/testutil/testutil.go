package testutil

import (
	"errors"
	"net"
	"testing"
	"time"
)

// FreePort is a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// PollInterval is how often Until and Eventually try their condition.
const PollInterval = 20 * time.Millisecond

// Until tries cond every PollInterval until it returns nil, and returns
// how long that took. When timeout passes first it fails the test with
// what and cond's last error, which says what was still wrong:
//
//	h1 sees every member alive: not true after 20s: alive members [...], want [...]
func Until(t testing.TB, timeout time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	return UntilEvery(t, timeout, PollInterval, what, cond)
}

// UntilEvery is Until trying cond every interval, for conditions that are
// costly to try (a docker command).
func UntilEvery(t testing.TB, timeout, interval time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	took, err := poll(timeout, interval, cond)
	if err != nil {
		t.Fatalf("%s: not true after %s: %v", what, timeout, err)
	}
	return took
}

// Eventually is Until for a condition that has nothing to say about why it
// does not hold yet.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	_, err := poll(timeout, PollInterval, func() error {
		if !cond() {
			return errNotYet
		}
		return nil
	})
	if err != nil {
		t.Fatalf("timed out waiting for: %s", what)
	}
}

var errNotYet = errors.New("not yet")

// poll tries cond until it returns nil (returning how long that took) or
// timeout passes (returning cond's last error). It is lab.WaitFor's loop
// without the context: lab's is library code (cmd/vxlab uses it, and it
// must not import testing), and unit tests must not import lab, which
// drives namespaces and processes.
func poll(timeout, interval time.Duration, cond func() error) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		err := cond()
		if err == nil {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) {
			return time.Since(start), err
		}
		time.Sleep(interval)
	}
}
