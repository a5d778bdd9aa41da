//go:build swarmlab

package swarm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vxsec/vxsec/lab"
)

// labPhases are TestSwarmLab's phases, in order: each needs the state the
// earlier ones leave. Selected alone (-test.run 'TestSwarmLab/<name>'), a
// phase runs the phases it needs first.
var labPhases = []phaseDef{
	{name: "swarm", critical: true, run: phaseSwarm},
	{name: "plugin", needs: []string{"swarm"}, critical: true, run: phasePlugin},
	{name: "trust", needs: []string{"plugin"}, run: phaseTrust},
	{name: "outsider_rotation", needs: []string{"trust"}, run: phaseOutsiderRotation},
	{name: "services", needs: []string{"trust"}, critical: true, run: phaseServices},
	{name: "stack", needs: []string{"services"}, run: phaseStack},
	{name: "outsider_check", needs: []string{"outsider_rotation"}, run: phaseOutsiderCheck},
	{name: "trust_after_rotation", needs: []string{"outsider_rotation"}, run: phaseTrustAfterRotation},
	{name: "secret_rotation", needs: []string{"services"}, run: phaseSecretRotation},
	{name: "upgrade", needs: []string{"services"}, run: phaseUpgrade},
	{name: "failover", needs: []string{"services"}, run: phaseFailover},
	{name: "remove", needs: []string{"services"}, run: phaseRemove},
	{name: "cleanup", needs: []string{"plugin"}, run: phaseCleanup},
}

func phaseNamed(name string) (phaseDef, bool) {
	for _, p := range append(labPhases, benchPhases...) {
		if p.name == name {
			return p, true
		}
	}
	return phaseDef{}, false
}

// TestSwarmLab is the swarm lab's test: every phase, in order.
func TestSwarmLab(t *testing.T) {
	if env.bench {
		t.Skip("SWARM_LAB_MODE=bench: the benchmark (TestSwarmBench) runs instead")
	}
	l := newSwarmLab(t)
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	t.Logf("swarm lab: kernel %s, plugin %s (upgrade %s), deadline %v", strings.TrimSpace(string(kernel)), l.v1, l.v2, env.deadline)
	for _, p := range labPhases {
		l.phase(t, p)
	}
}

// ---------------------------------------------------------------------------
// 1: the swarm, the registry, the plugin
// ---------------------------------------------------------------------------

// pusher is what sl-e1 pushes to the registry while the swarm forms: the
// plugin and the image, then the upgrade's plugin, which is not needed
// before the upgrade phase.
type pusher struct {
	pushed   chan struct{} // the registry, the plugin and the image are done
	upgraded chan struct{} // the upgrade's plugin is done

	registry, plugin, image, upgrade error
	registryTook, pushTook           time.Duration
	upgradeTook                      time.Duration

	mu  sync.Mutex
	log strings.Builder
}

func (p *pusher) logf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(&p.log, time.Now().Format("15:04:05.000 ")+format+"\n", args...)
}

func (p *pusher) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

func (l *swarmLab) startPusher(withUpgrade bool) {
	p := &pusher{pushed: make(chan struct{}), upgraded: make(chan struct{})}
	l.push = p
	e := l.e[1]
	pushPlugin := func(name, dir string) error {
		if err := e.PluginCreate(l.ctx, name, dir); err != nil {
			return fmt.Errorf("docker plugin create %s: %w", name, err)
		}
		if err := e.PluginPush(l.ctx, name); err != nil {
			return fmt.Errorf("docker plugin push %s: %w", name, err)
		}
		if err := e.PluginRemove(l.ctx, name, true); err != nil {
			return fmt.Errorf("docker plugin rm -f %s: %w", name, err)
		}
		return nil
	}
	go func() {
		defer close(p.upgraded)
		start := time.Now()
		p.registry = l.reg.Wait(l.ctx, 120*time.Second)
		p.registryTook = time.Since(start)
		p.logf("registry: %v after %s", p.registry, secs(p.registryTook))
		if p.registry == nil {
			p.plugin = pushPlugin(pluginRef, filepath.Join(env.art, "plugin-v1"))
			p.logf("plugin %s: %v", pluginRef, p.plugin)
		}
		if p.registry == nil && p.plugin == nil {
			p.image = e.ImageImport(l.ctx, filepath.Join(env.art, "busybox.tar"), imageRef,
				"ENV PATH=/bin:/sbin:/usr/bin:/usr/sbin", `CMD ["/bin/sh"]`)
			if p.image == nil {
				p.image = e.ImagePush(l.ctx, imageRef)
			}
			p.logf("image %s: %v", imageRef, p.image)
		}
		p.pushTook = time.Since(start)
		close(p.pushed)
		switch {
		case p.registry != nil || p.plugin != nil || p.image != nil:
			p.upgrade = errors.New("not pushed: the registry, the plugin or the image failed before it")
		case !withUpgrade:
			p.upgrade = errors.New("not pushed (the benchmark needs no upgrade)")
		default:
			start = time.Now()
			p.upgrade = pushPlugin(pluginRef2, filepath.Join(env.art, "plugin-v2"))
			p.upgradeTook = time.Since(start)
			p.logf("upgrade %s: %v after %s", pluginRef2, p.upgrade, secs(p.upgradeTook))
		}
	}()
}

func phaseSwarm(l *swarmLab, t testing.TB) {
	l.must(t, "1.underlay", func(t testing.TB) {
		if err := l.underlay(); err != nil {
			t.Errorf("could not build the underlay (bridge %s, namespaces sl-e1..sl-e%d): %v", bridge, nodeCount, err)
			return
		}
		if err := run(l.ctx, "ip", "netns", "exec", "sl-e1", "ping", "-c", "1", "-W", "5", addr(nodeCount)); err != nil {
			t.Errorf("sl-e1 does not reach sl-e%d over the lab bridge: %v", nodeCount, err)
			return
		}
		t.Logf("ok: sl-e1 reaches sl-e%d (%s) over the lab bridge", nodeCount, addr(nodeCount))
	})
	reg, err := lab.StartRegistry(regAddr, filepath.Join(libDir, "registry"))
	if err != nil {
		t.Fatal(err)
	}
	l.reg = reg
	if err := l.newEngines(); err != nil {
		t.Fatal(err)
	}
	l.must(t, "1.engines", func(t testing.TB) {
		start := time.Now()
		for _, i := range all() {
			if err := l.e[i].Start(); err != nil {
				t.Errorf("%v", err)
				return
			}
		}
		for k, err := range parallel(all(), func(i int) error { return l.e[i].Wait(l.ctx, 300*time.Second) }) {
			if err != nil {
				t.Errorf("engine sl-e%d exited or did not answer within 300 s: %v", k+1, err)
			}
		}
		if t.Failed() {
			return
		}
		v, _ := l.e[1].Client.ServerVersion(l.ctx)
		t.Logf("time: %d engines (containerd + dockerd %s, API %s, started in parallel) answer after %s",
			nodeCount, v.Version, l.e[1].Client.ClientVersion(), since(start))
	})

	// sl-e1 pushes the plugin and the image while the others join.
	l.startPusher(!env.bench)

	start := time.Now()
	l.must(t, "1.swarm.init", func(t testing.TB) {
		if err := l.e[1].SwarmInit(l.ctx); err != nil {
			t.Errorf("docker swarm init --advertise-addr %s on sl-e1: %v", addr(1), err)
			return
		}
		t.Logf("ok: docker swarm init --advertise-addr %s on sl-e1", addr(1))
	})
	var token string
	l.must(t, "1.swarm.token", func(t testing.TB) {
		var err error
		if token, err = l.e[1].JoinToken(l.ctx, true); err != nil || token == "" {
			t.Errorf("docker swarm join-token -q manager: %q, %v", token, err)
		}
	})
	for _, i := range all()[1:] {
		l.must(t, fmt.Sprintf("1.swarm.join.e%d", i), func(t testing.TB) {
			if err := l.e[i].SwarmJoin(l.ctx, token, l.e[1]); err != nil {
				t.Errorf("sl-e%d joins as a manager (docker swarm join --token <manager> %s:2377): %v", i, addr(1), err)
				return
			}
			t.Logf("ok: sl-e%d joined as a manager", i)
		})
	}
	l.must(t, "1.swarm", func(t testing.TB) {
		n := 0
		_, err := l.poll(180*time.Second, time.Second, func() error {
			var err error
			if n, err = l.e[1].ReadyNodes(l.ctx); err != nil || n != nodeCount {
				return fmt.Errorf("%d of %d nodes ready (%v)", n, nodeCount, err)
			}
			return nil
		})
		if err != nil {
			t.Errorf("swarm of %d managers, after the joins: %v", nodeCount, err)
			return
		}
		t.Logf("ok: swarm of %d managers: %d nodes ready", nodeCount, n)
		t.Logf("time: swarm init + %d joins until %d nodes ready: %s", nodeCount-1, nodeCount, since(start))
	})

	// The plugin and the image must be in the registry; the upgrade's
	// plugin follows in the background.
	select {
	case <-l.push.pushed:
	case <-l.ctx.Done():
		t.Fatalf("the lab's deadline came while sl-e1 pushed the plugin and the image")
	}
	p := l.push
	l.must(t, "1.registry", func(t testing.TB) {
		if p.registry != nil {
			t.Errorf("%v", p.registry)
			return
		}
		t.Logf("ok: registry answers at http://%s/v2/ (%s)", regAddr, secs(p.registryTook))
	})
	l.must(t, "1.push.plugin", func(t testing.TB) {
		if p.plugin != nil || p.registry != nil {
			t.Errorf("docker plugin create %s (rootfs built on the host) + docker plugin push: %v", pluginRef, errors.Join(p.registry, p.plugin))
			return
		}
		t.Logf("ok: docker plugin create %s (rootfs built on the host) + docker plugin push", pluginRef)
	})
	l.must(t, "1.push.image", func(t testing.TB) {
		if p.image != nil || p.plugin != nil || p.registry != nil {
			t.Errorf("docker import + docker push %s: %v", imageRef, errors.Join(p.registry, p.plugin, p.image))
			return
		}
		t.Logf("ok: docker import + docker push %s", imageRef)
		t.Logf("time: registry up, plugin and image pushed from sl-e1: %s", secs(p.pushTook))
	})
}

func phasePlugin(l *swarmLab, t testing.TB) {
	start := time.Now()
	// No VXSEC_SECRET, no VXSEC_JOIN: zero-config. swarm.source: this
	// engine's swarm directory (its data root is not /var/lib/docker).
	errs := parallel(all(), func(i int) error {
		return l.e[i].PluginInstall(l.ctx, pluginRef, "swarm.source="+l.e[i].SwarmDir(), "VXSEC_LOG_LEVEL=debug")
	})
	ok := true
	for _, i := range all() {
		ok = l.checkErr(t, fmt.Sprintf("1.install.e%d", i), errs[i-1],
			fmt.Sprintf("sl-e%d: docker plugin install --grant-all-permissions %s swarm.source=%s (no secret, no join)", i, pluginRef, l.e[i].SwarmDir())) && ok
	}
	if !ok {
		t.Fatalf("the plugin is not installed everywhere")
	}
	t.Logf("time: %d plugin installs from the registry (in parallel): %s", nodeCount, since(start))
	for _, i := range all() {
		l.check(t, fmt.Sprintf("1.enabled.e%d", i), func(t testing.TB) {
			p, err := l.e[i].Plugin(l.ctx, pluginRef)
			if err != nil || !p.Enabled {
				t.Errorf("sl-e%d: docker plugin ls does not show %s enabled: %+v %v", i, pluginRef, p, err)
				return
			}
			t.Logf("ok: sl-e%d: docker plugin ls shows %s enabled", i, pluginRef)
		})
	}
	l.installedAt = time.Now()
	// The image on the other nodes now, while the cluster forms: the
	// services start sooner.
	for _, i := range all()[1:] {
		go l.e[i].ImagePull(l.ctx, imageRef)
	}
}
