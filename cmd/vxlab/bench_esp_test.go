package main

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// A listing as iproute2 prints `ip -s xfrm state` (ipxfrm.c), cut to the
// lines saWatch reads and the ones that look like them.
const xfrmListing = `src 10.99.0.1 dst 10.99.0.2
	proto esp spi 0x0000a1b2 reqid 16385 mode transport
	replay-window 0 seq 0x00000000 flag esn (0x10000000)
	aead rfc4106(gcm(aes)) 0x00 128
	anti-replay esn context:
	 seq-hi 0x0, seq 0x3a, oseq-hi 0x0, oseq 0x0
	 replay_window 128, bitmap-length 4
	stats:
	  replay-window 0 replay 0 failed %d
src 10.99.0.2 dst 10.99.0.1
	proto esp spi 0x0000c3d4 reqid 16386 mode transport
	replay-window 0 seq 0x00000000 flag esn (0x10000000)
	stats:
	  replay-window 0 replay %d failed 0
`

func TestSAWatchRead(t *testing.T) {
	listing := func(failed, replay int) string {
		return fmt.Sprintf(xfrmListing, failed, replay)
	}
	cases := []struct {
		name  string
		first time.Duration // when the SAs are first read, after the watch began
		// failed on the first SA and replay on the second, per reading;
		// with first 0, the first reading is the one before the window
		reads [][2]int
		want  []string
	}{
		{"nothing grew", 0, [][2]int{{3, 1}, {3, 1}}, nil},
		// There before the window: what the SA had then is not the window's.
		{"grew in the window", 0, [][2]int{{3, 1}, {21, 1}},
			[]string{"h2 SA 0x0000a1b2 (10.99.0.1→10.99.0.2, first seen at +0.0 s): failed +18, replay +0"}},
		// First read in the window: an SA made in it counts from zero.
		{"new in the window", 3 * time.Second, [][2]int{{18, 2}},
			[]string{
				"h2 SA 0x0000a1b2 (10.99.0.1→10.99.0.2, first seen at +3.0 s): failed +18, replay +0",
				"h2 SA 0x0000c3d4 (10.99.0.2→10.99.0.1, first seen at +3.0 s): failed +0, replay +2",
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := &saWatch{from: time.Now().Add(-c.first), sas: map[string]*saSeen{}, done: make(chan struct{})}
			for i, r := range c.reads {
				w.read("h2", listing(r[0], r[1]), i == 0 && c.first == 0)
			}
			close(w.done)
			got := w.refusals(func() {})
			if !slices.Equal(got, c.want) {
				t.Errorf("refusals:\n got %q\nwant %q", got, c.want)
			}
		})
	}
}
