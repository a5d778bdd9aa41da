package main

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/vxsec/vxsec/internal/benchdata"
	"github.com/vxsec/vxsec/ipsec"
	"github.com/vxsec/vxsec/lab"
)

// benchEncryption needs a kernel with ESP and GCM: `make bench` runs it in
// the kernel lab (TCG), whose emulated CPU makes every figure slower than
// real hardware; ratios measured in one run are what carries over. It
// fills rec with the rotations, the join and every throughput run.
func benchEncryption(ctx context.Context, w io.Writer, bin string, o benchOpts, rec *benchdata.Encryption) (string, error) {
	const evni, pvni = 1400, 1401
	fmt.Fprintf(w, "\n== encryption: rotation loss, time to encrypted reachability for a new host, encrypted vs plain throughput, ESP in UDP vs native ESP\n")
	if err := ipsec.Probe(); err != nil {
		return "", fmt.Errorf("this kernel cannot run encrypted networks (run it in the kernel lab: scripts/kernel-lab.sh -- bin/vxlab bench -only encryption): %w", err)
	}
	if _, err := exec.LookPath("iperf3"); err != nil {
		return "", fmt.Errorf("iperf3 is missing: apt-get install iperf3")
	}
	c, err := newCluster(ctx, bin, 3, benchLogLevel)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if _, err := c.waitAlive(ctx, 60*time.Second); err != nil {
		return "", fmt.Errorf("cluster did not form: %w", err)
	}
	h1, h2, h3 := c.hosts[0], c.hosts[1], c.hosts[2]
	for _, h := range c.hosts[:2] {
		if err := h.Client().CreateNetwork(ctx, "en-"+h.Name, map[string]string{"vni": fmt.Sprint(evni), "encrypted": ""}, "10.47.0.0/24", ""); err != nil {
			return "", err
		}
		if err := h.Client().CreateNetwork(ctx, "pl-"+h.Name, map[string]string{"vni": fmt.Sprint(pvni)}, "10.48.0.0/24", ""); err != nil {
			return "", err
		}
	}
	e1, err := h1.Run(ctx, "e1", "en-h1", "10.47.0.1/24")
	if err != nil {
		return "", err
	}
	e2, err := h2.Run(ctx, "e2", "en-h2", "10.47.0.2/24")
	if err != nil {
		return "", err
	}
	p1, err := h1.Run(ctx, "p1", "pl-h1", "10.48.0.1/24")
	if err != nil {
		return "", err
	}
	p2, err := h2.Run(ctx, "p2", "pl-h2", "10.48.0.2/24")
	if err != nil {
		return "", err
	}
	if err := waitReply(ctx, e1, e2.IP(), 60*time.Second); err != nil {
		return "", fmt.Errorf("encrypted containers do not reach each other: %w", err)
	}
	// VXSEC_ESP_ENCAP=auto: in UDP until the hosts' probes have arrived.
	if err := lab.WaitEncap(ctx, c.hosts[:2], "esp", 60*time.Second); err != nil {
		return "", fmt.Errorf("h1 and h2 never moved to native ESP: %w", err)
	}

	// Rotation: ping at 100/s across forced rotations, each awaited.
	const rotations = 20
	fmt.Fprintf(w, `   rotation method: 2 hosts with an encrypted network, ping -i 0.01 from a container on h1 to
   one on h2 while %d rotations run back to back (vxsec rotate on h1 and h2 alternately); each
   rotation is awaited until both hosts send with the new epoch and the old one is erased.
`, rotations)
	var took []time.Duration
	r, err := e1.PingAcross(ctx, e2.IP(), []string{"-i", "0.01", "-W", "1"}, func() error {
		for i := 0; i < rotations; i++ {
			h := c.hosts[i%2]
			start := time.Now()
			if err := h.Client().Call(ctx, "VxSec.Rotate", struct{}{}, nil); err != nil {
				return err
			}
			if err := lab.WaitKeyed(ctx, c.hosts[:2], 60*time.Second); err != nil {
				return fmt.Errorf("rotation %d: %w", i+1, err)
			}
			took = append(took, time.Since(start))
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	rec.RotationS, rec.PingSent, rec.PingReceived = seconds(took), r.Sent, r.Received
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	fmt.Fprintf(w, "   rotation result: %d rotations, each complete in p50 %s, max %s; ping sent %d, received %d, lost %d\n",
		rotations, ms(percentile(took, 50)), ms(took[len(took)-1]), r.Sent, r.Received, r.Sent-r.Received)
	missed := ""
	if r.Sent != r.Received {
		missed = fmt.Sprintf("%d packets lost across rotations", r.Sent-r.Received)
	}

	// A new host: from its network create to its container's first
	// encrypted reply from h1's.
	fmt.Fprintf(w, `   join method: h3 is a running member with no encrypted network; the clock starts when it
   creates the network, then runs a container (remote API calls as dockerd makes them), and stops
   at the first reply of the container on h1 to a ping every 10 ms.
`)
	start := time.Now()
	if err := h3.Client().CreateNetwork(ctx, "en-h3", map[string]string{"vni": fmt.Sprint(evni), "encrypted": ""}, "10.47.0.0/24", ""); err != nil {
		return "", err
	}
	e3, err := h3.Run(ctx, "e3", "en-h3", "10.47.0.3/24")
	if err != nil {
		return "", err
	}
	if err := waitReply(ctx, e3, e1.IP(), 60*time.Second); err != nil {
		return "", err
	}
	joined := time.Since(start)
	rec.JoinS = joined.Seconds()
	fmt.Fprintf(w, "   join result: first encrypted reply %s after the new host created the network\n", ms(joined))

	// Throughput, encrypted vs plain, same hosts, alternating.
	fmt.Fprintf(w, `   throughput method: iperf3 -t %d -O 1 (one TCP stream) container h1 → container h2, on the
   encrypted network and on a plain one between the same hosts, %d runs each, alternating (ABBA).
   Under TCG the CPU is emulated (AES-NI included), so the ratio overstates the cost on hardware.
`, o.seconds, o.runs)
	sides := []pair{
		{name: "encrypted", client: e1.NS, server: e2.NS, serverIP: e2.IP()},
		{name: "plain", client: p1.NS, server: p2.NS, serverIP: p2.IP()},
	}
	results, err := iperfABBA(ctx, w, sides, o, mbits)
	if err != nil {
		return "", err
	}
	rec.Seconds, rec.Runs = o.seconds, o.runs
	rec.Throughput = sidesOf(sides, results)
	me, mp := median(results["encrypted"]), median(results["plain"])
	fmt.Fprintf(w, "   throughput result: encrypted median %.1f Mbit/s, plain median %.1f Mbit/s, ratio %.3f\n", me/1e6, mp/1e6, me/mp)

	espMissed, err := benchHandBuiltESP(ctx, w, c, e1, e2, evni, o, rec)
	if err != nil {
		return "", fmt.Errorf("against hand-built ESP: %w", err)
	}
	if espMissed != "" {
		missed = strings.TrimPrefix(missed+", "+espMissed, ", ")
	}

	// ESP in UDP against native ESP: h3 restarts asking for UDP, so its
	// pairs (h1-h3) carry ESP in UDP while h1-h2 stays native.
	h3.Env = append(h3.Env, "VXSEC_ESP_ENCAP=udp")
	if err := h3.Restart(ctx, syscall.SIGTERM); err != nil {
		return "", err
	}
	if err := lab.WaitEncap(ctx, []*lab.Host{h1, h3}, "udp", 60*time.Second); err != nil {
		return "", fmt.Errorf("after h3 asked for ESP in UDP: %w", err)
	}
	if err := lab.WaitEncap(ctx, c.hosts[:2], "esp", 60*time.Second); err != nil {
		return "", fmt.Errorf("after h3 asked for ESP in UDP, h1 and h2: %w", err)
	}
	if err := waitReply(ctx, e1, e3.IP(), 60*time.Second); err != nil {
		return "", err
	}
	st, err := h1.Status(ctx)
	if err != nil {
		return "", err
	}
	native, _ := st.Peer(h2.Addr.String())
	inUDP, _ := st.Peer(h3.Addr.String())
	if native.Encap != "esp" || inUDP.Encap != "udp" {
		return "", fmt.Errorf("h1 sends to h2 in %q and to h3 in %q, want esp and udp", native.Encap, inUDP.Encap)
	}
	fmt.Fprintf(w, `   ESP-in-UDP method: h3 restarted with VXSEC_ESP_ENCAP=udp, so h1 → h3 travels as ESP in UDP
   (port 4802) while h1 → h2 stays native ESP; iperf3 as above on the encrypted network, container
   h1 → h2 and h1 → h3, %d runs each, alternating (ABBA).
`, o.runs)
	sides = []pair{
		{name: "esp", client: e1.NS, server: e2.NS, serverIP: e2.IP()},
		{name: "esp-in-udp", client: e1.NS, server: e3.NS, serverIP: e3.IP()},
	}
	results, err = iperfABBA(ctx, w, sides, o, mbits)
	if err != nil {
		return "", err
	}
	rec.Encap = sidesOf(sides, results)
	mn, mu := median(results["esp"]), median(results["esp-in-udp"])
	fmt.Fprintf(w, "   ESP-in-UDP result: native ESP median %.1f Mbit/s, ESP in UDP median %.1f Mbit/s, ratio %.3f\n", mn/1e6, mu/1e6, mu/mn)
	return missed, nil
}

// waitReply pings dst from c every 10 ms until the first reply.
func waitReply(ctx context.Context, c *lab.Container, dst string, timeout time.Duration) error {
	return lab.WaitFor(ctx, timeout, func() error {
		r, err := c.Ping(ctx, dst, "-c", "1", "-W", "1", "-w", "1", "-i", "0.01")
		if err != nil {
			return err
		}
		if r.Received == 0 {
			return fmt.Errorf("%s → %s: no reply", c.Name, dst)
		}
		return nil
	})
}
