package testutil

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// fakeTB records a failure instead of ending the test.
type fakeTB struct {
	testing.TB
	failed string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) { f.failed = fmt.Sprintf(format, args...) }

func TestUntil(t *testing.T) {
	n := 0
	f := &fakeTB{TB: t}
	took := Until(f, time.Second, "three tries", func() error {
		if n++; n < 3 {
			return fmt.Errorf("try %d", n)
		}
		return nil
	})
	if f.failed != "" || n != 3 || took < 2*PollInterval {
		t.Fatalf("failed %q after %d tries in %v", f.failed, n, took)
	}

	f = &fakeTB{TB: t}
	Until(f, 50*time.Millisecond, "never", func() error { return errors.New("still wrong") })
	if want := "never: not true after 50ms: still wrong"; f.failed != want {
		t.Fatalf("failure %q, want %q", f.failed, want)
	}

	f = &fakeTB{TB: t}
	Eventually(f, 50*time.Millisecond, "never", func() bool { return false })
	if !strings.Contains(f.failed, "timed out waiting for: never") {
		t.Fatalf("failure %q", f.failed)
	}
}
