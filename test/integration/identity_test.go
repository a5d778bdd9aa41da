//go:build integration

package integration

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vxsec/vxsec/identity"
	"github.com/vxsec/vxsec/internal/testutil"
	"github.com/vxsec/vxsec/lab"
	"github.com/vxsec/vxsec/plugin"
)

// TestAttackHostIdentities: daemons with identities from a cluster CA (`vxsec ca`)
// sign their tables and install only tables signed for the host they come
// from. h3 holds the cluster secret but no identity: it joins (the secret
// admits it to gossip), yet h1 and h2 refuse its table and its pulls, and
// count both, so c3 has no entry on h1 or h2, h3 learns no endpoint, and c1
// cannot reach c3.
// The positive control: h3 restarted with an identity of its own is
// installed and reached. A host given an identity for another host's address
// refuses to start, saying so.
func TestAttackHostIdentities(t *testing.T) {
	secret := lab.NewSecret()
	c := &cluster{lab: openLab(t, lab.ClusterEnv(secret)), secret: secret, ca: filepath.Join(t.TempDir(), "ca")}
	if err := identity.InitCA(c.ca, "integration", time.Hour); err != nil {
		t.Fatal(err)
	}
	add := func(name string, withIdentity bool) *lab.Host {
		if withIdentity {
			return c.addHost(t, name)
		}
		h, err := c.lab.AddHost(ctxT(t), name)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Start(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		c.hosts = append(c.hosts, h)
		return h
	}
	h1, h2, h3 := add("h1", true), add("h2", true), add("h3", false)
	c.waitMembers(t, c.hosts, c.hosts)

	const vni = 7811
	ids := createEverywhere(t, c.hosts, "idn", vni, "10.78.0.0/24")
	c1 := mustRun(t, h1, "c1", ids[h1], "10.78.0.11/24")
	c2 := mustRun(t, h2, "c2", ids[h2], "10.78.0.12/24")
	c3 := mustRun(t, h3, "c3", ids[h3], "10.78.0.13/24")
	waitCounts(t, h1, vni, 1, 1, 10*time.Second)
	waitCounts(t, h2, vni, 1, 1, 10*time.Second)
	reachFast(t, c1, c2.IP())
	reachFast(t, c2, c1.IP())
	for _, h := range []*lab.Host{h1, h2} {
		gs, err := h.GossipStats(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		if gs.Refused["table-identity"] == 0 {
			t.Fatalf("%s counted no refused table: %+v", h.Name, gs.Refused)
		}
		n, err := netStatus(ctxT(t), h, vni)
		if err != nil || n.Remote != 1 {
			t.Fatalf("%s installed h3's unsigned table: %+v %v", h.Name, n, err)
		}
		t.Logf("%s refused h3's unsigned table %d times; its network has 1 remote endpoint, not 2", h.Name, gs.Refused["table-identity"])
	}
	if !strings.Contains(h1.LogTail(400), "refusing a member's table: it does not prove its host") {
		t.Fatalf("h1 did not log the refusal")
	}
	testutil.Until(t, 10*time.Second, "h1 and h2 refuse h3's pulls", func() error {
		for _, h := range []*lab.Host{h1, h2} {
			gs, err := h.GossipStats(ctxT(t))
			if err != nil {
				return err
			}
			if gs.Refused["pull-identity"] == 0 {
				return fmt.Errorf("%s refused no pull: %+v", h.Name, gs.Refused)
			}
		}
		return nil
	})
	if n, err := netStatus(ctxT(t), h3, vni); err != nil || n.Remote != 0 {
		t.Fatalf("h3, with no identity, installed others' endpoints: %+v %v", n, err)
	}
	if st, err := h3.Status(ctxT(t)); err != nil || len(st.Alive()) != 3 {
		t.Fatalf("h3 is no member: %+v %v", st.Members, err)
	}
	if res, err := c1.Ping(ctxT(t), c3.IP(), "-c", "3", "-W", "1", "-i", "0.2"); err == nil && res.Received != 0 {
		t.Fatalf("c1 reached c3, whose host proves no identity: %+v", res)
	}

	// The control: the same h3 with an identity of its own.
	h3.Env = append(h3.Env, c.identityEnv(t, "h3", h3.Addr))
	if err := h3.Restart(ctxT(t), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitCounts(t, h1, vni, 1, 2, 15*time.Second)
	waitCounts(t, h2, vni, 1, 2, 15*time.Second)
	waitCounts(t, h3, vni, 1, 2, 15*time.Second)
	reachFast(t, c1, c3.IP())

	// Revocation: the CA revokes h3, and only h1 is given the list. Every
	// host drops h3's endpoints within the bound; h3 is still a member.
	crl, _, err := identity.Revoke(c.ca, "h3")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := h1.Client().Call(ctxT(t), "VxSec.LoadCRL", plugin.LoadCRLRequest{CRL: crl}, nil); err != nil {
		t.Fatal(err)
	}
	took := waitCounts(t, h2, vni, 1, 1, 15*time.Second)
	waitCounts(t, h1, vni, 1, 1, 5*time.Second)
	t.Logf("h2 dropped revoked h3's endpoint %s after h1 was given the list (%s in all)", took.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	st, err := h2.Status(ctxT(t))
	if err != nil || st.Identity == nil || st.Identity.CRL != 1 {
		t.Fatalf("h2's status does not show the revocation list: %+v %v", st.Identity, err)
	}
	if len(st.Alive()) != 3 {
		t.Fatalf("h2 sees %d members alive; h3, revoked, still holds the secret and is one", len(st.Alive()))
	}
	if res, err := c2.Ping(ctxT(t), c3.IP(), "-c", "3", "-W", "1", "-i", "0.2"); err == nil && res.Received != 0 {
		t.Fatalf("c2 reached c3 after h3 was revoked: %+v", res)
	}
	reachFast(t, c1, c2.IP())

	// An identity issued for h2's address, given to h4.
	h4, err := c.lab.AddHost(ctxT(t), "h4")
	if err != nil {
		t.Fatal(err)
	}
	h4.Env = append(h4.Env, c.identityEnv(t, "h4", h2.Addr))
	err = h4.Start(ctxT(t))
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("certified for [%s], not %s", h2.Addr, h4.Addr)) {
		t.Fatalf("h4 started with another host's identity, or did not say why not: %v", err)
	}
	t.Logf("h4 refused to start: %s", strings.TrimSpace(lastLine(err.Error(), "identity-dir")))
}

// lastLine is the last line of s that holds sub.
func lastLine(s, sub string) string {
	out := ""
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = l
		}
	}
	return out
}

// TestIdentityRenewal: `vxsec ca issue` again into a running host's
// identity directory renews its certificate without a restart: the daemon
// takes it (its status shows the new expiry), signs its next table with
// it, and revoking the old certificate then leaves the host trusted by its
// peer, which keeps its endpoint and reaches its container. Control:
// revoking the new certificate drops it.
func TestIdentityRenewal(t *testing.T) {
	c := newIdentityCluster(t, 2)
	h1, h2 := c.hosts[0], c.hosts[1]
	const vni = 7812
	ids := createEverywhere(t, c.hosts, "renew", vni, "10.78.12.0/24")
	c1 := mustRun(t, h1, "c1", ids[h1], "10.78.12.11/24")
	c2 := mustRun(t, h2, "c2", ids[h2], "10.78.12.12/24")
	waitCounts(t, h2, vni, 1, 1, 10*time.Second)
	reachFast(t, c2, c1.IP())
	var dir string
	for _, e := range h1.Env {
		if v, ok := strings.CutPrefix(e, "VXSEC_IDENTITY_DIR="); ok {
			dir = v
		}
	}
	running, _, err := identity.Load(dir, h1.Addr)
	if err != nil {
		t.Fatal(err)
	}
	oldSerial := hex.EncodeToString(running.Serial().Bytes())
	served := func() uint64 {
		gs, err := h1.GossipStats(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		return gs.Accepted["pull"]
	}
	pullsBefore := served()
	t0 := time.Now()
	if _, err := identity.Issue(c.ca, dir, "h1", []netip.Addr{h1.Addr}, time.Hour); err != nil {
		t.Fatal(err)
	}
	next, _, err := identity.Load(dir, h1.Addr)
	if err != nil {
		t.Fatal(err)
	}
	newSerial := hex.EncodeToString(next.Serial().Bytes())
	took := testutil.Until(t, 30*time.Second, "h1 takes the renewed certificate", func() error {
		st, err := h1.Status(ctxT(t))
		if err != nil {
			return err
		}
		if st.Identity == nil || st.Identity.Serial != newSerial {
			return fmt.Errorf("h1's identity %+v, want serial %s", st.Identity, newSerial)
		}
		return nil
	})
	t.Logf("h1 took the renewed certificate %s after it was written, without a restart", took.Round(time.Millisecond))
	// The old certificate revoked: h2 keeps h1 (its tables are signed with
	// the new one now).
	crl, _, err := identity.Revoke(c.ca, oldSerial)
	if err != nil {
		t.Fatal(err)
	}
	// h2 pulls the table h1 signed anew (h1 serves a pull: nothing else
	// changes in this quiet cluster).
	testutil.Until(t, 10*time.Second, "h2 pulls h1's re-signed table", func() error {
		if n := served(); n <= pullsBefore {
			return fmt.Errorf("h1 served %d pulls, %d before the renewal", n, pullsBefore)
		}
		return nil
	})
	if err := h2.Client().Call(ctxT(t), "VxSec.LoadCRL", plugin.LoadCRLRequest{CRL: crl}, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if n, err := netStatus(ctxT(t), h2, vni); err != nil || n.Remote != 1 {
		t.Fatalf("h2 dropped h1 when the certificate it replaced was revoked: %+v %v", n, err)
	}
	reachFast(t, c2, c1.IP())
	// Control: the certificate in use revoked: h2 drops h1.
	crl, _, err = identity.Revoke(c.ca, newSerial)
	if err != nil {
		t.Fatal(err)
	}
	if err := h2.Client().Call(ctxT(t), "VxSec.LoadCRL", plugin.LoadCRLRequest{CRL: crl}, nil); err != nil {
		t.Fatal(err)
	}
	waitCounts(t, h2, vni, 1, 0, 10*time.Second)
	t.Logf("renewal to revocation of the old certificate: h1 kept (%s in all); control: revoking the new one dropped h1", time.Since(t0).Round(time.Millisecond))
}
