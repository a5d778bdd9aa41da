//go:build integration

package integration

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vxsec/vxsec/internal/testutil"
	"github.com/vxsec/vxsec/lab"
)

// TestSecretRollingChange: outside swarm, a running cluster moves to a new
// VXSEC_SECRET host by host (docs/identity.md): every host first accepts
// the new secret (VXSEC_SECRET_ACCEPT), then sends with it and accepts the
// old, then drops the old. Under a 100 packets/s ping across hosts: 0 lost.
// h4 is the host being cut off (revoked, or gone for good): it keeps the
// old secret only. It is a member until the old secret is dropped, and
// after that no host lists it as alive and it cannot rejoin.
func TestSecretRollingChange(t *testing.T) {
	c := newIdentityCluster(t, 4)
	hosts, h4 := c.hosts[:3], c.hosts[3]
	const vni = 7306
	ids := createEverywhere(t, c.hosts, "roll", vni, "10.73.6.0/24")
	var cs []*lab.Container
	for i, h := range c.hosts {
		cs = append(cs, mustRun(t, h, fmt.Sprintf("r%d", i+1), ids[h], fmt.Sprintf("10.73.6.%d/24", 10+i)))
	}
	for _, h := range c.hosts {
		waitCounts(t, h, vni, 1, 3, 15*time.Second)
	}
	reachFast(t, cs[0], cs[2].IP())
	reachFast(t, cs[0], cs[3].IP())

	newSecret := lab.NewSecret()
	// aliveAmong: every host of on lists every host of want alive.
	aliveAmong := func(on, want []*lab.Host) func() error {
		return func() error {
			for _, h := range on {
				st, err := h.Status(ctxT(t))
				if err != nil {
					return err
				}
				for _, w := range want {
					if !slices.Contains(st.Alive(), w.Addr.String()) {
						return fmt.Errorf("%s does not list %s alive", h.Name, w.Name)
					}
				}
			}
			return nil
		}
	}
	steps := []struct {
		what string
		env  []string
	}{
		{"accept the new secret", []string{"VXSEC_SECRET_ACCEPT=" + newSecret}},
		{"send with the new secret, accept the old", []string{"VXSEC_SECRET=" + newSecret, "VXSEC_SECRET_ACCEPT=" + c.secret}},
		{"drop the old secret", []string{"VXSEC_SECRET_ACCEPT="}},
	}
	start := time.Now()
	res, err := cs[0].PingAcross(ctxT(t), cs[2].IP(), []string{"-i", "0.01"}, func() error {
		for _, step := range steps {
			for _, h := range hosts {
				h.Env = append(h.Env, step.env...)
				if err := h.Restart(ctxT(t), syscall.SIGTERM); err != nil {
					return err
				}
				testutil.Until(t, 20*time.Second, step.what+": "+h.Name+" back", aliveAmong(hosts, hosts))
				// Every host holds the others' endpoints (h4's too, or
				// not, depending on the step).
				testutil.Until(t, 20*time.Second, step.what+": every endpoint of h1..h3 held", func() error {
					for _, o := range hosts {
						n, err := netStatus(ctxT(t), o, vni)
						if err != nil || n.Local != 1 || n.Remote < 2 {
							return fmt.Errorf("%s: %+v %v", o.Name, n, err)
						}
					}
					return nil
				})
			}
			t.Logf("step %q done on every host, %s after the change began", step.what, time.Since(start).Round(time.Millisecond))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent < 100 || res.Loss() != 0 {
		t.Fatalf("ping c1 → c3 at 100/s across the change: %d sent, %d lost; want 0 lost", res.Sent, res.Loss())
	}
	t.Logf("secret changed host by host on 3 hosts in %s: ping c1 → c3 at 100/s: %d sent, %d lost", time.Since(start).Round(time.Millisecond), res.Sent, res.Loss())

	// h4, left with the old secret only, is cut off: no host lists it
	// alive, each drops its endpoint once the grace for a failed member
	// ends, it reaches nobody, and a restart does not bring it back.
	cut := time.Now()
	testutil.Until(t, 30*time.Second, "no host lists h4 alive", func() error {
		for _, h := range hosts {
			st, err := h.Status(ctxT(t))
			if err != nil {
				return err
			}
			if slices.Contains(st.Alive(), h4.Addr.String()) {
				return fmt.Errorf("%s lists h4 alive", h.Name)
			}
		}
		return nil
	})
	for _, h := range hosts {
		waitCounts(t, h, vni, 1, 2, 90*time.Second)
	}
	t.Logf("h1..h3 dropped h4's endpoint %s after the old secret was dropped (the grace for a failed member included)", time.Since(cut).Round(time.Millisecond))
	if err := h4.Restart(ctxT(t), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	for _, h := range hosts {
		st, err := h.Status(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(st.Alive(), h4.Addr.String()) {
			t.Fatalf("h4 rejoined %s with the old secret", h.Name)
		}
	}
	if r, err := cs[0].Ping(ctxT(t), cs[3].IP(), "-c", "3", "-W", "1", "-i", "0.2"); err == nil && r.Received != 0 {
		t.Fatalf("c1 reached c4 on h4, left with the old secret: %+v", r)
	}
	st, _ := h4.Status(ctxT(t))
	t.Logf("h4 (old secret only) is no member of the others (it lists %s alive) and its container is not reached", strings.Join(st.Alive(), " "))
}
