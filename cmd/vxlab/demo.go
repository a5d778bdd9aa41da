package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/vxsec/vxsec/lab"
	"github.com/vxsec/vxsec/vxlan"
)

// demo narrates what it does; every step that fails ends it with an error.
type demo struct {
	w    io.Writer
	step int
}

func (d *demo) title(format string, a ...any) {
	d.step++
	fmt.Fprintf(d.w, "\n[%d] %s\n", d.step, fmt.Sprintf(format, a...))
}

func (d *demo) say(format string, a ...any) { fmt.Fprintf(d.w, "    "+format+"\n", a...) }

func runDemo(ctx context.Context, w io.Writer, bin string, keep bool) (err error) {
	const (
		vni    = 4242
		subnet = "10.42.0.0/24"
	)
	d := &demo{w: w}
	fmt.Fprintf(w, "vxsec multi-host demo: 3 hosts on one machine (network namespaces on a shared underlay\n"+
		"bridge), each running a real `%s daemon`; containers are namespaces attached through\n"+
		"the remote API exactly as dockerd does it (CreateEndpoint, Join, move the device in).\n", bin)

	d.title("cluster secret: `vxsec secret` makes one; every host gets it as VXSEC_SECRET, and VXSEC_JOIN=198.18.0.1")
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := newCluster(ctx, bin, 3, "")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			fmt.Fprintf(w, "\nFAILED: %v\n%s", err, c.logTails(30))
			fmt.Fprintf(w, "lab directory kept: %s\n", c.Dir())
			c.Lab.Close()
			return
		}
		d.title("tear down: daemons stopped, every namespace (hosts, containers, switch) removed")
		if keep {
			if cerr := c.Lab.Close(); cerr != nil {
				err = cerr
			}
			d.say("daemon logs kept in %s", c.Dir())
		} else if cerr := c.Close(); cerr != nil {
			err = cerr
		}
		if err == nil {
			fmt.Fprintf(w, "\nDEMO PASSED in %v\n", time.Since(start).Round(100*time.Millisecond))
		}
	}()
	d.say("secret generated (%d base64 characters, not shown)", len(c.secret))
	for _, h := range c.hosts {
		d.say("%s: underlay %s, daemon pid %d, log %s", h.Name, h.Addr, h.Pid(), h.LogPath)
	}
	took, err := c.waitAlive(ctx, 20*time.Second)
	if err != nil {
		return fmt.Errorf("cluster did not form: %w", err)
	}
	st, err := c.hosts[0].Status(ctx)
	if err != nil {
		return err
	}
	d.say("cluster formed in %s; h1's VxSec.Status members:", ms(took))
	for _, m := range st.Members {
		d.say("  %-24s %-15s %s", m.Name, m.Addr, m.Status)
	}

	d.title("network: created on every host with --opt vni=%d --subnet %s (same VNI = same network)", vni, subnet)
	ids := map[*lab.Host]string{}
	for _, h := range c.hosts {
		ids[h] = "demo-" + h.Name // every host's Docker gives it its own ID outside swarm
		if err := h.Client().CreateNetwork(ctx, ids[h], map[string]string{"vni": fmt.Sprint(vni)}, subnet, ""); err != nil {
			return err
		}
		d.say("%s: CreateNetwork %s → device vxsec-%d", h.Name, ids[h], vni)
	}

	d.title("containers: two per host")
	var cs []*lab.Container
	t0 := time.Now()
	for i, h := range c.hosts {
		for j := 0; j < 2; j++ {
			name := fmt.Sprintf("%s-%c", h.Name, 'a'+j)
			ct, err := h.Run(ctx, name, ids[h], fmt.Sprintf("10.42.0.%d/24", 10*(i+1)+j+1))
			if err != nil {
				return err
			}
			cs = append(cs, ct)
			d.say("%-6s on %s: %s  mac %s", ct.Name, h.Name, ct.Addr, ct.MAC)
		}
	}
	at, err := waitRemote(ctx, c.hosts, vni, func(*lab.Host) int { return 4 }, t0, 10*time.Millisecond, 10*time.Second)
	if err != nil {
		return fmt.Errorf("endpoints did not converge: %w", err)
	}
	var last time.Duration
	for _, v := range at {
		last = max(last, v)
	}
	d.say("every host holds the 4 endpoints of the other hosts %s after the first container started", ms(last))

	d.title("pings across hosts (2 each, every pair on different hosts)")
	pings := func(from, to []*lab.Container, wantOK func(a, b *lab.Container) bool) error {
		for _, a := range from {
			for _, b := range to {
				if a.Host == b.Host {
					continue
				}
				r, err := a.Ping(ctx, b.IP(), "-c", "2", "-i", "0.1", "-W", "1")
				if err != nil {
					return err
				}
				verdict := "ok"
				if (r.Received == r.Sent) != wantOK(a, b) {
					verdict = "UNEXPECTED"
				} else if r.Received == 0 {
					verdict = "no reply, as expected"
				}
				d.say("%s → %s (%s): %d/%d replies  %s  %s", a.Name, b.Name, b.IP(), r.Received, r.Sent, rtt(r.Output), verdict)
				if verdict == "UNEXPECTED" {
					return fmt.Errorf("%s → %s: %d/%d replies\n%s", a.Name, b.Name, r.Received, r.Sent, r.Output)
				}
			}
		}
		return nil
	}
	if err := pings(cs, cs, func(a, b *lab.Container) bool { return true }); err != nil {
		return err
	}

	h1 := c.hosts[0]
	d.title("what h1's kernel holds: static entries, no learning, nothing to flood with")
	out, _ := h1.Exec(ctx, "bridge", "fdb", "show", "dev", vxlan.LinkName(vni))
	d.say("$ bridge fdb show dev vxsec-%d", vni)
	fmt.Fprintln(w, indent(out, "      "))
	out, _ = h1.Exec(ctx, "ip", "neigh", "show", "dev", vxlan.LinkName(vni))
	d.say("$ ip neigh show dev vxsec-%d", vni)
	fmt.Fprintln(w, indent(out, "      "))
	out, _ = h1.Exec(ctx, "nft", "list", "table", "inet", "vxsec")
	d.say("$ nft list table inet vxsec   (VXLAN accepted only from members)")
	fmt.Fprintln(w, indent(out, "      "))

	h3 := c.hosts[2]
	d.title("%s dies: its daemon is killed and its cable pulled", h3.Name)
	if err := h3.SetUnderlay(ctx, false); err != nil {
		return err
	}
	h3.Kill()
	died := time.Now()
	at, err = waitRemote(ctx, c.hosts[:2], vni, func(*lab.Host) int { return 2 }, died, 20*time.Millisecond, 30*time.Second)
	if err != nil {
		return fmt.Errorf("survivors did not drop %s's endpoints: %w", h3.Name, err)
	}
	for _, h := range c.hosts[:2] {
		d.say("%s dropped %s's endpoints %s after it died", h.Name, h3.Name, ms(at[h]))
	}
	st, _ = h1.Status(ctx)
	if m, ok := st.Member(h3.Addr.String()); ok {
		d.say("h1 now lists %s as %q", h3.Name, m.Status)
	}
	out, _ = h1.Exec(ctx, "bridge", "fdb", "show", "dev", vxlan.LinkName(vni))
	d.say("$ bridge fdb show dev vxsec-%d   (on h1)", vni)
	fmt.Fprintln(w, indent(out, "      "))
	d.say("the survivors still talk; nothing reaches %s's containers any more:", h3.Name)
	if err := pings(cs[:4], cs[:4], func(a, b *lab.Container) bool { return true }); err != nil {
		return err
	}
	if err := pings(cs[:1], cs[4:], func(a, b *lab.Container) bool { return false }); err != nil {
		return err
	}

	d.title("%s returns: cable back, daemon started; its endpoints come back everywhere", h3.Name)
	if err := h3.SetUnderlay(ctx, true); err != nil {
		return err
	}
	back := time.Now()
	if err := h3.Start(ctx); err != nil {
		return err
	}
	at, err = waitRemote(ctx, c.hosts, vni, func(*lab.Host) int { return 4 }, back, 20*time.Millisecond, 30*time.Second)
	if err != nil {
		return fmt.Errorf("%s's return did not converge: %w", h3.Name, err)
	}
	for _, h := range c.hosts {
		d.say("%s holds all 4 remote endpoints %s after the return", h.Name, ms(at[h]))
	}
	if err := pings([]*lab.Container{cs[0], cs[4]}, []*lab.Container{cs[0], cs[2], cs[4], cs[5]}, func(a, b *lab.Container) bool { return true }); err != nil {
		return err
	}
	return nil
}

// rtt pulls "rtt min/avg/max/mdev = ..." out of ping's output.
func rtt(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "rtt ") {
			if i := strings.Index(line, "= "); i >= 0 {
				f := strings.Split(strings.TrimSuffix(strings.TrimSpace(line[i+2:]), " ms"), "/")
				if len(f) >= 2 {
					return "rtt avg " + f[1] + " ms"
				}
			}
		}
	}
	return ""
}
