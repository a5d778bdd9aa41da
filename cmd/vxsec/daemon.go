package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netlink"

	"github.com/vxsec/vxsec/config"
	"github.com/vxsec/vxsec/driver"
	"github.com/vxsec/vxsec/firewall"
	"github.com/vxsec/vxsec/gossip"
	"github.com/vxsec/vxsec/ipam"
	"github.com/vxsec/vxsec/ipsec"
	"github.com/vxsec/vxsec/plugin"
	"github.com/vxsec/vxsec/swarmtrust"
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
		return runDaemon(ctx, s, log)
	}
	return cmd
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
	dp, err := vxlan.New(net.IP(under.Addr.AsSlice()), s.DataPort, log)
	if err != nil {
		return err
	}
	defer dp.Close()
	store, err := driver.OpenStore(s.StateDir)
	if err != nil {
		return err
	}
	xh, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("opening netlink for xfrm: %w", err)
	}
	defer xh.Close()
	keys := ipsec.NewManager(ipsec.ManagerConfig{
		Local: under.Addr, Kernel: ipsec.NewXfrm(xh, under.Addr, s.EncryptedPort), Log: log,
	})
	d, err := driver.New(driver.Config{
		Store: store, DataPath: dp, Firewall: firewall.New(), DataPort: uint16(s.DataPort),
		EncryptedPort: uint16(s.EncryptedPort), IPsec: keys, Authenticated: s.Secret != nil,
		RotateEvery: s.RotateEvery,
		Underlay:    under, ReconcileEvery: reconcileEvery, Log: log,
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
		"advertise", under.Addr, "underlay", under.Interface, "underlay_mtu", under.MTU,
		"data_port", s.DataPort, "encrypted_port", s.EncryptedPort, "rotate_every", s.RotateEvery, "networks", len(d.Networks()))

	if s.Secret == nil {
		log.Warn("NO CLUSTER SECRET: the vxsec cluster is neither authenticated nor encrypted; any host that " +
			"reaches the gossip port can join and announce endpoints. Set VXSEC_SECRET (from `vxsec secret`) on every host")
	}
	var seeds []string
	for _, j := range s.Join {
		host, port, _ := config.SplitJoinAddr(j, s.GossipPort) // validated by config
		seeds = append(seeds, net.JoinHostPort(host, strconv.Itoa(port)))
	}
	cluster, err := gossip.Start(ctx, gossip.Config{
		Addr: under.Addr, Port: s.GossipPort, Secret: s.Secret,
		SnapshotPath: s.Snapshot,
		Seeds:        seeds, Sink: d, Log: log, Table: d.Table(),
	})
	if err != nil {
		return err
	}
	defer func() {
		// With no network there is nothing a restart could lose: leave, so
		// peers forget this host at once. Otherwise stay, for a restart.
		if len(d.Networks()) == 0 {
			if err := cluster.Leave(); err != nil {
				log.Warn("leaving the cluster", "err", err)
			}
			return
		}
		cluster.Close()
	}()
	d.SetCluster(cluster)

	// The reconcile loop is owned here: stopped and awaited on the way out,
	// whether Serve ended by signal or by error.
	runCtx, stopRun := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.Run(runCtx)
	}()
	defer func() {
		stopRun()
		wg.Wait()
	}()
	discovered := func(ev plugin.NodeEvent) {
		// Swarm tells every node's data-path address: the swarm is the seed
		// list, no VXSEC_JOIN needed.
		if ev.Self {
			return
		}
		if ev.Added {
			cluster.Join([]string{net.JoinHostPort(ev.Addr, strconv.Itoa(s.GossipPort))})
		} else if a, err := netip.ParseAddr(ev.Addr); err == nil {
			cluster.ForceLeave(a)
		}
	}
	status := func() any {
		st := d.Status()
		st.Members = cluster.Members()
		return st
	}
	api := plugin.NewAPI(ctx, d, log, discovered, status)
	api.SetScope(dataScope(s))
	api.SetLeave(func() error {
		log.Info("leaving the cluster on request")
		return cluster.Leave()
	})
	api.SetRotate(d.Rotate)
	// SIGUSR1 rotates too, for hosts without the CLI at hand.
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-usr1:
				if err := d.Rotate(); err != nil {
					log.Error("rotation on SIGUSR1", "err", err)
				}
			}
		}
	}()
	alloc, err := ipam.Open(s.StateDir)
	if err != nil {
		return err
	}
	err = plugin.Serve(ctx, l, api, plugin.NewIPAM(alloc, log))
	log.Info("vxsec daemon stopping; devices and rules stay in place, the cluster is not left")
	return err
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
