package gossip

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vxsec/vxsec/internal/testutil"
)

// TestAsk: a query reaches every member, the asker included, each answers
// with its own handler's bytes, and Ask returns as soon as all have
// answered. An answer at the bound arrives; one over it is not sent. A
// member answers at most queriesAtOnce queries at once and refuses (and
// counts) the next.
func TestAsk(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	var (
		release = make(chan struct{})
		entered = make(chan struct{}, 16)
	)
	handler := func(self string) QueryHandler {
		return func(name string, payload []byte) []byte {
			switch name {
			case "echo":
				return append([]byte(self+":"), payload...)
			case "big":
				n := MaxAnswer
				if self == "127.0.0.53" {
					n++ // over the bound: not sent
				}
				return bytes.Repeat([]byte{'x'}, n)
			case "block":
				if self != "127.0.0.52" {
					return nil
				}
				entered <- struct{}{}
				<-release
				return []byte("late")
			}
			return nil
		}
	}
	a, _, portA := startNodeConfig(t, Config{Addr: netip.MustParseAddr("127.0.0.51"), Secret: secret, Queries: handler("127.0.0.51")})
	seed := []string{net.JoinHostPort("127.0.0.51", strconv.Itoa(portA))}
	b, _, _ := startNodeConfig(t, Config{Addr: netip.MustParseAddr("127.0.0.52"), Secret: secret, Seeds: seed, Queries: handler("127.0.0.52")})
	startNodeConfig(t, Config{Addr: netip.MustParseAddr("127.0.0.53"), Secret: secret, Seeds: seed, Queries: handler("127.0.0.53")})
	testutil.Eventually(t, 10*time.Second, "A sees three members", func() bool { return len(a.Members()) == 3 })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	got, err := a.Ask(ctx, "echo", []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Ask took %v with every member answering: it should return once all have", took)
	}
	for _, m := range []string{"127.0.0.51", "127.0.0.52", "127.0.0.53"} {
		ans, ok := got[m]
		if !ok || string(ans.Payload) != m+":hello" || ans.RTT <= 0 || ans.At.IsZero() {
			t.Errorf("answer of %s: %q (rtt %v), present %v; want %q", m, ans.Payload, ans.RTT, ok, m+":hello")
		}
	}
	if len(got) != 3 {
		t.Errorf("%d answers, want 3: %v", len(got), got)
	}

	short, cancelShort := context.WithTimeout(context.Background(), time.Second)
	defer cancelShort()
	big, err := a.Ask(short, "big", nil)
	if err != nil {
		t.Fatal(err)
	}
	for m, want := range map[string]bool{"127.0.0.51": true, "127.0.0.52": true, "127.0.0.53": false} {
		ans, ok := big[m]
		if ok != want || (ok && len(ans.Payload) != MaxAnswer) {
			t.Errorf("answer of %d bytes from %s: present %v (%d bytes), want present %v", MaxAnswer, m, ok, len(ans.Payload), want)
		}
	}

	// B's handler blocks: queriesAtOnce queries hold its slots, the next
	// is refused and counted.
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(release)
	for i := 0; i < queriesAtOnce; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			a.Ask(ctx, "block", nil)
		}()
		select {
		case <-entered:
		case <-time.After(5 * time.Second):
			t.Fatalf("B's handler did not receive query %d", i+1)
		}
	}
	if n := b.Stats().Refused["query-busy"]; n != 0 {
		t.Fatalf("B refused %d queries before it was busy", n)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		a.Ask(ctx, "block", nil)
	}()
	testutil.Eventually(t, 5*time.Second, "B refuses the query beyond its slots", func() bool { return b.Stats().Refused["query-busy"] == 1 })
	select {
	case <-entered:
		t.Fatal("B's handler ran a query beyond its slots")
	default:
	}
}
