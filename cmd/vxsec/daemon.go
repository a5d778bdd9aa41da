package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netlink"

	"github.com/vxsec/vxsec/atomicfile"
	"github.com/vxsec/vxsec/config"
	"github.com/vxsec/vxsec/driver"
	"github.com/vxsec/vxsec/engine"
	"github.com/vxsec/vxsec/espprobe"
	"github.com/vxsec/vxsec/firewall"
	"github.com/vxsec/vxsec/gossip"
	"github.com/vxsec/vxsec/identity"
	"github.com/vxsec/vxsec/ipam"
	"github.com/vxsec/vxsec/ipsec"
	"github.com/vxsec/vxsec/metrics"
	"github.com/vxsec/vxsec/pathprobe"
	"github.com/vxsec/vxsec/plugin"
	"github.com/vxsec/vxsec/swarmtrust"
	"github.com/vxsec/vxsec/vip"
	"github.com/vxsec/vxsec/vxlan"
)

// reconcileEvery is how often drift in the kernel is repaired.
const reconcileEvery = 30 * time.Second

func daemonCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "run the network plugin (what Docker starts)",
		Args:  cobra.NoArgs,
	}
	config.RegisterFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		s, err := config.Load(cmd.Flags())
		if err != nil {
			return err
		}
		level, _ := config.ParseLogLevel(s.LogLevel)
		// Stdout: dockerd files a plugin's stderr lines as errors.
		log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: level}))
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		defer startProfile(log)()
		setGC(s.GCPercent, log)
		return runDaemon(ctx, s, log)
	}
	return cmd
}

// setGC gives the collector the target the settings name
// (config.DefaultGCPercent, and why, is there), unless $GOGC set one: the
// runtime has applied that already, and a daemon run by hand keeps Go's
// own knob.
func setGC(percent int, log *slog.Logger) {
	if os.Getenv("GOGC") != "" {
		log.Debug("garbage collector target from $GOGC", "gogc", os.Getenv("GOGC"))
		return
	}
	debug.SetGCPercent(percent)
	log.Debug("garbage collector target", "gogc", percent)
}

// runDaemon serves until ctx ends. On the way out it leaves every device
// and rule in place: containers keep talking while the plugin is away.
func runDaemon(ctx context.Context, s config.Settings, log *slog.Logger) error {
	// Listen first: Docker gives a managed plugin ~9.5 s to show its socket.
	l, err := plugin.Listen(s.Socket)
	if err != nil {
		return err
	}
	defer l.Close()

	var want netip.Addr
	if s.AdvertiseAddr != "" {
		want = netip.MustParseAddr(s.AdvertiseAddr) // validated by config
	}
	under, err := vxlan.FindUnderlay(want)
	if err != nil {
		return fmt.Errorf("finding the underlay: %w", err)
	}
	var (
		self     *identity.Identity
		verifier *identity.Verifier
	)
	if s.IdentityDir != "" {
		if self, verifier, err = identity.Load(s.IdentityDir, under.Addr); err != nil {
			return fmt.Errorf("identity-dir: %w", err)
		}
	}
	if under.BehindNAT() {
		log.Info("behind NAT: the advertise address is not this host's own, so it is taken as the public address of a NAT "+
			"that forwards vxsec's ports to this host's own address; encrypted networks use ESP in UDP with every peer (in auto mode)",
			"advertise", under.Addr, "local", under.Local, "forward", fmt.Sprintf("TCP and UDP %d (gossip), UDP %d (data), UDP %d (ESP in UDP)",
				s.GossipPort, s.DataPort, s.ESPUDPPort))
	}
	dp, err := vxlan.New(net.IP(under.Local.AsSlice()), s.DataPort, log)
	if err != nil {
		return err
	}
	defer dp.Close()
	store, err := driver.OpenStore(s.StateDir)
	if err != nil {
		return err
	}
	if verifier != nil {
		keepCRL(s.StateDir, verifier, log)
	}
	xh, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("opening netlink for xfrm: %w", err)
	}
	defer xh.Close()
	// The cluster's trust: VXSEC_SECRET, or on a swarm node without it the
	// secret the swarm's nodes agree over mutual TLS (swarmtrust).
	cl := newClusterRef()
	trust := swarmTrust(s, under, cl.peers, log)
	xfrm := ipsec.NewXfrm(xh, under.Local, s.EncryptedPort).WithUDP(uint16(s.ESPUDPPort)).BehindNAT(under.Addr)
	keys := ipsec.NewManager(ipsec.ManagerConfig{
		Local: under.Addr, Kernel: xfrm, Log: log,
		Identity: keyIdentity(self, trust), UDPPort: uint16(s.ESPUDPPort), UDPAlways: s.ESPEncap == config.EncapUDP,
		UDPAuto: s.ESPEncap == config.EncapAuto, BehindNAT: under.BehindNAT(), Grace: ipsec.DefaultGrace,
	})
	fw := firewall.New()
	now, err := testClock(log)
	if err != nil {
		return err
	}
	// Swarm service VIPs (package vip): on swarm nodes, where services are.
	scope := dataScope(s)
	caller := &plugin.Engine{}
	docker := engine.New(caller.Pid)
	var services *vip.Balancer
	if scope == config.ScopeGlobal {
		src := vip.FromEngine(docker)
		services = vip.New(vip.Config{Engine: src, Namespaces: src, Log: log.With("component", "vip")})
	}
	d, err := driver.New(driver.Config{
		Services: servicesOf(services),
		Store:    store, DataPath: dp, Firewall: fw, DataPort: uint16(s.DataPort),
		EncryptedPort: uint16(s.EncryptedPort), ESPUDPPort: uint16(s.ESPUDPPort), IPsec: keys, Authenticated: s.Secret != nil || trust != nil,
		Identified:  (self != nil || trust != nil) && s.Identity == config.IdentityRequired,
		RotateEvery: s.RotateEvery,
		Underlay:    under, ReconcileEvery: reconcileEvery, Log: log, Now: now,
		ProbeESP: espprobe.Send, ProbeEvery: espprobe.Every, Keepalive: xfrm.Keepalives,
	})
	if err != nil {
		return err
	}
	if err := d.Reconcile(ctx); err != nil {
		// Serve anyway: what could not be repaired now is retried, and
		// Docker's calls report their own errors.
		log.Error("reconcile at start failed", "err", err)
	}
	log.Info("vxsec daemon serving", "version", version, "socket", s.Socket,
		"advertise", under.Addr, "underlay", under.Interface, "underlay_mtu", under.MTU, "scope", scope,
		"data_port", s.DataPort, "encrypted_port", s.EncryptedPort, "esp_encap", s.ESPEncap, "esp_udp_port", s.ESPUDPPort, "rotate_every", s.RotateEvery, "networks", len(d.Networks()))
	switch {
	case self != nil:
		log.Info("host identity: this host signs its tables and accepts only signed ones", "name", self.Name,
			"expires", self.Expires(), "mode", s.Identity)
	case trust != nil:
		log.Info("host identity: the swarm node certificate; this host signs its tables with it and a manager's pass for its address",
			"mode", s.Identity)
	case s.Secret != nil:
		log.Warn("no host identity: every holder of the cluster secret can speak for every host. " +
			"Give each host an identity (`vxsec ca init`, `vxsec ca issue`, VXSEC_IDENTITY_DIR)")
	}
	if len(s.AcceptSecrets) > 0 {
		log.Info("also accepting other cluster secrets, never sending with them: a rolling change of VXSEC_SECRET "+
			"(unset VXSEC_SECRET_ACCEPT on every host once all send with the new one)", "accepted", len(s.AcceptSecrets))
	}
	if s.Secret == nil && trust == nil {
		log.Warn("NO CLUSTER SECRET: the vxsec cluster is neither authenticated nor encrypted; any host that " +
			"reaches the gossip port can join and announce endpoints. Set VXSEC_SECRET (from `vxsec secret`) on every host")
	}

	defer func() {
		c := cl.get()
		if c == nil {
			return
		}
		// With no network there is nothing a restart could lose: leave, so
		// peers forget this host at once. Otherwise stay, for a restart.
		if len(d.Networks()) == 0 {
			if err := c.Leave(); err != nil {
				log.Warn("leaving the cluster", "err", err)
			}
			return
		}
		c.Close()
	}()
	// Everything below is owned here: stopped and awaited on the way out,
	// whether Serve ended by signal or by error. A failure of the cluster
	// (its port taken) ends the daemon through fail.
	runCtx, fail := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	defer func() {
		fail(nil)
		wg.Wait()
	}()
	run := func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	}
	run(func() { d.Run(runCtx) })
	// Path probes to every alive member's data port, for the doctor (what
	// members recorded of them is what it reads).
	run(func() {
		pathprobe.Run(runCtx, pathprobe.Config{Local: under.Local, Self: under.Addr, Port: s.DataPort, MTU: under.MTU,
			Peers: alivePeers(cl), Log: log.With("component", "pathprobe")})
	})
	if services != nil {
		run(func() { services.Run(runCtx) })
	}
	if trust != nil {
		run(func() { evictRemoved(runCtx, docker, trust, cl, log) })
	}
	if trust != nil {
		run(func() {
			if err := trust.Run(runCtx); err != nil {
				fail(err)
			}
		})
	}
	// What this host answers a doctor, on any member (the query), and the
	// doctor run from this host.
	clock := now
	if clock == nil {
		clock = time.Now
	}
	facts := &doctorHost{fw: fw, keys: keys, d: d, docker: docker, swarmDir: s.SwarmDir, encap: s.ESPEncap, mtu: under.MTU,
		now: clock, log: log.With("component", "doctor")}
	doc := newDoctorRunner(cl, under.Addr, s, clock)
	// The cluster starts once there is a secret: at once with VXSEC_SECRET,
	// after the first agreement in swarm mode. The API serves meanwhile
	// (Docker gives a plugin seconds to answer, not minutes).
	run(func() {
		secret := s.Secret
		if trust != nil {
			var err error
			if secret, err = trust.Secret(runCtx); err != nil {
				return
			}
		}
		var seeds []string
		for _, j := range s.Join {
			host, port, _ := config.SplitJoinAddr(j, s.GossipPort) // validated by config
			seeds = append(seeds, net.JoinHostPort(host, strconv.Itoa(port)))
		}
		var accept [][]byte
		if trust == nil {
			accept = s.AcceptSecrets
		}
		gcfg := gossip.Config{
			Addr: under.Addr, Bind: under.Local, Port: s.GossipPort, Secret: secret, Accept: accept,
			SnapshotPath: s.Snapshot, EpochFile: epochFile(s),
			Seeds: seeds, Sink: d, Local: d, Log: log, Queries: facts.answerQuery,
		}
		switch {
		case self != nil:
			gcfg.Signer, gcfg.Verifier, gcfg.RequireSigned = self, verifier, s.Identity == config.IdentityRequired
		case trust != nil:
			// The swarm node certificate, with a manager's pass for
			// this host's address.
			tables := trust.Tables()
			gcfg.Signer, gcfg.Verifier, gcfg.RequireSigned = tables, tables, s.Identity == config.IdentityRequired
		}
		c, err := gossip.Start(runCtx, gcfg)
		if err != nil {
			fail(err)
			return
		}
		cl.set(c)
	})
	if self != nil {
		run(func() {
			if c := cl.wait(runCtx); c != nil {
				watchIdentity(runCtx, s.IdentityDir, under.Addr, self, c.Resign, log)
			}
		})
	}
	if swarmtrust.InSwarm(s.SwarmDir) {
		run(func() {
			if c := cl.wait(runCtx); c != nil {
				followSwarm(runCtx, s, under.Addr, c, trust != nil, log)
			}
		})
	}
	if trust != nil {
		// A new agreement (a rotation, an eviction) moves the cluster to
		// it. With the swarm's identity (no VXSEC_IDENTITY_DIR): a new
		// pass signs the tables from now on, and a new eviction list
		// drops the tables of the nodes it names, with their endpoints
		// and keys (the list spreads in this host's next table).
		run(func() {
			c := cl.wait(runCtx)
			if c == nil {
				return
			}
			for {
				select {
				case <-runCtx.Done():
					return
				case next := <-trust.Changed():
					if err := c.SetSecret(next); err != nil {
						log.Error("moving the cluster to the swarm's secret", "err", err)
					}
				case <-trust.PassChanged():
					if self == nil {
						c.Resign()
					}
				case <-trust.EvictionsChanged():
					if self == nil {
						c.RevocationChanged()
					}
				}
			}
		})
	}

	discovered := func(ev plugin.NodeEvent) {
		// Swarm sends only this node's own address (docs/swarm.md): peers
		// come from the swarm's managers (followSwarm) or VXSEC_JOIN.
		c := cl.get()
		if ev.Self || c == nil {
			return
		}
		if ev.Added {
			c.Join([]string{net.JoinHostPort(ev.Addr, strconv.Itoa(s.GossipPort))})
		} else if a, err := netip.ParseAddr(ev.Addr); err == nil {
			c.ForceLeave(a)
		}
	}
	var api *plugin.API // status shows its refusals
	status := func(req plugin.StatusRequest) any {
		st := daemonStatus{Status: d.Status()}
		if c := cl.get(); c != nil {
			st.Members = c.Members()
			gs := c.Stats()
			st.Gossip = &gs
		}
		if trust != nil {
			t := trust.Status()
			st.Trust = &t
		}
		if self != nil {
			st.Identity = &identityStatus{Name: self.Name, Expires: self.Expires(), Serial: hex.EncodeToString(self.Serial().Bytes()),
				Mode: s.Identity, CRL: verifier.CRLNumber()}
		}
		if !req.Brief {
			st.Drops = lockDrops(fw, log)
		}
		if services != nil {
			vs := services.Status()
			st.Services = &vs
		}
		st.Refusals = api.Refusals()
		return st
	}
	api = plugin.NewAPI(ctx, d, log, discovered, status)
	api.SetScope(scope)
	if s.MetricsAddr != "" {
		m, err := metrics.New(func() metrics.Snapshot { return snapshot(d, cl.get(), fw, xfrm, keys, under.Addr, log) }, true)
		if err != nil {
			return err
		}
		api.SetObserver(m.Observe)
		mux := http.NewServeMux()
		mux.Handle("/metrics", m.Handler())
		mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			writeStatus(w, status(plugin.StatusRequest{}).(daemonStatus), time.Now())
		})
		mux.HandleFunc("/doctor", doc.serveDoctor(false))
		mux.HandleFunc("/doctor.json", doc.serveDoctor(true))
		mux.HandleFunc("/status.json", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			enc.Encode(status(plugin.StatusRequest{}))
		})
		run(func() {
			// Metrics are for operators: a port taken is logged, the
			// daemon serves on.
			if err := metrics.Serve(runCtx, s.MetricsAddr, mux, log); err != nil {
				log.Error("no metrics or status over HTTP", "err", err)
			}
		})
	}
	api.SetLeave(func() error {
		c := cl.get()
		if c == nil {
			return errors.New("the cluster has not started yet (waiting for the swarm's secret)")
		}
		log.Info("leaving the cluster on request")
		return c.Leave()
	})
	api.SetRotate(d.Rotate)
	api.SetDoctor(func(ctx context.Context) (any, error) { return doc.run(ctx) })
	api.SetReconcile(d.Reconcile)
	api.SetLoadCRL(func(_ context.Context, raw []byte) (any, error) {
		if verifier == nil {
			return nil, errors.New("this host has no identity (VXSEC_IDENTITY_DIR), so it holds no revocation list")
		}
		adopted, err := verifier.OfferCRL(raw)
		if err != nil {
			return nil, err
		}
		if adopted {
			log.Info("revocation list loaded", "crl", verifier.CRLNumber())
			if c := cl.get(); c != nil {
				c.RevocationChanged()
			}
		}
		return map[string]any{"adopted": adopted, "crl": verifier.CRLNumber()}, nil
	})
	api.SetEvict(func(_ context.Context, nodes []string) (any, error) {
		if trust == nil {
			return nil, errors.New("this node's cluster secret is VXSEC_SECRET (or it has none): eviction is for swarm nodes. " +
				"Outside swarm, revoke the host's identity (`vxsec ca revoke`)")
		}
		seq, id, gen, err := trust.Evict(nodes)
		if err != nil {
			return nil, err
		}
		return map[string]any{"evicted": nodes, "eviction_seq": seq, "secret_id": id, "generation": gen}, nil
	})
	api.SetRotateSecret(func(context.Context) (any, error) {
		if trust == nil {
			return nil, errors.New("this node's cluster secret is VXSEC_SECRET (or it has none): it is not the swarm's to rotate. " +
				"Outside swarm, a new secret means a new VXSEC_SECRET on every host")
		}
		id, gen, err := trust.Rotate()
		if err != nil {
			return nil, err
		}
		return map[string]any{"secret_id": id, "generation": gen}, nil
	})
	// SIGUSR1 rotates too, for hosts without the CLI at hand.
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	run(func() {
		for {
			select {
			case <-runCtx.Done():
				return
			case <-usr1:
				if err := d.Rotate(runCtx); err != nil {
					log.Error("rotation on SIGUSR1", "err", err)
				}
			}
		}
	})
	alloc, err := ipam.Open(s.StateDir)
	if err != nil {
		return err
	}
	err = plugin.Serve(runCtx, l, api, plugin.NewIPAM(alloc, log), caller)
	if cause := context.Cause(runCtx); err == nil && cause != nil && ctx.Err() == nil {
		err = cause
	}
	log.Info("vxsec daemon stopping; devices and rules stay in place, the cluster is not left")
	return err
}

// epochFile keeps the table epoch beside the cluster's snapshot: host
// bookkeeping, like the snapshot, so not in the state directory (which
// holds networks, and is empty when none is left). It survives restarts,
// a disable and enable, an engine restart; an upgrade or a reinstall
// starts again from the clock.
func epochFile(s config.Settings) string {
	if s.Snapshot == "" {
		return ""
	}
	return filepath.Join(filepath.Dir(s.Snapshot), "table-epoch")
}

// dataScope is the scope Docker is told, once, when it enables the plugin:
// global on a swarm node (swarm then allocates networks and keeps their
// options), local elsewhere (where Docker refuses global-scope networks).
func dataScope(s config.Settings) string {
	if s.Scope != config.ScopeAuto {
		return s.Scope
	}
	if swarmtrust.InSwarm(s.SwarmDir) {
		return config.ScopeGlobal
	}
	return config.ScopeLocal
}

// keepCRL makes the revocation list survive restarts and upgrades: the one
// kept in the state directory is offered at start, and each newer one
// adopted is kept there.
func keepCRL(stateDir string, v *identity.Verifier, log *slog.Logger) {
	const name = "identity-crl.pem"
	if raw, err := os.ReadFile(filepath.Join(stateDir, name)); err == nil {
		if _, err := v.OfferCRL(raw); err != nil {
			log.Warn("ignoring the kept revocation list", "file", filepath.Join(stateDir, name), "err", err)
		}
	}
	v.KeepCRL(func(der []byte) {
		b := pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
		if err := atomicfile.Write(stateDir, name, b); err != nil {
			log.Error("keeping the revocation list", "err", err)
		}
	})
}

// keyIdentity names what this host's IPsec epochs are bound to: the
// identity its tables are signed with (a host certificate's CN, or the
// swarm node ID once the node has its certificate), or none.
func keyIdentity(self *identity.Identity, trust *swarmtrust.Agent) func() string {
	switch {
	case self != nil:
		return func() string { return self.Name }
	case trust != nil:
		tables := trust.Tables()
		return tables.Name
	}
	return nil
}

// servicesOf keeps a nil *vip.Balancer a nil interface.
func servicesOf(b *vip.Balancer) driver.Services {
	if b == nil {
		return nil
	}
	return b
}
