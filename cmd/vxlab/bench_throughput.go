package main

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"

	"github.com/vxsec/vxsec/internal/benchdata"
	"github.com/vxsec/vxsec/lab"
	"github.com/vxsec/vxsec/vxlan"
)

// benchThroughput fills rec with every run of both sides.
func benchThroughput(ctx context.Context, w io.Writer, bin string, o benchOpts, rec *benchdata.Throughput) (string, error) {
	const vni, baseVNI, basePort = 1300, 1301, 4803
	fmt.Fprintf(w, "\n== data path: TCP throughput container → container across 2 hosts, vxsec vs a hand-built VXLAN\n")
	fmt.Fprintf(w, `   method: 2 hosts of one cluster. vxsec side: a network (vni %d), one container per host made
   through the remote API. Hand-built side, between the same two host namespaces: a VXLAN device
   made with ip link (id %d, dstport %d, nolearning, proxy, the same MTU as vxsec's device), a
   static FDB entry and a permanent neighbour entry for the peer container, and a bridge-mode
   macvlan on it moved into a container namespace, as vxsec does. iperf3 -t %d -O 1 (one TCP
   stream), client on host 1, server on host 2; %d runs per side, alternating (ABBA order).
   The figure is the receiver's bits/s; the ratio is median(vxsec) / median(hand-built).
`, vni, baseVNI, basePort, o.seconds, o.runs)
	if _, err := exec.LookPath("iperf3"); err != nil {
		return "", fmt.Errorf("iperf3 is missing: apt-get install iperf3")
	}
	c, err := newCluster(ctx, bin, 2, benchLogLevel)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if _, err := c.waitAlive(ctx, 20*time.Second); err != nil {
		return "", fmt.Errorf("cluster did not form: %w", err)
	}
	h1, h2 := c.hosts[0], c.hosts[1]
	for _, h := range c.hosts {
		if err := h.Client().CreateNetwork(ctx, "tp-"+h.Name, map[string]string{"vni": fmt.Sprint(vni)}, "10.45.0.0/24", ""); err != nil {
			return "", err
		}
	}
	t1, err := h1.Run(ctx, "t1", "tp-h1", "10.45.0.1/24")
	if err != nil {
		return "", err
	}
	t2, err := h2.Run(ctx, "t2", "tp-h2", "10.45.0.2/24")
	if err != nil {
		return "", err
	}
	if _, err := waitRemote(ctx, c.hosts, vni, func(*lab.Host) int { return 1 }, time.Now(), 20*time.Millisecond, 10*time.Second); err != nil {
		return "", err
	}
	if r, err := t1.Ping(ctx, t2.IP(), "-c", "1", "-w", "3"); err != nil || r.Received == 0 {
		return "", fmt.Errorf("vxsec containers do not reach each other: %v %+v", err, r)
	}

	// The hand-built twin.
	mtu, err := h1.Exec(ctx, "cat", fmt.Sprintf("/sys/class/net/vxsec-%d/mtu", vni))
	if err != nil {
		return "", err
	}
	mtu = strings.TrimSpace(mtu)
	base := twin{vni: baseVNI, port: basePort, mtu: mtu, ends: [2]twinEnd{
		{h1, c.Name() + "-hb1", "10.46.0.1", "02:00:0a:2e:00:01"},
		{h2, c.Name() + "-hb2", "10.46.0.2", "02:00:0a:2e:00:02"},
	}}
	cleanup, err := base.build(ctx)
	if err != nil {
		return "", err
	}
	defer cleanup()
	dv, _ := h1.Exec(ctx, "ip", "-d", "link", "show", vxlan.LinkName(vni))
	db, _ := h1.Exec(ctx, "ip", "-d", "link", "show", "hbx")
	fmt.Fprintf(w, "   vxsec's device on h1:\n%s\n   hand-built device on h1:\n%s\n", indent(dv, "     "), indent(db, "     "))

	sides := []pair{
		{name: "vxsec", client: t1.NS, server: t2.NS, serverIP: t2.IP()},
		base.pair("hand-built"),
	}
	results, err := iperfABBA(ctx, w, sides, o, gbits)
	if err != nil {
		return "", err
	}
	rec.Seconds, rec.Runs = o.seconds, o.runs
	rec.Sides = sidesOf(sides, results)
	mv, mb := median(results["vxsec"]), median(results["hand-built"])
	ratio := mv / mb
	fmt.Fprintf(w, "   result: vxsec median %.2f Gbit/s, hand-built median %.2f Gbit/s, ratio %.3f (goal ≥ 0.95)\n", mv/1e9, mb/1e9, ratio)
	if ratio < 0.95 {
		return fmt.Sprintf("ratio %.3f < 0.95", ratio), nil
	}
	return "", nil
}
