//go:build !testhooks

package main

import (
	"log/slog"
	"time"
)

// testClock is the driver's clock: nil, the real one. A test build
// (-tags testhooks, clock_testhooks.go) can shift it.
func testClock(*slog.Logger) (func() time.Time, error) { return nil, nil }
