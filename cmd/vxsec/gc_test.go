package main

import (
	"io"
	"log/slog"
	"runtime/debug"
	"testing"
)

func TestSetGC(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, c := range []struct {
		name, env string
		want      int
	}{
		{"unset: the setting's target", "", 300},
		{"$GOGC set: the runtime's, untouched", "50", 77},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("GOGC", c.env)
			old := debug.SetGCPercent(77)
			defer debug.SetGCPercent(old)
			setGC(300, log)
			if got := debug.SetGCPercent(77); got != c.want {
				t.Errorf("GC percent %d, want %d", got, c.want)
			}
		})
	}
}
