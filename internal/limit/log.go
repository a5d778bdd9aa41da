package limit

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Default budget of a Logger: enough lines to see what happens, few enough
// that a stranger sending junk as fast as the network carries it cannot
// fill a disk or drown the lines that matter.
const (
	DefaultLogBurst  = 5
	DefaultLogWindow = 10 * time.Second
)

// maxKinds bounds the kinds a Logger remembers: a kind may carry text a
// stranger chose, so it must not grow a map without end.
const maxKinds = 256

// otherKind collects lines once maxKinds kinds are remembered.
const otherKind = "other"

// Logger passes at most Burst lines of each kind per Window to its slog
// logger; the rest are counted, and once the window ends one line says how
// many were held back. Use it for every line a stranger can cause.
type Logger struct {
	log    *slog.Logger
	burst  int
	window time.Duration
	now    func() time.Time

	mu    sync.Mutex
	kinds map[string]*kindState
}

type kindState struct {
	start      time.Time
	level      slog.Level
	passed     int
	suppressed int
}

// NewLogger limits log to burst lines of each kind per window.
func NewLogger(log *slog.Logger, burst int, window time.Duration) *Logger {
	return &Logger{log: log, burst: burst, window: window, now: time.Now, kinds: map[string]*kindState{}}
}

// Log writes msg at level unless kind has used its budget in this window.
func (l *Logger) Log(level slog.Level, kind, msg string, args ...any) {
	if l.Allow(level, kind) {
		l.log.Log(context.Background(), level, msg, args...)
	}
}

// Allow counts a line of kind at level and reports whether it is within
// the budget, for a caller on a hot path that builds the line only then
// (and writes it to the Logger's slog logger itself).
func (l *Logger) Allow(level slog.Level, kind string) bool {
	if !l.log.Enabled(context.Background(), level) {
		return false
	}
	l.mu.Lock()
	now := l.now()
	k, ok := l.kinds[kind]
	// One place is kept for otherKind.
	if !ok && len(l.kinds) >= maxKinds-1 {
		l.flushLocked(now)
		if len(l.kinds) >= maxKinds-1 {
			kind = otherKind
			k, ok = l.kinds[kind]
		}
	}
	if !ok {
		k = &kindState{start: now, level: level}
		l.kinds[kind] = k
	}
	var held int
	if now.Sub(k.start) >= l.window {
		held = k.suppressed
		k.start, k.passed, k.suppressed = now, 0, 0
	}
	k.level = max(k.level, level)
	pass := k.passed < l.burst
	if pass {
		k.passed++
	} else {
		k.suppressed++
	}
	l.mu.Unlock()
	if held > 0 {
		l.summary(kind, level, held)
	}
	return pass
}

// Flush reports the lines held back in windows that have ended, and
// forgets kinds that were quiet.
func (l *Logger) Flush() {
	l.mu.Lock()
	type report struct {
		kind  string
		level slog.Level
		n     int
	}
	var reports []report
	now := l.now()
	for kind, k := range l.kinds {
		if now.Sub(k.start) < l.window {
			continue
		}
		if k.suppressed > 0 {
			reports = append(reports, report{kind, k.level, k.suppressed})
		}
		delete(l.kinds, kind)
	}
	l.mu.Unlock()
	for _, r := range reports {
		l.summary(r.kind, r.level, r.n)
	}
}

// flushLocked forgets ended windows' kinds (their counts are reported by
// the next Flush only if held back, so this keeps those).
func (l *Logger) flushLocked(now time.Time) {
	for kind, k := range l.kinds {
		if now.Sub(k.start) >= l.window && k.suppressed == 0 {
			delete(l.kinds, kind)
		}
	}
}

func (l *Logger) summary(kind string, level slog.Level, n int) {
	l.log.Log(context.Background(), level, "similar log lines suppressed", "kind", kind, "suppressed", n, "within", l.window)
}

// Run flushes once a window until ctx ends, then once more (what was held
// back is always told), so that a burst that stopped is still reported.
func (l *Logger) Run(ctx context.Context) {
	t := time.NewTicker(l.window)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			l.mu.Lock()
			// At the end every window counts as ended.
			for _, k := range l.kinds {
				k.start = time.Time{}
			}
			l.mu.Unlock()
			l.Flush()
			return
		case <-t.C:
			l.Flush()
		}
	}
}
