package limit

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a settable time for gates and loggers.
type clock struct{ t time.Time }

func (c *clock) now() time.Time                { return c.t }
func (c *clock) advance(d time.Duration)       { c.t = c.t.Add(d) }
func newClock() *clock                         { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }
func addr(s string) netip.Addr                 { return netip.MustParseAddr(s) }
func admit(g *Gate, a string) (*Ticket, error) { return g.Admit(addr(a)) }

func TestGatePending(t *testing.T) {
	g := NewGate(GateLimits{Pending: 3, PendingPerSource: 2})
	a1, err1 := admit(g, "192.0.2.1")
	_, err2 := admit(g, "192.0.2.1")
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if _, err := admit(g, "192.0.2.1"); !errors.Is(err, ErrSourceBusy) {
		t.Fatalf("third from one source: %v, want ErrSourceBusy", err)
	}
	if _, err := admit(g, "192.0.2.2"); err != nil {
		t.Fatal(err)
	}
	if _, err := admit(g, "192.0.2.3"); !errors.Is(err, ErrBusy) {
		t.Fatalf("fourth in total: %v, want ErrBusy", err)
	}
	a1.Release()
	a1.Release() // twice is once
	if n, _ := g.Pending(); n != 2 {
		t.Fatalf("pending %d after a release, want 2", n)
	}
	if _, err := admit(g, "192.0.2.1"); err != nil {
		t.Fatalf("a released place is free again: %v", err)
	}
}

// IPv6 sources are counted by /64: one machine holds a whole one.
func TestGateIPv6Prefix(t *testing.T) {
	g := NewGate(GateLimits{PendingPerSource: 1})
	if _, err := admit(g, "2001:db8:1:2::1"); err != nil {
		t.Fatal(err)
	}
	if _, err := admit(g, "2001:db8:1:2:ffff::9"); !errors.Is(err, ErrSourceBusy) {
		t.Fatalf("same /64: %v, want ErrSourceBusy", err)
	}
	if _, err := admit(g, "2001:db8:1:3::1"); err != nil {
		t.Fatalf("another /64: %v", err)
	}
	if _, err := admit(g, "::ffff:192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	if _, err := admit(g, "192.0.2.1"); !errors.Is(err, ErrSourceBusy) {
		t.Fatalf("a mapped IPv4 address is that address: %v", err)
	}
}

func TestGateRate(t *testing.T) {
	c := newClock()
	g := NewGate(GateLimits{Rate: 10, Burst: 4, SourceRate: 1, SourceBurst: 2})
	g.now = c.now
	release := func(tk *Ticket, err error) error {
		tk.Release()
		return err
	}
	for i := range 2 {
		if err := release(admit(g, "192.0.2.1")); err != nil {
			t.Fatalf("burst %d: %v", i, err)
		}
	}
	if _, err := admit(g, "192.0.2.1"); !errors.Is(err, ErrSourceRate) {
		t.Fatalf("over the source's burst: %v", err)
	}
	// Another source still has the shared tokens, until they run out.
	for i := range 2 {
		if err := release(admit(g, "192.0.2.2")); err != nil {
			t.Fatalf("second source %d: %v", i, err)
		}
	}
	if _, err := admit(g, "192.0.2.3"); !errors.Is(err, ErrRate) {
		t.Fatalf("over the total burst: %v", err)
	}
	c.advance(time.Second)
	if err := release(admit(g, "192.0.2.1")); err != nil {
		t.Fatalf("a second later: %v", err)
	}
}

func TestGateBytes(t *testing.T) {
	g := NewGate(GateLimits{Bytes: 100})
	a, _ := admit(g, "192.0.2.1")
	b, _ := admit(g, "192.0.2.2")
	if err := a.Reserve(60); err != nil {
		t.Fatal(err)
	}
	if err := b.Reserve(60); !errors.Is(err, ErrMemory) {
		t.Fatalf("over the memory bound: %v", err)
	}
	a.Release()
	if err := b.Reserve(60); err != nil {
		t.Fatalf("memory released with the ticket: %v", err)
	}
	if _, bytes := g.Pending(); bytes != 60 {
		t.Fatalf("bytes held %d, want 60", bytes)
	}
	if Reason(ErrMemory) != "memory" || Reason(errors.New("x")) != "" {
		t.Fatal("Reason")
	}
}

// Sources are forgotten when idle, and a flood of new ones cannot grow
// the map past its bound.
func TestGateSources(t *testing.T) {
	c := newClock()
	g := NewGate(GateLimits{Sources: 2, SourceRate: 1, SourceBurst: 1})
	g.now = c.now
	a, _ := admit(g, "192.0.2.1")
	b, _ := admit(g, "192.0.2.2")
	if _, err := admit(g, "192.0.2.3"); !errors.Is(err, ErrSources) {
		t.Fatalf("a third source while two wait: %v", err)
	}
	a.Release()
	b.Release()
	// Released, but their buckets are not full yet: still remembered.
	if _, err := admit(g, "192.0.2.3"); !errors.Is(err, ErrSources) {
		t.Fatalf("a third source while two are remembered: %v", err)
	}
	c.advance(time.Second)
	if _, err := admit(g, "192.0.2.3"); err != nil {
		t.Fatalf("idle sources forgotten: %v", err)
	}
	if len(g.sources) > 2 {
		t.Fatalf("%d sources remembered", len(g.sources))
	}
}

// recorder is a slog handler keeping messages and attributes as text.
type recorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Message)
	rec.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	r.mu.Lock()
	r.lines = append(r.lines, b.String())
	r.mu.Unlock()
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func (r *recorder) count(sub string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, l := range r.lines {
		if strings.Contains(l, sub) {
			n++
		}
	}
	return n
}

func TestLoggerBudget(t *testing.T) {
	c := newClock()
	rec := &recorder{}
	l := NewLogger(slog.New(rec), 3, 10*time.Second)
	l.now = c.now
	for range 100 {
		l.Log(slog.LevelWarn, "bad packet", "bad packet from a stranger")
	}
	l.Log(slog.LevelWarn, "other", "another kind")
	if n := rec.count("bad packet from"); n != 3 {
		t.Fatalf("%d lines of one kind in a window, want 3", n)
	}
	if rec.count("another kind") != 1 {
		t.Fatal("a kind was held back for another's flood")
	}
	l.Flush()
	if rec.count("suppressed") != 0 {
		t.Fatal("reported before the window ended")
	}
	c.advance(10 * time.Second)
	l.Flush()
	if n := rec.count("suppressed=97"); n != 1 {
		t.Fatalf("the held-back count is told once (%d): %q", n, rec.lines)
	}
	// A new window: lines pass again; the next one that ends is told
	// when the next line of its kind comes.
	for range 5 {
		l.Log(slog.LevelWarn, "bad packet", "bad packet from a stranger")
	}
	c.advance(11 * time.Second)
	l.Log(slog.LevelWarn, "bad packet", "bad packet from a stranger")
	if n := rec.count("suppressed=2"); n != 1 {
		t.Fatalf("held-back lines of an ended window told at the next line (%d): %q", n, rec.lines)
	}
	if n := rec.count("bad packet from"); n != 3+3+1 {
		t.Fatalf("%d lines passed, want 7", n)
	}
}

// Kinds are bounded: a stranger choosing text cannot grow the map.
func TestLoggerKindsBounded(t *testing.T) {
	rec := &recorder{}
	l := NewLogger(slog.New(rec), 1, time.Hour)
	for i := range 10 * maxKinds {
		l.Log(slog.LevelWarn, strings.Repeat("k", i%1000)+string(rune('a'+i%26)), "line")
	}
	if len(l.kinds) > maxKinds {
		t.Fatalf("%d kinds remembered, bound %d", len(l.kinds), maxKinds)
	}
	if n := rec.count("line"); n > maxKinds {
		t.Fatalf("%d lines passed for %d kinds at most", n, maxKinds)
	}
}

// Run tells what was held back when its context ends.
func TestLoggerRunFlushesAtEnd(t *testing.T) {
	rec := &recorder{}
	l := NewLogger(slog.New(rec), 1, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		l.Run(ctx)
		close(done)
	}()
	for range 10 {
		l.Log(slog.LevelError, "k", "line")
	}
	cancel()
	<-done
	if n := rec.count("suppressed=9"); n != 1 {
		t.Fatalf("held-back lines not told at the end: %q", rec.lines)
	}
}

// A level the logger does not write costs nothing and counts nothing.
func TestLoggerDisabledLevel(t *testing.T) {
	l := NewLogger(slog.New(slog.NewTextHandler(nil, &slog.HandlerOptions{Level: slog.LevelInfo})), 1, time.Hour)
	for range 10 {
		l.Log(slog.LevelDebug, "k", "line")
	}
	if len(l.kinds) != 0 {
		t.Fatalf("debug lines counted under an info logger: %v", l.kinds)
	}
}
