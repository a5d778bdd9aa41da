package lab

import (
	"testing"

	"github.com/vxsec/vxsec/pathprobe"
)

// TestUDPToLeavesOutPathProbes: what tests count as VXLAN on a data port
// is the networks' traffic, never vxsec's path probes, which go to the
// same port every 5 s; anything else to the port is counted, VNI 0 with
// another payload included.
func TestUDPToLeavesOutPathProbes(t *testing.T) {
	vxlan := func(vni uint32, rest ...byte) []byte {
		return append([]byte{0x08, 0, 0, 0, byte(vni >> 16), byte(vni >> 8), byte(vni), 0}, rest...)
	}
	cases := []struct {
		name    string
		payload []byte
		port    uint16
		counted bool
		probe   bool
	}{
		{"small-probe", pathprobe.Payload(pathprobe.MagicSmall, 32), 4800, false, true},
		{"full-probe", pathprobe.Payload(pathprobe.MagicFull, 1472), 4800, false, true},
		{"network-frame", vxlan(7951, make([]byte, 64)...), 4800, true, false},
		{"vni-0-without-magic", vxlan(0, 1, 2, 3, 4, 5), 4800, true, false},
		{"probe-magic-under-a-vni", append(vxlan(7), pathprobe.Payload(pathprobe.MagicSmall, 12)[8:]...), 4800, true, false},
		{"short-datagram", []byte("x"), 4800, true, false},
		{"probe-to-another-port", pathprobe.Payload(pathprobe.MagicSmall, 32), 4801, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ps := Packets{{Proto: ProtoUDP, DstPort: tc.port, Payload: tc.payload}}
			if got := ps.CountUDP(4800) == 1; got != tc.counted {
				t.Errorf("counted to 4800: %v, want %v", got, tc.counted)
			}
			if got := len(ps.PathProbes()) == 1; got != tc.probe {
				t.Errorf("a path probe: %v, want %v", got, tc.probe)
			}
		})
	}
}
