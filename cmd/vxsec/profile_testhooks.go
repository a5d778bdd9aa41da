//go:build testhooks

package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"
)

// testProfileEnv names a directory the daemon of a test build writes CPU
// profiles to (cpu-<pid>-<n>.pprof): SIGUSR1 starts one, SIGUSR2 ends and
// writes it. Benchmarks profile the window they measure and merge the
// hosts' profiles (go tool pprof) to find where a cluster's time goes.
const testProfileEnv = "VXSEC_TEST_CPUPROFILE"

// startProfile arms the profiler $VXSEC_TEST_CPUPROFILE asks for, and
// returns what disarms it (ending a profile still running).
func startProfile(log *slog.Logger) func() {
	dir := os.Getenv(testProfileEnv)
	if dir == "" {
		return func() {}
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		var f *os.File
		end := func() {
			if f != nil {
				pprof.StopCPUProfile()
				f.Close()
				f = nil
			}
		}
		defer end()
		for n := 1; ; {
			select {
			case <-done:
				return
			case s := <-sigs:
				if s == syscall.SIGUSR2 {
					end()
					continue
				}
				if f != nil {
					continue
				}
				var err error
				f, err = os.Create(filepath.Join(dir, fmt.Sprintf("cpu-%d-%d.pprof", os.Getpid(), n)))
				if err == nil {
					err = pprof.StartCPUProfile(f)
				}
				if err != nil {
					log.Error("no CPU profile", "env", testProfileEnv, "err", err)
					if f != nil {
						f.Close()
						f = nil
					}
				}
				n++
			}
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(done)
		<-stopped
	}
}
