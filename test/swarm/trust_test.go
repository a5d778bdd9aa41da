//go:build swarmlab

package swarm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vxsec/vxsec/lab"
)

// ---------------------------------------------------------------------------
// 2: zero-config trust
// ---------------------------------------------------------------------------

var servingGlobal = regexp.MustCompile(`vxsec daemon serving.*scope=global`)

func phaseTrust(l *swarmLab, t testing.TB) {
	for _, i := range all() {
		l.check(t, fmt.Sprintf("2.zeroconf.e%d", i), func(t testing.TB) {
			p, err := l.e[i].Plugin(l.ctx, pluginRef)
			if err != nil {
				t.Errorf("sl-e%d: %v", i, err)
				return
			}
			if slices.Contains(p.Settings.Env, "VXSEC_SECRET=") && slices.Contains(p.Settings.Env, "VXSEC_JOIN=") {
				t.Logf("ok: sl-e%d: the plugin runs with VXSEC_SECRET and VXSEC_JOIN empty", i)
				return
			}
			var set []string
			for _, v := range p.Settings.Env {
				if strings.HasPrefix(v, "VXSEC_SECRET=") {
					set = append(set, "VXSEC_SECRET=<set>")
				} else if strings.HasPrefix(v, "VXSEC_JOIN") {
					set = append(set, v)
				}
			}
			t.Errorf("sl-e%d: plugin settings are not zero-config: %v", i, set)
		})
		l.check(t, fmt.Sprintf("2.scope.e%d", i), func(t testing.TB) {
			b, err := os.ReadFile(l.e[i].LogPath())
			if err != nil || !servingGlobal.Match(b) {
				t.Errorf("sl-e%d: the plugin's log (in dockerd's) has no line 'vxsec daemon serving ... scope=global' (%v)", i, err)
				return
			}
			t.Logf("ok: sl-e%d: the plugin reports the global data scope (its log: scope=global)", i)
		})
	}
	l.must(t, "2.cluster", func(t testing.TB) {
		id, err := l.waitCluster()
		if err != nil {
			t.Errorf("%v", err)
			return
		}
		l.secretID = id
		t.Logf("ok: vxsec cluster of %d: every node lists %s alive and one secret_id (%s), with no secret or join address given",
			nodeCount, strings.Join(addrsOf(all()), ","), id)
		if !l.installedAt.IsZero() {
			t.Logf("time: plugins enabled to cluster formed with an agreed secret: %s", since(l.installedAt))
		}
	})
	cid, err := l.e[1].SwarmID(l.ctx)
	if err != nil {
		t.Fatalf("the swarm's ID: %v", err)
	}
	for _, i := range all() {
		l.check(t, fmt.Sprintf("2.identity.e%d", i), func(t testing.TB) {
			nid, _, err := l.e[i].NodeID(l.ctx)
			if err != nil {
				t.Errorf("sl-e%d: docker info: %v", i, err)
				return
			}
			st, err := l.vstatus(i)
			if err != nil || st.Trust == nil {
				t.Errorf("sl-e%d: no trust status: %v", i, err)
				return
			}
			tr := st.Trust
			if tr.Role == "swarm-manager" && tr.ClusterID == cid && tr.NodeID == nid {
				t.Logf("ok: sl-e%d: Trust shows node %s, role %s, swarm %s (from the node certificate)", i, nid, tr.Role, cid)
				return
			}
			t.Errorf("sl-e%d: Trust {node_id %s, role %s, cluster_id %s}, want node %s, swarm-manager, swarm %s",
				i, tr.NodeID, tr.Role, tr.ClusterID, nid, cid)
		})
	}
}

// outsiders: namespace sl-out on the lab bridge, no certificate of this
// swarm. Two vxsec daemons (the static binary) run there:
//
//	forged: a swarm directory with a self-signed "manager" certificate that
//	        names this swarm, the swarm's real (public) root CA and its
//	        state.json; it looks for a secret over TLS, makes its own, and
//	        joins sl-e1 with it;
//	open:   no swarm directory and no secret, joining sl-e1.
type outsiders struct {
	dir     string
	started time.Time
	cmds    []*exec.Cmd
	done    []chan struct{}
	stopped bool
}

func (o *outsiders) forgedSock() string { return filepath.Join(o.dir, "forged.sock") }

func (l *swarmLab) startOutsiders() (*outsiders, error) {
	if err := l.wire(outNS, "sl-vout", outIP); err != nil {
		return nil, err
	}
	cid, err := l.e[1].SwarmID(l.ctx)
	if err != nil {
		return nil, err
	}
	o := &outsiders{dir: filepath.Join(env.run, "out")}
	certs := filepath.Join(o.dir, "forged", "certificates")
	for _, d := range []string{certs, filepath.Join(o.dir, "none")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	if err := run(l.ctx, "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
		"-subj", "/O="+cid+"/OU=swarm-manager/CN=0forgedforgedforgedforged",
		"-addext", "extendedKeyUsage=serverAuth,clientAuth",
		"-keyout", filepath.Join(certs, "swarm-node.key"), "-out", filepath.Join(certs, "swarm-node.crt")); err != nil {
		return nil, err
	}
	sd := l.e[1].SwarmDir()
	for _, c := range [][2]string{
		{filepath.Join(sd, "certificates", "swarm-root-ca.crt"), filepath.Join(certs, "swarm-root-ca.crt")},
		{filepath.Join(sd, "state.json"), filepath.Join(o.dir, "forged", "state.json")},
	} {
		b, err := os.ReadFile(c[0])
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(c[1], b, 0o600); err != nil {
			return nil, err
		}
	}
	for _, name := range []string{"forged", "open"} {
		args := []string{"netns", "exec", outNS, l.vxsec, "daemon",
			"--socket", filepath.Join(o.dir, name+".sock"), "--state-dir", filepath.Join(o.dir, name+"-state"),
			"--snapshot", filepath.Join(o.dir, name+".snapshot"), "--scope", "local", "--join", addr(1), "--log-level", "debug"}
		if name == "forged" {
			args = append(args, "--swarm-dir", filepath.Join(o.dir, "forged"))
		} else {
			args = append(args, "--swarm-dir", filepath.Join(o.dir, "none"), "--gossip-port", "7957", "--trust-port", "7958")
		}
		logf, err := os.Create(filepath.Join(o.dir, name+".log"))
		if err != nil {
			return nil, err
		}
		cmd := exec.Command("ip", args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			logf.Close()
			return nil, err
		}
		done := make(chan struct{})
		go func() {
			cmd.Wait()
			logf.Close()
			close(done)
		}()
		o.cmds, o.done = append(o.cmds, cmd), append(o.done, done)
	}
	o.started = time.Now()
	return o, nil
}

// stop ends the outsiders, keeps their logs and removes their namespace.
func (o *outsiders) stop(l *swarmLab) {
	if o.stopped {
		return
	}
	o.stopped = true
	for k, c := range o.cmds {
		c.Process.Signal(syscall.SIGTERM)
		select {
		case <-o.done[k]:
		case <-time.After(10 * time.Second):
			c.Process.Kill()
			<-o.done[k]
		}
	}
	for _, name := range []string{"forged", "open"} {
		copyFile(filepath.Join(o.dir, name+".log"), filepath.Join(env.logs, "outsider-"+name+".log"))
	}
	run(l.ctx, "ip", "netns", "del", outNS)
}

func fileHash(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unreadable: " + err.Error()
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

var tlsAlert = regexp.MustCompile(`alert [a-z ]*`)

func phaseOutsiderRotation(l *swarmLab, t testing.TB) {
	if st, err := l.vstatus(1); err == nil && st.Trust != nil {
		l.refused0 = st.Trust.Refused
	}
	l.must(t, "2.outsider.start", func(t testing.TB) {
		o, err := l.startOutsiders()
		if err != nil {
			t.Errorf("could not set up the outsider namespace %s with its daemons: %v", outNS, err)
			return
		}
		l.out = o
		t.Logf("ok: outsider %s: a vxsec daemon with a forged swarm certificate and one with no certificate, both joining %s", outIP, addr(1))
	})
	// A TLS client with no certificate at all.
	l.check(t, "2.outsider.tls", func(t testing.TB) {
		cid, err := l.e[1].SwarmID(l.ctx)
		if err != nil {
			t.Errorf("the swarm's ID: %v", err)
			return
		}
		ctx, cancel := context.WithTimeout(l.ctx, 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "ip", "netns", "exec", outNS, "openssl", "s_client", "-connect", addr(1)+":7948", "-quiet")
		cmd.Stdin = strings.NewReader(fmt.Sprintf(`{"v":1,"cluster":%q,"record":null}`+"\n", cid))
		out, _ := cmd.CombinedOutput()
		os.WriteFile(filepath.Join(env.logs, "outsider-openssl.txt"), out, 0o644)
		if bytes.Contains(out, []byte(`"secret"`)) {
			t.Errorf("openssl s_client without a certificate got a secret record from %s:7948: %.200s", addr(1), out)
			return
		}
		t.Logf("ok: openssl s_client to %s:7948 without a certificate gets no record: %s", addr(1), tlsAlert.Find(out))
	})

	// The swarm's CA rotation, while the outsiders try their luck.
	certFiles := func(i int) (string, string) {
		c := filepath.Join(l.e[i].SwarmDir(), "certificates")
		return fileHash(filepath.Join(c, "swarm-root-ca.crt")), fileHash(filepath.Join(c, "swarm-node.crt"))
	}
	root0, cert0 := map[int]string{}, map[int]string{}
	for _, i := range all() {
		root0[i], cert0[i] = certFiles(i)
	}
	start := time.Now()
	l.check(t, "2.rotate", func(t testing.TB) {
		if err := l.e[1].RotateCA(l.ctx); err != nil {
			t.Errorf("docker swarm ca --rotate on sl-e1: %v", err)
			return
		}
		t.Logf("ok: docker swarm ca --rotate on sl-e1 (returns when every node has a certificate of the new root)")
		t.Logf("time: docker swarm ca --rotate: %s", since(start))
	})
	l.check(t, "2.rotate.files", func(t testing.TB) {
		_, err := l.poll(90*time.Second, time.Second, func() error {
			for _, i := range all() {
				r, c := certFiles(i)
				if r == root0[i] || c == cert0[i] {
					return fmt.Errorf("sl-e%d: root CA changed %v, node certificate changed %v", i, r != root0[i], c != cert0[i])
				}
			}
			return nil
		})
		if err != nil {
			t.Errorf("not every node's root CA and node certificate changed after the rotation: %v", err)
			return
		}
		t.Logf("ok: every node's swarm-root-ca.crt and swarm-node.crt changed (the plugins see the new ones through the swarm mount)")
	})
	l.rotatedAt = time.Now()
}

// phaseOutsiderCheck: the outsiders' results, once the services phase has
// given them time.
func phaseOutsiderCheck(l *swarmLab, t testing.TB) {
	o := l.out
	if o == nil {
		t.Fatalf("the outsiders never started (2.outsider.start)")
	}
	defer o.stop(l)
	// The outsiders have had their chance once the forged one made its
	// own secret and started a cluster with it (at once: its node ID is
	// the lowest of its state.json), which joins sl-e1, and a few seconds
	// more.
	l.poll(40*time.Second, 2*time.Second, func() error {
		st, _, err := lab.StatusAt(l.ctx, o.forgedSock())
		if err != nil {
			return err
		}
		if st.Trust == nil || st.Trust.SecretID == "" || len(st.Members) == 0 {
			return errors.New("the forged outsider has no secret or no cluster yet")
		}
		return nil
	})
	l.check(t, "2.outsider.member", func(t testing.TB) {
		for _, i := range all() {
			st, err := l.vstatus(i)
			if err != nil {
				continue
			}
			if m, ok := st.Member(outIP); ok {
				t.Errorf("the outsider %s became a member of the vxsec cluster on sl-e%d: %+v (members %+v)", outIP, i, m, st.Members)
				return
			}
		}
		t.Logf("ok: the outsider %s is no member on any node (%s after it started joining)", outIP, since(o.started))
	})
	l.check(t, "2.outsider.refused", func(t testing.TB) {
		st, err := l.vstatus(1)
		if err != nil || st.Trust == nil {
			t.Errorf("sl-e1: no trust status: %v", err)
			return
		}
		if st.Trust.Refused > l.refused0 && strings.Contains(st.Trust.LastRefusal, outIP) {
			t.Logf("ok: sl-e1's trust port refused %d connection(s); the last: %.160s", st.Trust.Refused-l.refused0, st.Trust.LastRefusal)
			return
		}
		t.Errorf("sl-e1's Trust.refused went %d -> %d, last refusal %q: want it to count the outsider %s",
			l.refused0, st.Trust.Refused, st.Trust.LastRefusal, outIP)
	})
	l.check(t, "2.outsider.forged", func(t testing.TB) {
		st, raw, err := lab.StatusAt(l.ctx, o.forgedSock())
		if raw == nil && err != nil {
			raw = []byte(err.Error())
		}
		os.WriteFile(filepath.Join(env.logs, "outsider-forged-status.json"), raw, 0o644)
		if err != nil {
			t.Errorf("the forged node's status: %v", err)
			return
		}
		var ok, firstErr string
		if st.Trust != nil {
			for _, x := range st.Trust.Exchanges {
				if x.Err == "" {
					ok = x.Addr
				} else if firstErr == "" {
					firstErr = x.Err
				}
			}
		}
		m, member := st.Member(addr(1))
		if ok != "" || (member && m.Status == "alive") {
			t.Errorf("the forged node's view shows a successful exchange (with %q) or membership (%+v): %.400s", ok, m, raw)
			return
		}
		if firstErr == "" {
			firstErr = "none"
		}
		t.Logf("ok: the forged node's own view: no successful exchange (%.120s), not in a cluster with %s", firstErr, addr(1))
	})
}

// phaseTrustAfterRotation: every node's last round of exchanges came after
// the rotation, without error, and the cluster is whole. Rounds are every
// 30 s.
func phaseTrustAfterRotation(l *swarmLab, t testing.TB) {
	l.check(t, "2.rotate.exchanges", func(t testing.TB) {
		_, err := l.poll(100*time.Second, 3*time.Second, func() error {
			var why []string
			for _, i := range all() {
				st, err := l.vstatus(i)
				if err != nil || st.Trust == nil {
					return fmt.Errorf("sl-e%d: no trust status: %v", i, err)
				}
				tr := st.Trust
				bad := tr.Err != "" || len(tr.Exchanges) != nodeCount-1
				var xs []string
				for _, x := range tr.Exchanges {
					xs = append(xs, fmt.Sprintf("{%s at %s error %q}", x.Addr, x.At.UTC().Format(time.TimeOnly), x.Err))
					if x.Err != "" || x.At.Unix() <= l.rotatedAt.Unix() {
						bad = true
					}
				}
				if bad {
					why = append(why, fmt.Sprintf("sl-e%d: error %q exchanges %s", i, tr.Err, strings.Join(xs, " ")))
				}
			}
			if len(why) > 0 {
				return errors.New(strings.Join(why, "; "))
			}
			return nil
		})
		if err != nil {
			t.Errorf("exchanges after the rotation (%s) did not all succeed within 100 s: %v", l.rotatedAt.UTC().Format(time.TimeOnly), err)
			return
		}
		t.Logf("ok: after the CA rotation every node's exchanges with the other managers succeed (rounds of %s or later, no error)",
			l.rotatedAt.UTC().Format(time.TimeOnly))
	})
	l.check(t, "2.rotate.cluster", func(t testing.TB) {
		id, err := l.clusterOK(all()...)
		if err != nil {
			t.Errorf("%v", err)
			return
		}
		if id != l.secretID {
			t.Errorf("after the rotation the secret_id is %s, before it was %q", id, l.secretID)
			return
		}
		t.Logf("ok: after the rotation: %d members and the same secret_id %s on every node", nodeCount, id)
	})
}
