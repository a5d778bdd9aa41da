package pathprobe

import (
	"encoding/binary"
	"testing"
)

// TestPayload: a probe is VXLAN with VNI 0 and its magic at bytes 8..11,
// at the size asked, and the full one makes the outer packet the MTU.
func TestPayload(t *testing.T) {
	cases := []struct {
		name  string
		magic uint32
		size  int
		want  int
	}{
		{"small", MagicSmall, smallLen, smallLen},
		{"full-ipv4-1500", MagicFull, FullSize(1500, false), 1472},
		{"full-ipv6-1500", MagicFull, FullSize(1500, true), 1452},
		{"below-the-header", MagicSmall, 3, HeaderLen},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := Payload(tc.magic, tc.size)
			if len(p) != tc.want {
				t.Fatalf("len %d, want %d", len(p), tc.want)
			}
			if p[0] != 0x08 || p[4] != 0 || p[5] != 0 || p[6] != 0 {
				t.Fatalf("VXLAN header % x: want flags 0x08 and VNI 0", p[:8])
			}
			if got := binary.BigEndian.Uint32(p[8:12]); got != tc.magic {
				t.Fatalf("magic %#x, want %#x", got, tc.magic)
			}
		})
	}
}
