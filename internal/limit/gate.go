package limit

import (
	"errors"
	"net/netip"
	"sync"
	"time"
)

// Why a Gate refuses. Each is its own error so that callers count refusals
// by reason.
var (
	ErrBusy       = errors.New("too many connections waiting to authenticate")
	ErrSourceBusy = errors.New("too many connections from this source waiting to authenticate")
	ErrRate       = errors.New("new connections arrive faster than allowed")
	ErrSourceRate = errors.New("new connections from this source arrive faster than allowed")
	ErrSources    = errors.New("too many sources waiting to authenticate")
	ErrMemory     = errors.New("the memory allowed before authentication is in use")
)

// Reason is the short, stable name of a Gate's refusal (for counters), or
// "" for another error.
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrBusy):
		return "busy"
	case errors.Is(err, ErrSourceBusy):
		return "source-busy"
	case errors.Is(err, ErrRate):
		return "rate"
	case errors.Is(err, ErrSourceRate):
		return "source-rate"
	case errors.Is(err, ErrSources):
		return "sources"
	case errors.Is(err, ErrMemory):
		return "memory"
	}
	return ""
}

// Bucket is a token bucket: Rate tokens a second, at most Burst held. The
// zero Bucket refuses nothing (no rate set).
type Bucket struct {
	Rate, Burst float64
	tokens      float64
	last        time.Time
}

// Take spends a token if one is there at now.
func (b *Bucket) Take(now time.Time) bool {
	if b.Rate <= 0 {
		return true
	}
	b.refill(now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// full reports whether the bucket holds its whole burst at now: a source
// whose bucket is full has nothing to remember.
func (b *Bucket) full(now time.Time) bool {
	if b.Rate <= 0 {
		return true
	}
	b.refill(now)
	return b.tokens >= b.Burst
}

func (b *Bucket) refill(now time.Time) {
	if b.last.IsZero() {
		b.tokens, b.last = b.Burst, now
		return
	}
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.Burst, b.tokens+d.Seconds()*b.Rate)
		b.last = now
	}
}

// GateLimits are a Gate's bounds; a zero field is no bound.
type GateLimits struct {
	// Pending bounds the connections not yet authenticated, in total and
	// per source.
	Pending, PendingPerSource int
	// Bytes bounds what the pending connections may make us buffer.
	Bytes int64
	// Rate and Burst bound new connections a second in total;
	// SourceRate and SourceBurst per source.
	Rate, Burst             float64
	SourceRate, SourceBurst float64
	// Sources bounds how many sources are remembered at once (each costs
	// a map entry): a source beyond it is refused until others go idle.
	Sources int
}

// Gate admits connections while they are within its limits. A source is
// an address; IPv6 sources are grouped by /64, which one machine commonly
// holds whole.
type Gate struct {
	lim GateLimits
	now func() time.Time

	mu      sync.Mutex
	pending int
	bytes   int64
	total   Bucket
	sources map[netip.Addr]*source
}

type source struct {
	pending int
	bucket  Bucket
}

// NewGate makes a gate with those limits.
func NewGate(lim GateLimits) *Gate {
	return &Gate{
		lim: lim, now: time.Now,
		total:   Bucket{Rate: lim.Rate, Burst: lim.Burst},
		sources: map[netip.Addr]*source{},
	}
}

// SourceOf is the key connections from addr are counted under.
func SourceOf(addr netip.Addr) netip.Addr {
	addr = addr.Unmap()
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return p.Addr()
	}
	return addr
}

// Admit lets a new connection from addr in, or says why not. The ticket
// must be released once the connection authenticated or ended.
func (g *Gate) Admit(addr netip.Addr) (*Ticket, error) {
	key := SourceOf(addr)
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	src, ok := g.sources[key]
	if !ok {
		if g.lim.Sources > 0 && len(g.sources) >= g.lim.Sources {
			g.pruneLocked(now)
		}
		if g.lim.Sources > 0 && len(g.sources) >= g.lim.Sources {
			return nil, ErrSources
		}
		src = &source{bucket: Bucket{Rate: g.lim.SourceRate, Burst: g.lim.SourceBurst}}
		g.sources[key] = src
	}
	switch {
	case g.lim.Pending > 0 && g.pending >= g.lim.Pending:
		return nil, ErrBusy
	case g.lim.PendingPerSource > 0 && src.pending >= g.lim.PendingPerSource:
		return nil, ErrSourceBusy
	case !src.bucket.Take(now):
		// The source's own bucket first: a source over its rate must not
		// spend the tokens every other source shares.
		return nil, ErrSourceRate
	case !g.total.Take(now):
		return nil, ErrRate
	}
	g.pending++
	src.pending++
	return &Ticket{g: g, key: key}, nil
}

// pruneLocked forgets sources with nothing pending and a full bucket: they
// are exactly as a source never seen.
func (g *Gate) pruneLocked(now time.Time) {
	for k, s := range g.sources {
		if s.pending == 0 && s.bucket.full(now) {
			delete(g.sources, k)
		}
	}
}

// Pending reports the connections waiting and the bytes they hold.
func (g *Gate) Pending() (conns int, bytes int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.pending, g.bytes
}

// Ticket is one admitted connection until it authenticates or ends.
type Ticket struct {
	g     *Gate
	key   netip.Addr
	bytes int64
	done  bool
}

// Reserve claims n more bytes of the gate's memory for this connection.
func (t *Ticket) Reserve(n int64) error {
	g := t.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if t.done {
		return errors.New("limit: reserving on a released ticket")
	}
	if g.lim.Bytes > 0 && g.bytes+n > g.lim.Bytes {
		return ErrMemory
	}
	g.bytes += n
	t.bytes += n
	return nil
}

// Release returns the connection's place and memory; calling it again
// does nothing.
func (t *Ticket) Release() {
	if t == nil {
		return
	}
	g := t.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if t.done {
		return
	}
	t.done = true
	g.pending--
	g.bytes -= t.bytes
	if s, ok := g.sources[t.key]; ok {
		s.pending--
		if s.pending == 0 && s.bucket.full(g.now()) {
			delete(g.sources, t.key)
		}
	}
}
