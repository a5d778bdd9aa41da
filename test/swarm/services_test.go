//go:build swarmlab

package swarm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vxsec/vxsec/lab"
)

// ---------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------

// loadTasks finds the running task of svc on each node, with its address on
// network net.
// wireFilter is what the wire check captures: ESP, and UDP to the data
// ports that is no path probe (those go to 4800 every 5 s and carry no
// network's traffic).
var wireFilter = "esp or ((udp port 4800 or udp port 4801) and " + lab.NotPathProbe + ")"

func (l *swarmLab) loadTasks(svc, net string, nodes ...int) (map[int]lab.Task, error) {
	tasks := map[int]lab.Task{}
	var errs []error
	for _, i := range nodes {
		tk, err := l.e[i].ServiceTask(l.ctx, svc, net)
		if err != nil {
			errs = append(errs, fmt.Errorf("sl-e%d: %w", i, err))
			continue
		}
		tasks[i] = tk
	}
	return tasks, errors.Join(errs...)
}

// mesh: the tasks on the nodes ping each other by address, every ordered
// pair at once; one check per pair, named <id>.eI-eJ.
func (l *swarmLab) mesh(t testing.TB, id string, tasks map[int]lab.Task, nodes ...int) {
	l.meshWithin(t, id, tasks, 0, nodes...)
}

// meshWithin is mesh where the tasks may be new: a pair that does not
// answer at first is tried again until within has passed (the cluster
// still spreading the new endpoints and keys). A pair that needed more
// than one try says how long it took, and what both nodes' vxsec saw at
// its first miss.
func (l *swarmLab) meshWithin(t testing.TB, id string, tasks map[int]lab.Task, within time.Duration, nodes ...int) {
	type pair struct{ i, j int }
	var pairs []pair
	for _, i := range nodes {
		for _, j := range nodes {
			if i != j {
				pairs = append(pairs, pair{i, j})
			}
		}
	}
	res := make(map[pair]lab.PingResult)
	errs := parallel(pairs, func(p pair) error {
		src, ok1 := tasks[p.i]
		dst, ok2 := tasks[p.j]
		if !ok1 || !ok2 {
			return fmt.Errorf("no task known on sl-e%d or sl-e%d", p.i, p.j)
		}
		start := time.Now()
		var missed []string
		for try := 1; ; try++ {
			r, err := src.Ping(l.ctx, dst.IP, "-c", "3", "-i", "0.3", "-W", "5")
			if err == nil && r.Received == 0 {
				err = fmt.Errorf("no answer: %s", strings.TrimSpace(r.Output))
			}
			if err == nil || time.Since(start) >= within || l.ctx.Err() != nil {
				if err == nil && try > 1 {
					r.Output = fmt.Sprintf("answered at try %d, %s after the first (at the first miss: %s)", try, since(start), strings.Join(missed, "; "))
				}
				l.statusMu.Lock()
				res[p] = r
				l.statusMu.Unlock()
				if err != nil && len(missed) > 0 {
					err = fmt.Errorf("%w (tried for %s; at the first miss: %s)", err, since(start), strings.Join(missed, "; "))
				}
				return err
			}
			if try == 1 {
				missed = []string{l.viewOf(p.i, p.j), l.viewOf(p.j, p.i)}
			}
			time.Sleep(time.Second)
		}
	})
	for k, p := range pairs {
		l.check(t, fmt.Sprintf("%s.e%d-e%d", id, p.i, p.j), func(t testing.TB) {
			dst := tasks[p.j].IP
			if errs[k] != nil {
				t.Errorf("task on sl-e%d does not ping task on sl-e%d by address (%s): %v", p.i, p.j, dst, errs[k])
				return
			}
			t.Logf("ok: task on sl-e%d pings task on sl-e%d by address (%s): %d of %d answered", p.i, p.j, dst, res[p].Received, res[p].Sent)
			if strings.HasPrefix(res[p].Output, "answered at try") {
				t.Logf("note: %s", res[p].Output)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// 3: an encrypted network, services, reachability, the wire
// ---------------------------------------------------------------------------

func phaseServices(l *swarmLab, t testing.TB) {
	start := time.Now()
	l.must(t, "3.net.create", func(t testing.TB) {
		if _, err := l.e[1].NetworkCreate(l.ctx, "sl-net", pluginRef, subnet, true, map[string]string{"encrypted": ""}); err != nil {
			t.Errorf("docker network create -d %s --opt encrypted --attachable --subnet %s sl-net: %v", pluginRef, subnet, err)
			return
		}
		t.Logf("ok: docker network create -d %s --opt encrypted --attachable --subnet %s sl-net (no --scope)", pluginRef, subnet)
		t.Logf("time: network create: %s", since(start))
	})
	// Swarm's allocator fills the network's driver state (the options and
	// the vni) after the create has returned; until then an inspect shows
	// none, so the options are read once it has run.
	insp, raw, err := l.e[2].NetworkInspect(l.ctx, "sl-net")
	for deadline := time.Now().Add(30 * time.Second); err == nil && len(insp.Options) == 0 && time.Now().Before(deadline); {
		time.Sleep(250 * time.Millisecond)
		insp, raw, err = l.e[2].NetworkInspect(l.ctx, "sl-net")
	}
	os.WriteFile(filepath.Join(env.logs, "network-inspect.json"), raw, 0o644)
	l.check(t, "3.net.scope", func(t testing.TB) {
		if err != nil || insp.Scope != "swarm" {
			t.Errorf("docker network inspect sl-net on sl-e2: Scope %q (%v), want swarm", insp.Scope, err)
			return
		}
		t.Logf("ok: docker network inspect sl-net on sl-e2: Scope swarm")
	})
	l.check(t, "3.net.options", func(t testing.TB) {
		_, enc := insp.Options["encrypted"]
		_, vni := insp.Options["vni"]
		if !enc || !vni {
			t.Errorf("sl-net's options %v: want encrypted and a vni", insp.Options)
			return
		}
		t.Logf("ok: sl-net's options as swarm stores them: %v (encrypted, and the vni AllocateNetwork chose)", insp.Options)
	})

	start = time.Now()
	specs := map[string]func() error{
		"3.svc.web": func() error {
			s := lab.GlobalService("sl-web", "sl-net", imageRef, false, "sh", "-c", webCmd)
			s.TaskTemplate.ContainerSpec.Hostname = "{{.Node.Hostname}}"
			_, err := l.e[1].ServiceCreate(l.ctx, s)
			return err
		},
		"3.svc.rr": func() error {
			s := lab.GlobalService("sl-rr", "sl-net", imageRef, true, "sh", "-c", webCmd)
			s.TaskTemplate.ContainerSpec.Hostname = "{{.Node.Hostname}}-rr"
			_, err := l.e[1].ServiceCreate(l.ctx, s)
			return err
		},
	}
	ids := []string{"3.svc.web", "3.svc.rr"}
	errs := parallel(ids, func(id string) error { return specs[id]() })
	ok := l.checkErr(t, ids[0], errs[0], "docker service create --mode global --network sl-net --name sl-web (VIP mode, busybox httpd)")
	ok = l.checkErr(t, ids[1], errs[1], "docker service create --mode global --endpoint-mode dnsrr --network sl-net --name sl-rr") && ok
	if !ok {
		t.Fatalf("the services were not created")
	}
	l.must(t, "3.svc.running", func(t testing.TB) {
		_, err := l.poll(300*time.Second, 2*time.Second, func() error {
			w, err1 := l.e[1].RunningTasks(l.ctx, "sl-web")
			r, err2 := l.e[1].RunningTasks(l.ctx, "sl-rr")
			if w != nodeCount || r != nodeCount {
				return fmt.Errorf("sl-web %d/%d, sl-rr %d/%d tasks running (%v)", w, nodeCount, r, nodeCount, errors.Join(err1, err2))
			}
			return nil
		})
		if err != nil {
			t.Errorf("%v", err)
			return
		}
		t.Logf("ok: a task of sl-web and of sl-rr runs on every node (%d tasks)", 2*nodeCount)
		t.Logf("time: service create to %d tasks running: %s", 2*nodeCount, since(start))
	})
	l.must(t, "3.tasks", func(t testing.TB) {
		var e1, e2 error
		l.web, e1 = l.loadTasks("sl-web", "sl-net", all()...)
		l.rr, e2 = l.loadTasks("sl-rr", "sl-net", all()...)
		if err := errors.Join(e1, e2); err != nil {
			t.Errorf("could not find every task's container, pid and address on its node: %v", err)
		}
	})
	l.check(t, "3.ips", func(t testing.TB) {
		pfx := netip.MustParsePrefix(subnet)
		seen := map[string]bool{}
		var ips []string
		for _, i := range all() {
			for _, tk := range []lab.Task{l.web[i], l.rr[i]} {
				ips = append(ips, tk.IP)
				if a, err := netip.ParseAddr(tk.IP); err == nil && pfx.Contains(a) {
					seen[tk.IP] = true
				}
			}
		}
		if len(seen) != 2*nodeCount {
			t.Errorf("task addresses %v: want %d distinct ones from %s", ips, 2*nodeCount, subnet)
			return
		}
		t.Logf("ok: %d distinct task addresses from %s (swarm's IPAM): %v", 2*nodeCount, subnet, ips)
	})
	for _, i := range all() {
		l.check(t, fmt.Sprintf("3.mtu.e%d", i), func(t testing.TB) {
			dev, mtu, err := taskMTU(l.ctx, l.web[i])
			if err != nil || mtu != "1408" {
				t.Errorf("sl-web task on sl-e%d: sl-net interface %q MTU %q (%v), want 1408", i, dev, mtu, err)
				return
			}
			t.Logf("ok: sl-web task on sl-e%d: its sl-net interface %s has MTU 1408 (1500 - VXLAN - ESP - room for ESP in UDP)", i, dev)
		})
	}

	l.mesh(t, "3.ping", l.web, all()...)

	// The wire, while 10 MB cross and DF pings go: ESP only.
	pcap := filepath.Join(env.run, "wire.pcap")
	capt, err := lab.CaptureDevice(l.ctx, "", bridge, wireFilter, 96, pcap)
	if err != nil {
		t.Errorf("tcpdump on %s: %v", bridge, err)
	}
	time.Sleep(2 * time.Second)
	l.transfer(t, 1, 2)
	far := nodeCount
	l.check(t, "3.df", func(t testing.TB) {
		r, err := l.web[1].Ping(l.ctx, l.web[far].IP, "-M", "do", "-s", "1380", "-c", "3", "-i", "0.3", "-W", "5")
		if err != nil || r.Received == 0 {
			t.Errorf("DF ping from sl-e1's task to sl-e%d's with 1380 bytes of payload: %v %s", far, err, r.Output)
			return
		}
		t.Logf("ok: DF ping from sl-e1's task to sl-e%d's with 1380 bytes of payload (1408-byte packets) passes", far)
	})
	l.check(t, "3.df.over", func(t testing.TB) {
		out, _ := l.web[1].NetExec(l.ctx, "ping", "-M", "do", "-s", "1381", "-c", "1", "-W", "2", l.web[far].IP)
		low := strings.ToLower(out)
		if !strings.Contains(low, "message too long") && !strings.Contains(low, "mtu=1408") {
			t.Errorf("DF ping with 1381 bytes (1409-byte packets) was not refused for the 1408 MTU: %s", strings.TrimSpace(out))
			return
		}
		t.Logf("ok: DF ping with 1381 bytes is refused locally: %s", regexp.MustCompile(`(?i)message too long.*`).FindString(out))
	})
	time.Sleep(time.Second)
	var pk []lab.WirePacket
	if capt != nil {
		capt.Stop()
		copyFile(pcap, filepath.Join(env.logs, "wire.pcap"))
		if pk, err = lab.ReadWire(pcap); err != nil {
			t.Errorf("reading the capture: %v", err)
		}
		var b strings.Builder
		for k, p := range pk {
			if k == 40 {
				break
			}
			fmt.Fprintln(&b, p)
		}
		fmt.Fprintf(&b, "(%d packets)\n%s", len(pk), capt.Stderr())
		os.WriteFile(filepath.Join(env.logs, "wire.txt"), []byte(b.String()), 0o644)
	}
	// The capture filter kept only ESP and UDP to 4800/4801 that is no path
	// probe, so any UDP in it is cleartext VXLAN.
	var esp, clear, big, frag int
	for _, p := range pk {
		switch p.Proto {
		case lab.ProtoESP:
			esp++
			if p.Len > 1450 {
				big++
			}
			if p.Fragment {
				frag++
			}
		case lab.ProtoUDP:
			clear++
		}
	}
	l.check(t, "3.wire", func(t testing.TB) {
		if esp <= 1000 || clear != 0 {
			t.Errorf("tcpdump on %s during the transfer: %d ESP packets (want > 1000), %d UDP to 4800/4801 (want 0)", bridge, esp, clear)
			return
		}
		t.Logf("ok: tcpdump on %s during the transfer: %d ESP packets, no UDP to 4800/4801 (cleartext VXLAN)", bridge, esp)
	})
	l.check(t, "3.wire.fullmtu", func(t testing.TB) {
		if big <= 1000 || frag != 0 {
			t.Errorf("%d ESP packets longer than 1450 bytes (want > 1000), %d fragments (want 0)", big, frag)
			return
		}
		t.Logf("ok: %d ESP packets longer than 1450 bytes on the wire, none fragmented (full-MTU segments)", big)
	})
	for _, i := range all() {
		s, p := l.xfrm(i)
		t.Logf("info [3.xfrm.e%d]: sl-e%d: %d SAs, %d policies", i, i, countLines(s, "src"), countLines(p, "src"))
	}
	// The doctor, as an operator runs it on a node: every path of the
	// swarm checked, the swarm directory seen, nothing named.
	for _, i := range all() {
		l.check(t, fmt.Sprintf("3.doctor.e%d", i), func(t testing.TB) { l.doctorClean(t, i) })
	}

	l.dnsChecks(t)
	start = time.Now()
	l.check(t, "3.run", func(t testing.TB) {
		target := l.web[1].IP
		r, err := l.e[2].ContainerRun(l.ctx, imageRef, "sl-net", "sh", "-c", fmt.Sprintf("ping -c 2 -W 5 %s && ping -c 2 -W 5 sl-rr", target))
		if err != nil || r.ExitCode != 0 {
			t.Errorf("sl-e2: docker run --rm --network sl-net busybox pinging sl-e1's task (%s) and sl-rr: exit %d, %v: %s", target, r.ExitCode, err, r.Combined())
			return
		}
		t.Logf("ok: sl-e2: docker run --rm --network sl-net busybox pings sl-e1's task (%s) and the dnsrr service sl-rr", target)
		t.Logf("time: docker run on the attachable network: %s", since(start))
	})
	l.vipChecks(t)
	l.badOptionChecks(t)
}

// badOptionChecks: a vxsec network created on a manager with an option
// vxsec refuses. `docker network create` returns before the leader
// allocates it (Docker's doing), so the error must show where a swarm user
// looks next: the tasks of a service on it, in `docker service ps
// --no-trunc`.
func (l *swarmLab) badOptionChecks(t testing.TB) {
	l.check(t, "3.err.vni", func(t testing.TB) {
		if _, err := l.e[1].NetworkCreate(l.ctx, "sl-bad", pluginRef, "10.99.9.0/24", false, map[string]string{"vni": "abc"}); err != nil {
			t.Errorf("docker network create -d %s --opt vni=abc sl-bad: %v (swarm returns before the allocation: want no error here)", pluginRef, err)
			return
		}
		defer l.e[1].NetworkRemove(l.ctx, "sl-bad")
		spec := lab.ReplicatedService("sl-bad-svc", "sl-bad", imageRef, 1, "sleep", "3600")
		if _, err := l.e[1].ServiceCreate(l.ctx, spec); err != nil {
			t.Errorf("docker service create --network sl-bad: %v", err)
			return
		}
		defer l.e[1].ServiceRemove(l.ctx, "sl-bad-svc")
		var errs []string
		took, err := l.poll(90*time.Second, time.Second, func() error {
			var err error
			errs, err = l.e[1].TaskErrors(l.ctx, "sl-bad-svc")
			for _, e := range errs {
				if strings.Contains(e, "vni") && strings.Contains(e, "abc") && strings.Contains(e, "16777215") {
					return nil
				}
			}
			return fmt.Errorf("task errors %q (%v)", errs, err)
		})
		if err != nil {
			t.Errorf("docker service ps --no-trunc sl-bad-svc shows no error naming the option and its accepted values: %v", err)
			return
		}
		t.Logf("ok: docker service ps --no-trunc sl-bad-svc, %s after the create: %q", secs(took), errs[0])
		var seen []string
		for _, i := range all() {
			st, _, err := l.e[i].VxsecStatus(l.ctx, pluginRef)
			for _, r := range st.Refusals {
				if strings.Contains(r.Error, "abc") {
					seen = append(seen, fmt.Sprintf("sl-e%d %s: %s", i, r.Method, r.Error))
				}
			}
			if err != nil {
				t.Errorf("vxsec status on sl-e%d: %v", i, err)
			}
		}
		if len(seen) == 0 {
			t.Errorf("no node's vxsec status lists the refusal under Refusals")
			return
		}
		t.Logf("ok: vxsec status lists it under Refusals: %s", seen[0])
	})
}

// taskMTU is the device holding the task's address in its namespace, and
// that device's MTU.
func taskMTU(ctx context.Context, tk lab.Task) (dev, mtu string, err error) {
	out, err := tk.NetExec(ctx, "sh", "-c", "ip -o -4 addr show; echo ---; ip -o link show")
	if err != nil {
		return "", "", err
	}
	addrs, links, _ := strings.Cut(out, "---")
	for _, line := range strings.Split(addrs, "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && strings.HasPrefix(f[3], tk.IP+"/") {
			dev = f[1]
		}
	}
	if dev == "" {
		return "", "", fmt.Errorf("no device holds %s: %s", tk.IP, addrs)
	}
	for _, line := range strings.Split(links, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0] != dev {
			continue
		}
		for k := 2; k+1 < len(f); k++ {
			if f[k] == "mtu" {
				return dev, f[k+1], nil
			}
		}
	}
	return dev, "", fmt.Errorf("no MTU for %s in: %s", dev, links)
}

// transfer: 10 MB over TCP with busybox nc from the sl-web task on node a
// to the one on node b, the same md5 on both ends.
func (l *swarmLab) transfer(t testing.TB, a, b int) {
	src, dst := l.web[a], l.web[b]
	rctx, stop := context.WithCancel(l.ctx)
	defer stop()
	// busybox nc exits when its stdin ends: the receiver keeps it open.
	go dst.Sh(rctx, "rm -f /tmp/recv.bin; sleep 200 | nc -l -p 5001 >/tmp/recv.bin")
	time.Sleep(time.Second)
	start := time.Now()
	sums, _ := src.Sh(l.ctx, fmt.Sprintf("dd if=/dev/urandom of=/tmp/send.bin bs=1M count=10 2>/dev/null && md5sum /tmp/send.bin && nc %s 5001 </tmp/send.bin", dst.IP))
	sent := strings.Fields(sums + " ")[0]
	size := ""
	took, _ := l.poll(120*time.Second, time.Second, func() error {
		out, _ := dst.Sh(l.ctx, "wc -c </tmp/recv.bin")
		if size = strings.TrimSpace(out); size != "10485760" {
			return errors.New(size)
		}
		return nil
	})
	got, _ := dst.Sh(l.ctx, "md5sum /tmp/recv.bin")
	gotSum := strings.Fields(got + " ")[0]
	l.check(t, "3.tcp", func(t testing.TB) {
		if size != "10485760" || sent == "" || gotSum != sent {
			t.Errorf("10 MB over TCP from sl-e%d's task to sl-e%d's: received %q bytes, md5 sent %q received %q (after %s): %s",
				a, b, size, sent, gotSum, secs(took), strings.TrimSpace(sums))
			return
		}
		t.Logf("ok: 10 MB over TCP (busybox nc) from sl-e%d's task to sl-e%d's: 10485760 bytes, md5 %s on both ends (%s)", a, b, gotSum, since(start))
	})
}

// dnsChecks: inside every sl-web task (docker exec through its engine), by
// Docker's DNS (127.0.0.11): tasks.sl-web and the dnsrr service sl-rr
// resolve to their tasks' addresses and answer pings and HTTP.
func (l *swarmLab) dnsChecks(t testing.TB) {
	ipsOf := func(m map[int]lab.Task) string {
		var ips []string
		for _, i := range all() {
			ips = append(ips, m[i].IP)
		}
		sort.Strings(ips)
		return strings.Join(ips, " ")
	}
	web, rr := ipsOf(l.web), ipsOf(l.rr)
	re := strings.ReplaceAll(strings.TrimSuffix(subnet, "0/24"), ".", `\.`)
	script := fmt.Sprintf(`
echo TASKS $(nslookup tasks.sl-web 2>/dev/null | grep -o '%[1]s[0-9]*' | sort | tr '\n' ' ')
echo RR $(nslookup sl-rr 2>/dev/null | grep -o '%[1]s[0-9]*' | sort | tr '\n' ' ')
ping -c 2 -W 5 tasks.sl-web >/dev/null 2>&1 && echo PINGTASKS ok || echo PINGTASKS fail
ping -c 2 -W 5 sl-rr >/dev/null 2>&1 && echo PINGRR ok || echo PINGRR fail
echo HTTP $(printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 10 sl-rr 80 2>/dev/null | tail -n 1)
`, re)
	outs := make([]string, nodeCount+1)
	errs := parallel(all(), func(i int) error {
		r, err := l.e[i].ContainerExec(l.ctx, l.web[i].ContainerID, "sh", "-c", script)
		outs[i] = r.Stdout + r.Stderr
		return err
	})
	for _, i := range all() {
		got := func(key string) string {
			for _, line := range strings.Split(outs[i], "\n") {
				if v, ok := strings.CutPrefix(line, key+" "); ok {
					f := strings.Fields(strings.ReplaceAll(v, "\r", ""))
					if key == "TASKS" || key == "RR" {
						sort.Strings(f)
					}
					return strings.Join(f, " ")
				}
			}
			return ""
		}
		execErr := errs[i-1]
		l.check(t, fmt.Sprintf("3.dns.tasks.e%d", i), func(t testing.TB) {
			if g := got("TASKS"); execErr != nil || g != web {
				t.Errorf("task on sl-e%d: tasks.sl-web resolves to %q, want %q (%v)", i, g, web, execErr)
				return
			}
			t.Logf("ok: task on sl-e%d: tasks.sl-web resolves to the %d sl-web tasks (%s)", i, nodeCount, web)
		})
		l.check(t, fmt.Sprintf("3.dns.rr.e%d", i), func(t testing.TB) {
			if g := got("RR"); execErr != nil || g != rr {
				t.Errorf("task on sl-e%d: sl-rr resolves to %q, want %q (%v)", i, g, rr, execErr)
				return
			}
			t.Logf("ok: task on sl-e%d: the dnsrr service name sl-rr resolves to its %d tasks (%s)", i, nodeCount, rr)
		})
		l.check(t, fmt.Sprintf("3.dns.ping.e%d", i), func(t testing.TB) {
			if got("PINGTASKS") != "ok" || got("PINGRR") != "ok" {
				t.Errorf("task on sl-e%d: ping tasks.sl-web %q, ping sl-rr %q (%v)", i, got("PINGTASKS"), got("PINGRR"), execErr)
				return
			}
			t.Logf("ok: task on sl-e%d: ping tasks.sl-web and ping sl-rr answer", i)
		})
		l.check(t, fmt.Sprintf("3.dns.http.e%d", i), func(t testing.TB) {
			if h := got("HTTP"); !strings.HasPrefix(h, "sl-e") || !strings.Contains(h, "-rr") {
				t.Errorf("task on sl-e%d: HTTP to sl-rr:80 answered %q (%v)", i, h, execErr)
				return
			}
			t.Logf("ok: task on sl-e%d: HTTP to sl-rr:80 answered by %s", i, got("HTTP"))
		})
	}
}

// httpGets asks name (a service name or address) for its page n times over
// TCP from the task, each on its own connection, and counts the answers by
// the hostname the page holds; failures count under "".
func httpGets(ctx context.Context, tk lab.Task, name string, n int) map[string]int {
	out, _ := tk.Sh(ctx, fmt.Sprintf(`for k in $(seq %d); do a=$(printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 %s 80 2>/dev/null | tail -n 1 | tr -d '\r'); echo "=${a}"; done`, n, name))
	got := map[string]int{}
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "="); ok {
			got[v]++
		}
	}
	if total := sumCounts(got); total < n {
		got[""] += n - total
	}
	return got
}

func sumCounts(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func answered(m map[string]int) (hosts []string) {
	for h, n := range m {
		if h != "" && n > 0 {
			hosts = append(hosts, h)
		}
	}
	sort.Strings(hosts)
	return hosts
}

// vipChecks: service VIPs on a vxsec network (package vip). From every
// node, the name of the VIP-mode service reaches its tasks, spread over
// them; a replicated service scaled up shows its new task, and once
// removed its VIP answers no more, each within a bound measured here.
func (l *swarmLab) vipChecks(t testing.TB) {
	var vip string
	if s, err := l.e[1].Service(l.ctx, "sl-web"); err == nil && len(s.Endpoint.VirtualIPs) > 0 {
		vip = strings.Split(s.Endpoint.VirtualIPs[0].Addr, "/")[0]
	}
	const n = 12
	for _, i := range all() {
		l.check(t, fmt.Sprintf("3.vip.e%d", i), func(t testing.TB) {
			var got map[string]int
			// The first poll of the engine after the tasks joined: at most
			// vip.DefaultPoll, plus libnetwork's gossip of the tasks.
			took, err := l.poll(30*time.Second, 500*time.Millisecond, func() error {
				got = httpGets(l.ctx, l.web[i], "sl-web", n)
				if got[""] != 0 || len(answered(got)) < 2 {
					return fmt.Errorf("answers by task hostname %v", got)
				}
				return nil
			})
			if err != nil {
				t.Errorf("sl-web task on sl-e%d: %d HTTP GETs of sl-web (VIP %s): %v", i, n, vip, err)
				return
			}
			t.Logf("ok: sl-web task on sl-e%d: %d HTTP GETs of sl-web (VIP %s) answered by %d tasks: %v (after %s)", i, n, vip, len(answered(got)), got, secs(took))
		})
	}

	start := time.Now()
	spec := lab.ReplicatedService("sl-vip", "sl-net", imageRef, 1, "sh", "-c", webCmd)
	spec.TaskTemplate.ContainerSpec.Hostname = "{{.Task.Name}}"
	if !l.checkErr(t, "3.vip.create", func() error { _, err := l.e[1].ServiceCreate(l.ctx, spec); return err }(),
		"docker service create --replicas 1 --network sl-net --name sl-vip (VIP mode)") {
		return
	}
	client := l.web[nodeCount]
	l.check(t, "3.vip.one", func(t testing.TB) {
		took, err := l.poll(120*time.Second, time.Second, func() error {
			if got := httpGets(l.ctx, client, "sl-vip", 3); len(answered(got)) != 1 || got[""] != 0 {
				return fmt.Errorf("answers %v", got)
			}
			return nil
		})
		if err != nil {
			t.Errorf("sl-vip with one replica, from sl-e%d's sl-web task: %v", nodeCount, err)
			return
		}
		t.Logf("ok: sl-vip with one replica answers by name from sl-e%d (%s after the create)", nodeCount, secs(time.Since(start)))
		_ = took
	})
	l.check(t, "3.vip.scale", func(t testing.TB) {
		if err := l.e[1].ServiceScale(l.ctx, "sl-vip", 3); err != nil {
			t.Errorf("docker service scale sl-vip=3: %v", err)
			return
		}
		if _, err := l.poll(120*time.Second, 250*time.Millisecond, func() error {
			if r, err := l.e[1].RunningTasks(l.ctx, "sl-vip"); r != 3 {
				return fmt.Errorf("%d of 3 tasks running (%v)", r, err)
			}
			return nil
		}); err != nil {
			t.Errorf("docker service scale sl-vip=3: %v", err)
			return
		}
		running := time.Now()
		var got map[string]int
		_, err := l.poll(30*time.Second, 100*time.Millisecond, func() error {
			got = httpGets(l.ctx, client, "sl-vip", 9)
			if len(answered(got)) != 3 {
				return fmt.Errorf("answers by task %v", got)
			}
			return nil
		})
		if err != nil {
			t.Errorf("sl-vip scaled to 3: the VIP does not reach the 3 tasks: %v", err)
			return
		}
		t.Logf("ok: sl-vip scaled to 3: its VIP reaches all 3 tasks %s after the third runs (goal: 2 s; bound of the check: 30 s): %v", secs(time.Since(running)), got)
	})
	l.check(t, "3.vip.rm", func(t testing.TB) {
		var addr string
		if s, err := l.e[1].Service(l.ctx, "sl-vip"); err == nil && len(s.Endpoint.VirtualIPs) > 0 {
			addr = strings.Split(s.Endpoint.VirtualIPs[0].Addr, "/")[0]
		}
		if addr == "" {
			t.Errorf("sl-vip has no VIP to check")
			return
		}
		if got := httpGets(l.ctx, client, addr, 1); got[""] != 0 {
			t.Errorf("control: sl-vip's VIP %s did not answer before the removal: %v", addr, got)
			return
		}
		if err := l.e[1].ServiceRemove(l.ctx, "sl-vip"); err != nil {
			t.Errorf("docker service rm sl-vip: %v", err)
			return
		}
		removed := time.Now()
		_, err := l.poll(60*time.Second, 250*time.Millisecond, func() error {
			if got := httpGets(l.ctx, client, addr, 1); got[""] != 1 {
				return fmt.Errorf("the VIP still answers: %v", got)
			}
			return nil
		})
		if err != nil {
			t.Errorf("docker service rm sl-vip: its VIP %s: %v", addr, err)
			return
		}
		t.Logf("ok: docker service rm sl-vip: its VIP %s answers no more %s after the removal", addr, secs(time.Since(removed)))
	})
}

// doctorClean wants sl-eN's doctor (127.0.0.1:7949/doctor.json on the node,
// as `curl` there) to check all 6 paths of the 3 nodes and name nothing.
// Paths are judged once each firewall has recorded probes for
// doctor.Settle: the check waits up to 30 s for that.
func (l *swarmLab) doctorClean(t testing.TB, i int) {
	var rep struct {
		Members, Answered, Paths int
		Findings                 []struct{ Severity, Where, What string }
	}
	var raw []byte
	var err error
	deadline := time.Now().Add(30 * time.Second)
	for {
		raw, err = l.e[i].HTTPGet(l.ctx, "127.0.0.1:7949", "/doctor.json")
		if err == nil {
			err = json.Unmarshal(raw, &rep)
		}
		if (err == nil && rep.Paths == 6 && len(rep.Findings) == 0) || time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Second)
	}
	text, _ := l.e[i].HTTPGet(l.ctx, "127.0.0.1:7949", "/doctor")
	if err != nil || rep.Members != 3 || rep.Answered != 3 || rep.Paths != 6 || len(rep.Findings) != 0 {
		t.Errorf("curl -s 127.0.0.1:7949/doctor on sl-e%d (%v): want 3 members answering, 6 paths, nothing named:\n%s", i, err, text)
		return
	}
	t.Logf("ok: curl -s 127.0.0.1:7949/doctor on sl-e%d:\n%s", i, text)
}

// viewOf is, in one line, what node i's vxsec says of its networks and of
// its keys with node j.
func (l *swarmLab) viewOf(i, j int) string {
	st, err := l.vstatus(i)
	if err != nil {
		return fmt.Sprintf("sl-e%d: no status (%v)", i, err)
	}
	var nets []string
	for _, n := range st.Networks {
		nets = append(nets, fmt.Sprintf("vni %d: %d local, %d remote", n.VNI, n.Local, n.Remote))
	}
	keys := "no keys with it"
	if p, ok := st.Peer(addr(j)); ok {
		keys = fmt.Sprintf("keys with it: epochs %d/%d spi %#x, %d inbound", p.Epoch, p.PeerEpoch, p.SPI, p.Inbound)
	}
	return fmt.Sprintf("sl-e%d: %s; of sl-e%d: %s", i, strings.Join(nets, ", "), j, keys)
}
