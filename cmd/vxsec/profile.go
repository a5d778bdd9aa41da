//go:build !testhooks

package main

import "log/slog"

// startProfile profiles the daemon in a test build (profile_testhooks.go);
// a release build has no profiler to turn on.
func startProfile(*slog.Logger) func() { return func() {} }
