package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vxsec/vxsec/gossip"
)

// A flood is what a stranger on the underlay can throw at a member's
// gossip port without any secret: streams that open with junk, trickle
// or claim huge messages and then hold, and UDP junk at a given rate. It
// runs as a process of its own in the stranger's namespace (this test
// binary started again, its TestMain calling FloodMain), so that no
// goroutine of the caller changes namespace.

// Flood describes one flood.
type Flood struct {
	// Target is the member's gossip port; it must be a lab address.
	Target netip.AddrPort
	// Streams are held open at once, each reopened when the member closes
	// it.
	Streams int
	// PacketsPerSecond of UDP junk.
	PacketsPerSecond int
	Duration         time.Duration
}

// FloodResult is what the flooder did.
type FloodResult struct {
	// Dials counts stream connections made; DialErrors those refused or
	// failed; Closed those the member closed (or reset).
	Dials, DialErrors, Closed int64
	// Received counts the bytes members sent on the streams: only pull
	// greetings (the server's nonce) should come back.
	Received int64
	// Packets counts UDP datagrams sent, SendErrors those the local
	// kernel refused.
	Packets, SendErrors int64
	Elapsed             time.Duration
}

const floodEnv = "VXSEC_LAB_FLOOD"

// RunFlood runs the flood from node's namespace and waits for its end.
func (node *Host) RunFlood(ctx context.Context, f Flood) (FloodResult, error) {
	if !Underlay.Contains(f.Target.Addr()) {
		return FloodResult{}, fmt.Errorf("lab: flood target %s is not a lab address", f.Target)
	}
	self, err := os.Executable()
	if err != nil {
		return FloodResult{}, fmt.Errorf("lab: %w", err)
	}
	spec, _ := json.Marshal(f)
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", node.NS, self)
	cmd.Env = append(os.Environ(), floodEnv+"="+string(spec))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return FloodResult{}, fmt.Errorf("lab: flooder in %s: %w: %s", node.NS, err, strings.TrimSpace(errOut.String()))
	}
	var r FloodResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		return r, fmt.Errorf("lab: flooder said %q: %w", out.String(), err)
	}
	return r, nil
}

// FloodMain is the flooder: when this process was started by RunFlood it
// floods, prints its result and exits; otherwise it returns at once.
func FloodMain() {
	spec := os.Getenv(floodEnv)
	if spec == "" {
		return
	}
	var f Flood
	if err := json.Unmarshal([]byte(spec), &f); err != nil {
		fmt.Fprintln(os.Stderr, "flooder:", err)
		os.Exit(2)
	}
	if !Underlay.Contains(f.Target.Addr()) {
		fmt.Fprintln(os.Stderr, "flooder: target is not a lab address:", f.Target)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.Duration)
	defer cancel()
	r := flood(ctx, f)
	json.NewEncoder(os.Stdout).Encode(r)
	os.Exit(0)
}

func flood(ctx context.Context, f Flood) FloodResult {
	var r FloodResult
	var dials, dialErrs, closed, received, packets, sendErrs atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for i := range f.Streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				d := net.Dialer{Timeout: time.Second}
				conn, err := d.DialContext(ctx, "tcp", f.Target.String())
				if err != nil {
					dialErrs.Add(1)
				} else {
					dials.Add(1)
					n := holdStream(ctx, conn, i)
					received.Add(n)
					if ctx.Err() == nil {
						closed.Add(1)
					}
				}
				// Reopen soon, as a stranger keeping up the pressure would.
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		n, errs := sendJunk(ctx, f.Target, f.PacketsPerSecond)
		packets.Store(n)
		sendErrs.Store(errs)
	}()
	wg.Wait()
	r.Dials, r.DialErrors, r.Closed, r.Received = dials.Load(), dialErrs.Load(), closed.Load(), received.Load()
	r.Packets, r.SendErrors = packets.Load(), sendErrs.Load()
	r.Elapsed = time.Since(start)
	return r
}

// holdStream plays one kind of stranger on conn until the member closes
// it or ctx ends, and returns how many bytes the member sent.
func holdStream(ctx context.Context, conn net.Conn, kind int) int64 {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	junk := make([]byte, 64)
	rand.Read(junk)
	var opening []byte
	switch kind % 5 {
	case 0: // junk at once
		opening = junk
	case 1: // an encrypted message of 1 MiB claimed, trickled
		opening = binary.BigEndian.AppendUint32([]byte{10}, 1<<20)
	case 2: // an encrypted message over any bound claimed
		opening = binary.BigEndian.AppendUint32([]byte{10}, 1<<30)
	case 3: // a table pull, the proof trickled
		opening = []byte{0xA8}
	case 4: // a version 1 table pull
		opening = append([]byte{0xA7}, junk[:32]...)
	}
	conn.Write(opening)
	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		n, _ := io.Copy(io.Discard, conn)
		got.Store(n)
	}()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return got.Load()
		case <-ctx.Done():
			<-done
			return got.Load()
		case <-tick.C:
			conn.Write(junk[:1])
		}
	}
}

// sendJunk sends UDP junk to target at rate packets a second until ctx
// ends; half the packets look like memberlist's encrypted ones (a version
// byte and the length), which a member must check against its keys.
func sendJunk(ctx context.Context, target netip.AddrPort, rate int) (sent, errs int64) {
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(target))
	if err != nil {
		return 0, 1
	}
	defer conn.Close()
	var pool [256][]byte
	for i := range pool {
		p := make([]byte, 40+i*5)
		rand.Read(p)
		if i%2 == 0 {
			p[0] = 1
		}
		pool[i] = p
	}
	start := time.Now()
	for ctx.Err() == nil {
		due := int64(time.Since(start).Seconds() * float64(rate))
		for sent < due {
			if _, err := conn.Write(pool[sent%256]); err != nil {
				errs++
				if errors.Is(err, net.ErrClosed) {
					return sent, errs
				}
			}
			sent++
		}
		time.Sleep(time.Millisecond)
	}
	return sent, errs
}

// GossipStats asks the host's daemon what its gossip port let through and
// refused.
func (h *Host) GossipStats(ctx context.Context) (gossip.Stats, error) {
	var st struct{ Gossip *gossip.Stats }
	if err := h.Client().Call(ctx, "VxSec.Status", struct{}{}, &st); err != nil {
		return gossip.Stats{}, err
	}
	if st.Gossip == nil {
		return gossip.Stats{}, errors.New("lab: the daemon reports no gossip statistics (no cluster yet?)")
	}
	return *st.Gossip, nil
}
