//go:build testhooks

package main

import (
	"fmt"
	"log/slog"
	"os"
	"time"
)

// testClockEnv shifts the driver's clock in a test build: a duration such
// as "-500000h". Integration tests use it to run a member whose clock
// says 1970. Only a binary built with -tags testhooks reads it.
const testClockEnv = "VXSEC_TEST_CLOCK_OFFSET"

// testClock returns the driver's clock shifted by $VXSEC_TEST_CLOCK_OFFSET,
// or nil (the real clock) when it is unset.
func testClock(log *slog.Logger) (func() time.Time, error) {
	v := os.Getenv(testClockEnv)
	if v == "" {
		return nil, nil
	}
	off, err := time.ParseDuration(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", testClockEnv, err)
	}
	// Add keeps the monotonic reading: durations on the shifted clock are
	// the real ones.
	now := func() time.Time { return time.Now().Add(off) }
	log.Warn("test hook: the driver's clock is shifted", "offset", off, "driver_now", now().UTC().Format(time.RFC3339))
	return now, nil
}
