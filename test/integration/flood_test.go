//go:build integration

package integration

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vxsec/vxsec/lab"
)

// Bounds TestAttackStrangerFlood holds the flooded member to.
const (
	floodStreams = 200
	floodRate    = 50000 // UDP packets a second
	floodFor     = 30 * time.Second
	// floodRSS bounds the member's peak resident memory.
	floodRSS = 64 << 20
	// floodLogLines bounds the lines the member logs during the flood, at
	// the lab's debug level: each kind of refusal within its budget (5
	// lines and a summary every 10 s) and the cluster's own debug lines.
	floodLogLines = 400
	// floodLoss is the ping loss allowed across the flood: none.
	floodLoss = 0
)

// TestAttackStrangerFlood: a host on the underlay that is no member floods a
// member's gossip port with 200 junk streams (junk, huge or trickled
// messages, pulls without proof, version 1 pulls, each reopened when
// closed) and 50,000 junk UDP packets a second for 30 s. The member's peak
// memory stays under 64 MiB, containers on it and on the other member
// keep talking without loss, an endpoint made during the flood reaches the
// flooded member, the cluster never suspects a member, and the member's
// log stays short. The flood's arrival is checked too: the member's
// refusal counters account for it.
func TestAttackStrangerFlood(t *testing.T) {
	c := newCluster(t, 2)
	h1, h2 := c.hosts[0], c.hosts[1]
	const vni = 7901
	ids := createEverywhere(t, c.hosts, "flood", vni, "10.79.0.0/24")
	c1 := mustRun(t, h1, "c1", ids[h1], "10.79.0.11/24")
	c2 := mustRun(t, h2, "c2", ids[h2], "10.79.0.12/24")
	waitCounts(t, h1, vni, 1, 1, 5*time.Second)
	waitCounts(t, h2, vni, 1, 1, 5*time.Second)
	reachFast(t, c2, c1.IP())

	outsider, err := c.lab.AddNode(ctxT(t), "outsider", netip.MustParseAddr("198.18.0.200"))
	if err != nil {
		t.Fatal(err)
	}
	target := netip.AddrPortFrom(h1.Addr, 7947)
	before, err := h1.GossipStats(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	_, hwmBefore, err := h1.RSS()
	if err != nil {
		t.Fatal(err)
	}
	cpuBefore, _ := h1.CPUTime()
	linesBefore, lines2Before := logLines(t, h1), logLines(t, h2)
	udpBefore := udpErrors(t, h1)

	var (
		res       lab.FloodResult
		floodErr  error
		converged time.Duration
	)
	ping, err := c2.PingAcross(ctxT(t), c1.IP(), []string{"-i", "0.1"}, func() error {
		done := make(chan struct{})
		go func() {
			defer close(done)
			res, floodErr = outsider.RunFlood(ctxT(t), lab.Flood{
				Target: target, Streams: floodStreams, PacketsPerSecond: floodRate, Duration: floodFor,
			})
		}()
		// Mid-flood, a container starts on the other member: its
		// endpoint must reach the flooded one (pulls and gossip go on).
		// A sleep: the point is a time well inside the flood, not an event.
		time.Sleep(floodFor / 3)
		start := time.Now()
		mustRun(t, h2, "c3", ids[h2], "10.79.0.13/24")
		converged = waitCounts(t, h1, vni, 1, 2, 10*time.Second)
		t.Logf("an endpoint made on h2 mid-flood reached h1 in %v (from CreateEndpoint: %v)", converged.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		<-done
		return floodErr
	})
	if err != nil {
		t.Fatal(err)
	}
	linesDuring := logLines(t, h1) - linesBefore
	after, err := h1.GossipStats(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	rss, hwm, err := h1.RSS()
	if err != nil {
		t.Fatal(err)
	}
	cpuAfter, _ := h1.CPUTime()
	udpDropped := udpErrors(t, h1) - udpBefore

	refused := map[string]uint64{}
	var streamsRefused, packetsRefused uint64
	for k, v := range after.Refused {
		if d := v - before.Refused[k]; d > 0 {
			refused[k] = d
			if strings.HasPrefix(k, "packet-") {
				packetsRefused += d
			} else {
				streamsRefused += d
			}
		}
	}
	t.Logf("flood: %d stream connections (%d refused at connect, %d closed by h1, %d bytes back), %d UDP packets (%d send errors) in %v",
		res.Dials, res.DialErrors, res.Closed, res.Received, res.Packets, res.SendErrors, res.Elapsed.Round(time.Millisecond))
	t.Logf("h1 refused %d streams and %d packets; kernel dropped %d at the socket; by reason %v", streamsRefused, packetsRefused, udpDropped, refused)
	t.Logf("h1 accepted during the flood: %v (before %v)", after.Accepted, before.Accepted)
	t.Logf("h1 memory: VmHWM %.1f MiB (before the flood %.1f MiB), VmRSS %.1f MiB now; CPU %v over the flood",
		mib(hwm), mib(hwmBefore), mib(rss), (cpuAfter - cpuBefore).Round(10*time.Millisecond))
	t.Logf("ping c2 → c1 across the flood: %d sent, %d received, %d lost", ping.Sent, ping.Received, ping.Loss())
	t.Logf("h1 logged %d lines during the flood; by message: %s", linesDuring, logSummary(t, h1, linesBefore))

	if hwm >= floodRSS {
		t.Errorf("h1's peak RSS %.1f MiB, bound %d MiB", mib(hwm), floodRSS>>20)
	}
	if ping.Sent < int(floodFor/(100*time.Millisecond))*9/10 || ping.Loss() > floodLoss {
		t.Errorf("ping across the flood: %d sent, %d lost; want at least %d sent and at most %d lost",
			ping.Sent, ping.Loss(), int(floodFor/(100*time.Millisecond))*9/10, floodLoss)
	}
	if linesDuring > floodLogLines {
		t.Errorf("h1 logged %d lines during the flood, bound %d", linesDuring, floodLogLines)
	}
	// The positive control: the flood reached h1. Every packet sent was
	// refused by h1 or dropped by its kernel for want of buffer, and the
	// streams were refused in their thousands.
	if res.Packets < int64(floodRate*floodFor.Seconds()*0.9) {
		t.Errorf("the flooder sent %d packets, want about %d: the flood was not the flood asked for", res.Packets, int(floodRate*floodFor.Seconds()))
	}
	if got := int64(packetsRefused + udpDropped); got < res.Packets*95/100 {
		t.Errorf("h1 refused %d and dropped %d of %d packets sent: the flood did not arrive", packetsRefused, udpDropped, res.Packets)
	}
	if streamsRefused < floodStreams || res.Received > res.Dials*33 {
		t.Errorf("h1 refused %d streams; the flooder got %d bytes back over %d connections (at most a pull greeting each)", streamsRefused, res.Received, res.Dials)
	}
	if n := after.Accepted["stream"] - before.Accepted["stream"]; n > 200 {
		t.Errorf("h1 handed memberlist %d streams during the flood: more than the members' own", n)
	}
	// No member was declared failed (which would drop its endpoints after
	// the grace). A suspicion, refuted at once, is no loss: it is told,
	// not refused (a probe packet the kernel dropped for a full buffer on
	// a machine whose CPUs the flooder shares is one).
	for h, from := range map[*lab.Host]int{h1: linesBefore, h2: lines2Before} {
		if s := logLinesWith(t, h, from, "EventMemberFailed", "as failed, suspect timeout"); s != "" {
			t.Errorf("%s declared a member failed during the flood:\n%s", h.Name, s)
		}
		if s := logLinesWith(t, h, from, "Suspect"); s != "" {
			t.Logf("%s suspected a member during the flood (refuted):\n%s", h.Name, s)
		}
	}
	c.waitMembers(t, c.hosts, c.hosts)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// logLines counts the lines of h's daemon log.
func logLines(t *testing.T, h *lab.Host) int {
	t.Helper()
	data, err := os.ReadFile(h.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(data, []byte("\n"))
}

// logSummary counts h's log lines after the first from by message, most
// frequent first.
func logSummary(t *testing.T, h *lab.Host, from int) string {
	t.Helper()
	data, err := os.ReadFile(h.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	counts := map[string]int{}
	for _, l := range lines[min(from, len(lines)):] {
		counts[logMsg.FindString(l)]++
	}
	var msgs []string
	for m := range counts {
		msgs = append(msgs, m)
	}
	sort.Slice(msgs, func(i, j int) bool { return counts[msgs[i]] > counts[msgs[j]] })
	var b strings.Builder
	for _, m := range msgs {
		fmt.Fprintf(&b, "\n    %4d %s", counts[m], m)
	}
	return b.String()
}

// logMsg is a slog text line's message, cut where a memberlist line's
// variable part starts.
var logMsg = regexp.MustCompile(`msg=("[^":=]*|\S+)`)

// logLinesWith returns the lines of h's daemon log after the first from
// that contain any of words.
func logLinesWith(t *testing.T, h *lab.Host, from int, words ...string) string {
	t.Helper()
	data, err := os.ReadFile(h.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	var out []string
	for _, l := range lines[min(from, len(lines)):] {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// udpErrors is the host namespace's count of UDP datagrams the kernel
// dropped for a full receive buffer.
func udpErrors(t *testing.T, h *lab.Host) uint64 {
	t.Helper()
	out, err := h.Exec(ctxT(t), "cat", "/proc/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "RcvbufErrors" && i < len(f) {
				v, _ := strconv.ParseUint(f[i], 10, 64)
				return v
			}
		}
	}
	t.Fatalf("no Udp RcvbufErrors in /proc/net/snmp:\n%s", out)
	return 0
}
