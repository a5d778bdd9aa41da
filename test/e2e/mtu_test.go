//go:build e2e

package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// (d) The container's vxsec interface MTU is the underlay MTU minus 50 (VXLAN
// over IPv4); a full-size packet with DF set passes and one byte more is
// refused locally with "message too long", not lost.
func TestMTU(t *testing.T) {
	requirePlugin(t)
	dev, _, hostMTU := underlay(t)
	t.Logf("underlay: %s, MTU %d", dev, hostMTU)
	cases := []struct {
		name     string
		opts     []string
		underlay int
	}{
		{"underlay-default", nil, hostMTU},
		{"opt-mtu-1400", []string{"--opt", "com.docker.network.driver.mtu=1400"}, 1400},
		{"opt-mtu-1300", []string{"--opt", "com.docker.network.driver.mtu=1300"}, 1300},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.underlay - 50
			subnet := fmt.Sprintf("10.36.%d.0/24", i)
			n := createNetwork(t, "d", append([]string{"--subnet", subnet}, tc.opts...)...)
			c1 := runContainer(t, n)
			c2 := runContainer(t, n)
			for _, c := range []*container{c1, c2} {
				c.vxsecIface(t)
				got, err := strconv.Atoi(c.mustExec(t, "cat", "/sys/class/net/eth0/mtu"))
				if err != nil || got != want {
					t.Fatalf("%s: eth0 MTU is %d (%v), want %d (underlay %d - 50)", c.Name, got, err, want, tc.underlay)
				}
			}
			if l := mustNetworkLink(t, n); l.MTU != want {
				t.Errorf("host VXLAN link %s has MTU %d, want %d", l.Name, l.MTU, want)
			}

			// Full size with DF: ICMP payload = MTU - 20 (IP) - 8 (ICMP).
			out, err := c1.nsenter(20*time.Second, "ping", "-n", "-M", "do", "-s", strconv.Itoa(want-28), "-c", "3", "-W", "2", c2.IP)
			if err != nil || !strings.Contains(out, " 0% packet loss") {
				t.Fatalf("DF ping of %d bytes (a %d-byte packet) %s -> %s should pass: %v\n%s", want-28, want, c1.Name, c2.IP, err, out)
			}
			// One byte more must be refused by the sender's own kernel.
			start := time.Now()
			out, err = c1.nsenter(20*time.Second, "ping", "-n", "-M", "do", "-s", strconv.Itoa(want-27), "-c", "1", "-W", "2", c2.IP)
			took := time.Since(start)
			if err == nil {
				t.Fatalf("DF ping of %d bytes (one more than the MTU allows) passed:\n%s", want-27, out)
			}
			if !strings.Contains(strings.ToLower(out), "message too long") {
				t.Fatalf("DF ping of %d bytes failed, but not with a local \"message too long\" error (took %s):\n%s", want-27, took.Round(time.Millisecond), out)
			}
			t.Logf("MTU %d: %d-byte DF ping passes; %d bytes: %s", want, want-28, want-27, firstLineWith(out, "too long"))
		})
	}
}

func firstLineWith(s, sub string) string {
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(strings.ToLower(line), sub) {
			return strings.TrimSpace(line)
		}
	}
	return ""
}
