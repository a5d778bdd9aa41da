package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/vxsec/vxsec/internal/benchdata"
	"github.com/vxsec/vxsec/lab"
)

var pingReply = regexp.MustCompile(`^\[(\d+)\.(\d+)\] \d+ bytes from`)

// benchConvergence fills rec with every sample.
func benchConvergence(ctx context.Context, w io.Writer, bin string, o benchOpts, rec *benchdata.Convergence) (string, error) {
	const vni = 1100
	fmt.Fprintf(w, "\n== convergence: Join on host A → first reply from a container on host B (3 hosts, %d endpoints)\n", o.endpoints)
	fmt.Fprintln(w, `   method: a 3-host cluster, one network (same vni on each host); one prober container per host
   whose ARP retransmit time is 10 ms (so that a probe begun before the entry exists is not held
   up by the kernel's 1 s default). For each new endpoint i: host A = h(i mod 3), B = the next host;
   B's prober starts "ping -D -i 0.01" to the new address (stopped at its first reply), then A gets CreateEndpoint, Join
   (clock starts when Join is sent), and the device is moved into a fresh container namespace,
   renamed, addressed and brought up as dockerd does. The figure is the timestamp of the first
   echo reply minus the Join time: it includes dockerd-style plumbing after Join, cluster
   propagation, B's FDB/neighbour install, ARP through B's proxy and A's reply.`)
	c, err := newCluster(ctx, bin, 3, benchLogLevel)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if _, err := c.waitAlive(ctx, 20*time.Second); err != nil {
		return "", fmt.Errorf("cluster did not form: %w\n%s", err, c.logTails(20))
	}
	ids := map[*lab.Host]string{}
	probers := map[*lab.Host]*lab.Container{}
	for i, h := range c.hosts {
		ids[h] = "conv-" + h.Name
		if err := h.Client().CreateNetwork(ctx, ids[h], map[string]string{"vni": fmt.Sprint(vni)}, "10.43.0.0/16", ""); err != nil {
			return "", err
		}
		p, err := h.Run(ctx, "probe", ids[h], fmt.Sprintf("10.43.0.%d/16", i+1))
		if err != nil {
			return "", err
		}
		if _, err := p.Exec(ctx, "sysctl", "-qw", "net.ipv4.neigh."+p.Ifname+".retrans_time_ms=10"); err != nil {
			return "", err
		}
		probers[h] = p
	}
	if _, err := waitRemote(ctx, c.hosts, vni, func(*lab.Host) int { return 2 }, time.Now(), 20*time.Millisecond, 10*time.Second); err != nil {
		return "", fmt.Errorf("probers did not converge: %w", err)
	}
	var samples, plumbing []time.Duration
	for i := 0; i < o.endpoints; i++ {
		a := c.hosts[i%3]
		b := c.hosts[(i+1)%3]
		ip := fmt.Sprintf("10.43.%d.%d", 1+i/250, 1+i%250)
		probe, err := startProbe(ctx, probers[b].NS, ip)
		if err != nil {
			return "", err
		}
		time.Sleep(50 * time.Millisecond) // let the probe start first
		ct, err := a.Run(ctx, fmt.Sprintf("e%d", i), ids[a], ip+"/16")
		if err != nil {
			probe.stop()
			return "", err
		}
		plumbing = append(plumbing, time.Since(ct.JoinedAt))
		replyAt, out := probe.wait()
		if replyAt.IsZero() {
			return "", fmt.Errorf("endpoint %d (%s on %s): no reply from %s's prober within 10 s:\n%s\n%s", i, ip, a.Name, b.Name, out, c.logTails(20))
		}
		samples = append(samples, replyAt.Sub(ct.JoinedAt))
	}
	rec.Hosts, rec.Endpoints = len(c.hosts), o.endpoints
	rec.JoinToReplyS, rec.PlumbingS = seconds(samples), seconds(plumbing)
	s := sortedCopy(samples)
	p50, p90, p99 := percentile(s, 50), percentile(s, 90), percentile(s, 99)
	fmt.Fprintf(w, "   result: n=%d  min %s  p50 %s  p90 %s  p99 %s  max %s   (goal: p99 < 1 s)\n",
		len(s), ms(s[0]), ms(p50), ms(p90), ms(p99), ms(s[len(s)-1]))
	pl := sortedCopy(plumbing)
	fmt.Fprintf(w, "   of which Join + container plumbing alone (Join sent → device up in the container): p50 %s, p99 %s\n", ms(percentile(pl, 50)), ms(percentile(pl, 99)))
	if p99 >= time.Second {
		return fmt.Sprintf("p99 %s ≥ 1 s", ms(p99)), nil
	}
	return "", nil
}

// probe is a ping running until its first reply (or 10 s).
type probe struct {
	cmd  *exec.Cmd
	done chan struct{}
	at   time.Time
	out  strings.Builder
}

// startProbe pings ip from namespace ns every 10 ms with kernel timestamps
// (-D); ping's own -c would also count "unreachable" errors, so the probe
// reads the output and stops ping itself at the first reply.
func startProbe(ctx context.Context, ns, ip string) (*probe, error) {
	p := &probe{done: make(chan struct{})}
	// Neither -c (errors count towards it) nor -w (ping ends at the first
	// error when it is given): the probe's own 10 s limit ends it.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	p.cmd = exec.CommandContext(ctx, "ip", "netns", "exec", ns, "ping", "-n", "-D", "-i", "0.01", ip)
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		cancel()
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		cancel()
		return nil, err
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			p.out.WriteString(line + "\n")
			if m := pingReply.FindStringSubmatch(line); m != nil && p.at.IsZero() {
				sec, _ := strconv.ParseInt(m[1], 10, 64)
				frac := (m[2] + "000000000")[:9]
				nsec, _ := strconv.ParseInt(frac, 10, 64)
				p.at = time.Unix(sec, nsec)
				p.cmd.Process.Kill()
			}
		}
		p.cmd.Wait()
		cancel()
	}()
	return p, nil
}

// wait returns the time of the first reply (zero if none) and the output.
func (p *probe) wait() (time.Time, string) {
	<-p.done
	return p.at, p.out.String()
}

func (p *probe) stop() {
	p.cmd.Process.Kill()
	<-p.done
}
