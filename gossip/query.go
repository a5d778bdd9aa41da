package gossip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/serf/serf"
)

// MaxAnswer bounds a query's answer: serf refuses a response whose
// encoding exceeds its QueryResponseSizeLimit (1024 bytes), and the
// encoding adds the query's time, ID and the answering node's name (at most
// an IPv6 address) to the payload.
const MaxAnswer = 1024 - 128

// queriesAtOnce bounds the queries answered at once: each may ask the
// kernel (the doctor's checks), and every member can send them.
const queriesAtOnce = 4

// DefaultAskTimeout is how long Ask waits for answers when its context
// has no deadline.
const DefaultAskTimeout = 3 * time.Second

// QueryHandler answers a query of the cluster's: name and payload as sent,
// the answer at most MaxAnswer bytes (nil: no answer). It runs on a
// goroutine of its own and must return before the asker stops waiting
// (seconds).
type QueryHandler func(name string, payload []byte) []byte

// Answer is one member's answer to Ask.
type Answer struct {
	Payload []byte
	// RTT is how long after the query was sent the answer arrived.
	RTT time.Duration
	// At is when it arrived (time.Now, with its monotonic reading).
	At time.Time
}

// Ask sends a query to every member, this host included, and returns their
// answers by member name: when every member alive when it was sent has
// answered, or at ctx's deadline (DefaultAskTimeout without one). Queries
// travel as gossip does, under the cluster's keys: only holders of the
// cluster secret can ask or answer.
func (c *Cluster) Ask(ctx context.Context, name string, payload []byte) (map[string]Answer, error) {
	timeout := DefaultAskTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("asking the cluster %q: %w", name, context.DeadlineExceeded)
	}
	alive := 0
	for _, m := range c.serf.Members() {
		if m.Status == serf.StatusAlive {
			alive++
		}
	}
	sent := time.Now()
	resp, err := c.serf.Query(name, payload, &serf.QueryParam{Timeout: timeout, RequestAck: false})
	if err != nil {
		return nil, fmt.Errorf("asking the cluster %q: %w", name, err)
	}
	defer resp.Close()
	out := map[string]Answer{}
	for len(out) < alive {
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				// The deadline is how long the asker waits: what
				// arrived by then is the answer.
				return out, nil
			}
			return out, fmt.Errorf("asking the cluster %q: %w", name, ctx.Err())
		case r, ok := <-resp.ResponseCh():
			if !ok {
				return out, nil
			}
			now := time.Now()
			out[r.From] = Answer{Payload: r.Payload, RTT: now.Sub(sent), At: now}
		}
	}
	return out, nil
}

// answer hands a query to Config.Queries on a goroutine of its own, at
// most queriesAtOnce at a time: a query beyond them is refused (counted,
// unanswered), so that no member can make this host work without bound.
func (c *Cluster) answer(q *serf.Query) {
	if c.cfg.Queries == nil {
		return
	}
	select {
	case c.querySlots <- struct{}{}:
	default:
		c.stats.add("query-busy")
		c.lim.Log(slog.LevelWarn, "query", "refusing a query: too many answered at once", "query", q.Name, "from", q.SourceNode(), "at_once", queriesAtOnce)
		return
	}
	c.spawn(func() {
		defer func() { <-c.querySlots }()
		resp := c.cfg.Queries(q.Name, q.Payload)
		if resp == nil {
			return
		}
		if len(resp) > MaxAnswer {
			c.log.Error("not answering a query: the answer is over the bound", "query", q.Name, "bytes", len(resp), "max", MaxAnswer)
			return
		}
		if err := q.Respond(resp); err != nil {
			c.lim.Log(slog.LevelWarn, "query", "answering a query", "query", q.Name, "from", q.SourceNode(), "err", err)
		}
	})
}
