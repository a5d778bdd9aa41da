//go:build swarmlab

package swarm

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vxsec/vxsec/lab"
)

// stackFile is a compose file as a user writes one for vxsec: an encrypted,
// attachable network with its own subnet; a service in VIP mode, one in
// dnsrr mode, and one that also publishes a port through Docker's ingress.
func stackFile() string {
	return fmt.Sprintf(`version: "3.8"
services:
  web:
    image: %[1]s
    command: ["sh", "-c", %[2]q]
    hostname: "{{.Task.Name}}"
    networks: [front]
    deploy:
      replicas: 2
  rr:
    image: %[1]s
    command: ["sh", "-c", %[2]q]
    hostname: "{{.Task.Name}}"
    networks: [front]
    deploy:
      replicas: 2
      endpoint_mode: dnsrr
  pub:
    image: %[1]s
    command: ["sh", "-c", %[2]q]
    hostname: "{{.Task.Name}}"
    networks: [front]
    ports:
      - "8080:80"
    deploy:
      replicas: 1
networks:
  front:
    driver: %[3]s
    driver_opts:
      encrypted: ""
    attachable: true
    ipam:
      config:
        - subnet: 10.98.0.0/24
`, imageRef, webCmd, pluginRef)
}

// phaseStack: `docker stack deploy` of stackFile with the engine's own CLI
// (Docker 28's stack support is in the CLI), its services reaching each
// other by name on the vxsec network, then `docker stack rm` leaving
// nothing: no service, no network on any node, no vxsec device of it.
func phaseStack(l *swarmLab, t testing.TB) {
	m, err := l.leader(all()...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	file := filepath.Join(env.run, "stack.yml")
	if err := os.WriteFile(file, []byte(stackFile()), 0o644); err != nil {
		t.Fatal(err)
	}
	copyFile(file, filepath.Join(env.logs, "stack.yml"))
	cli := func(args ...string) (string, error) {
		return lab.Command(l.ctx, append([]string{"docker", "-H", "unix://" + l.e[m].Socket()}, args...)...)
	}
	start := time.Now()
	if !l.check(t, "5.stack.deploy", func(t testing.TB) {
		out, err := cli("stack", "deploy", "--detach=true", "-c", file, "st")
		if err != nil {
			t.Errorf("docker stack deploy -c stack.yml st: %v: %s", err, out)
			return
		}
		t.Logf("ok: docker stack deploy -c stack.yml st (driver %s, driver_opts encrypted, attachable, ipam subnet 10.98.0.0/24): %s", pluginRef, strings.TrimSpace(out))
	}) {
		return
	}
	l.check(t, "5.stack.running", func(t testing.TB) {
		_, err := l.poll(300*time.Second, 2*time.Second, func() error {
			for svc, want := range map[string]int{"st_web": 2, "st_rr": 2, "st_pub": 1} {
				if n, err := l.e[m].RunningTasks(l.ctx, svc); n != want {
					errs, _ := l.e[m].TaskErrors(l.ctx, svc)
					return fmt.Errorf("%s: %d of %d tasks running (%v; task errors %q)", svc, n, want, err, errs)
				}
			}
			return nil
		})
		if err != nil {
			t.Errorf("%v", err)
			return
		}
		t.Logf("ok: st_web 2/2, st_rr 2/2, st_pub 1/1 running, %s after the deploy", secs(time.Since(start)))
	})
	l.check(t, "5.stack.network", func(t testing.TB) {
		insp, _, err := l.e[m].NetworkInspect(l.ctx, "st_front")
		_, enc := insp.Options["encrypted"]
		if err != nil || insp.Driver != pluginRef || !enc || !insp.Attachable || len(insp.IPAM.Config) == 0 || insp.IPAM.Config[0].Subnet != "10.98.0.0/24" {
			t.Errorf("docker network inspect st_front: driver %q options %v attachable %v ipam %+v (%v)", insp.Driver, insp.Options, insp.Attachable, insp.IPAM.Config, err)
			return
		}
		t.Logf("ok: st_front: driver %s, options %v, attachable, subnet 10.98.0.0/24", insp.Driver, insp.Options)
	})
	// A client: a container on the attachable network, on another node
	// than the leader's if there is one.
	c := all()[0]
	if c == m {
		c = all()[1]
	}
	for _, tc := range []struct{ id, name, mode string }{
		{"5.stack.vip", "web", "VIP"},
		{"5.stack.dnsrr", "rr", "dnsrr"},
		{"5.stack.pub", "pub", "VIP, also published through ingress"},
	} {
		l.check(t, tc.id, func(t testing.TB) {
			script := fmt.Sprintf(`for k in 1 2 3 4 5 6; do printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 %s 80 2>/dev/null | tail -n 1; done`, tc.name)
			var out string
			_, err := l.poll(60*time.Second, 2*time.Second, func() error {
				r, err := l.e[c].ContainerRun(l.ctx, imageRef, "st_front", "sh", "-c", script)
				out = strings.Join(strings.Fields(strings.ReplaceAll(r.Stdout, "\r", "")), " ")
				if err != nil || !strings.Contains(out, "st_"+tc.name+".") {
					return fmt.Errorf("answers %q (%v, %s)", out, err, r.Combined())
				}
				return nil
			})
			if err != nil {
				t.Errorf("docker run --network st_front on sl-e%d, HTTP to %s (%s): %v", c, tc.name, tc.mode, err)
				return
			}
			t.Logf("ok: docker run --network st_front on sl-e%d: HTTP to %s (%s) answered by %s", c, tc.name, tc.mode, out)
		})
	}

	l.check(t, "5.stack.rm", func(t testing.TB) {
		insp, _, err := l.e[m].NetworkInspect(l.ctx, "st_front")
		if err != nil || insp.ID == "" {
			t.Errorf("docker network inspect st_front before the rm: %v", err)
			return
		}
		if out, err := cli("stack", "rm", "st"); err != nil {
			t.Errorf("docker stack rm st: %v: %s", err, out)
			return
		}
		rm := time.Now()
		_, err = l.poll(180*time.Second, 2*time.Second, func() error {
			svcs, err := l.e[m].Services(l.ctx)
			for _, s := range svcs {
				if strings.HasPrefix(s.Spec.Name, "st_") {
					return fmt.Errorf("service %s is still there (%v)", s.Spec.Name, err)
				}
			}
			for _, i := range all() {
				nets, err := l.e[i].Networks(l.ctx, pluginRef)
				for _, n := range nets {
					if n.Name == "st_front" {
						return fmt.Errorf("sl-e%d still lists st_front (%v)", i, err)
					}
				}
				st, _, err := l.e[i].VxsecStatus(l.ctx, pluginRef)
				if err != nil {
					return fmt.Errorf("sl-e%d: vxsec status: %v", i, err)
				}
				for _, n := range st.Networks {
					if n.ID == insp.ID {
						return fmt.Errorf("sl-e%d: vxsec still holds st_front (%+v)", i, n)
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Errorf("after docker stack rm st: %v", err)
			return
		}
		t.Logf("ok: docker stack rm st: no service, no st_front on any node, no endpoint of it in vxsec, %s after the rm", secs(time.Since(rm)))
	})
}
