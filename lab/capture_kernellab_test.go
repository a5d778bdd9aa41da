//go:build integration && kernellab

package lab

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestCaptureRealESP needs a kernel with ESP and AES-GCM (the kernel lab:
// scripts/kernel-lab.sh): two nodes with ESP transport SAs as vxsec
// programs them; UDP from a to b crosses the switch as ESP only, with a's
// SPI and rising sequence numbers, and never as cleartext.
func TestCaptureRealESP(t *testing.T) {
	l, a, b := twoNodes(t)
	ctx := context.Background()
	const spiAB, spiBA = 0x0a0b0001, 0x0b0a0001
	keyAB, keyBA := "0x"+randomHex(36), "0x"+randomHex(36)
	A, B := a.Addr.String(), b.Addr.String()
	for _, h := range []*Host{a, b} {
		for _, s := range [][]string{
			{"ip", "xfrm", "state", "add", "src", A, "dst", B, "proto", "esp", "spi", fmt.Sprint(spiAB), "reqid", "1",
				"mode", "transport", "flag", "esn", "replay-window", "128", "aead", "rfc4106(gcm(aes))", keyAB, "128"},
			{"ip", "xfrm", "state", "add", "src", B, "dst", A, "proto", "esp", "spi", fmt.Sprint(spiBA), "reqid", "2",
				"mode", "transport", "flag", "esn", "replay-window", "128", "aead", "rfc4106(gcm(aes))", keyBA, "128"},
		} {
			if _, err := h.Exec(ctx, s...); err != nil {
				t.Fatalf("%v (this test needs the kernel lab: a kernel with ESP and GCM)", err)
			}
		}
	}
	for _, p := range []struct {
		h        *Host
		src, dst string
		reqOut   string
		reqIn    string
	}{{a, A, B, "1", "2"}, {b, B, A, "2", "1"}} {
		for _, s := range [][]string{
			{"ip", "xfrm", "policy", "add", "src", p.src + "/32", "dst", p.dst + "/32", "dir", "out",
				"tmpl", "src", p.src, "dst", p.dst, "proto", "esp", "reqid", p.reqOut, "mode", "transport"},
			{"ip", "xfrm", "policy", "add", "src", p.dst + "/32", "dst", p.src + "/32", "dir", "in",
				"tmpl", "src", p.dst, "dst", p.src, "proto", "esp", "reqid", p.reqIn, "mode", "transport"},
		} {
			if _, err := p.h.Exec(ctx, s...); err != nil {
				t.Fatal(err)
			}
		}
	}
	c := startCaptureT(t, l.Capture, "udp or esp")
	const n = 15
	sendFrom(t, a.NS, fmt.Sprintf("udp %s 4800 %d", B, n))
	if _, err := c.Wait(ctx, time.Minute, func(ps Packets) error {
		if got := len(ps.ESP(a.Addr, b.Addr)); got < n {
			return fmt.Errorf("%d ESP packets a → b so far", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ps := stopT(t, c)
	t.Logf("%d packets:\n%s", len(ps), ps)
	if got := ps.CountUDP(4800); got != 0 {
		t.Errorf("%d cleartext datagrams to 4800 on the wire, want none", got)
	}
	ab := ps.ESP(a.Addr, b.Addr)
	if len(ab) != n {
		t.Errorf("%d ESP packets a → b, want %d", len(ab), n)
	}
	for i, p := range ab {
		if p.SPI != spiAB || p.Seq != uint32(i+1) {
			t.Errorf("ESP packet %d: spi 0x%08x seq %d, want spi 0x%08x seq %d", i, p.SPI, p.Seq, spiAB, i+1)
		}
	}
	// b's port unreachables go back in ESP too (rate-limited: some).
	if ba := ps.ESP(b.Addr, a.Addr); len(ba) == 0 || ba[0].SPI != spiBA {
		t.Errorf("b → a: %d ESP packets, want some with spi 0x%08x", len(ba), spiBA)
	}
	if got := ps.CountESP(a.Addr, b.Addr); got != n+len(ps.ESP(b.Addr, a.Addr)) {
		t.Errorf("CountESP both ways: %d", got)
	}
}
