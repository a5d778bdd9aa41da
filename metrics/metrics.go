package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	gometrics "github.com/hashicorp/go-metrics"
	promsink "github.com/hashicorp/go-metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vxsec/vxsec/driver"
	"github.com/vxsec/vxsec/gossip"
	"github.com/vxsec/vxsec/ipsec"
)

// Snapshot is the daemon's state as a scrape reads it.
type Snapshot struct {
	// Self is this host's advertise address (to tell an SA's direction).
	Self netip.Addr
	// Members counts the cluster's members by state (alive, failed, ...).
	Members map[string]int
	// Networks, LocalEndpoints and RemoteEndpoints count over every network.
	Networks, LocalEndpoints, RemoteEndpoints int
	// Drops are the locks' drop counters (firewall.Locks, and "xfrm:"
	// counters), as status shows them.
	Drops map[string]uint64
	// Xfrm is every counter of the kernel's /proc/net/xfrm_stat.
	Xfrm map[string]uint64
	// IPsec is the keys' status (nil: no encrypted network), SAs the
	// kernel's counters of vxsec's SAs.
	IPsec *ipsec.Status
	SAs   []ipsec.SAStats
	// Driver are the driver's running totals.
	Driver driver.Counts
	// Gossip is what the gossip port let through and refused (nil before
	// the cluster started).
	Gossip *gossip.Stats
	// Now is when it was taken.
	Now time.Time
}

// Metrics is one daemon's registry.
type Metrics struct {
	reg       *prometheus.Registry
	apiCalls  *prometheus.HistogramVec
	apiErrors *prometheus.CounterVec
	sink      *promsink.PrometheusSink
}

// New makes the registry: the process's and Go's collectors, the API
// call metrics, the snapshot collector, and the bridge from go-metrics,
// which serf and memberlist report to. go-metrics keeps its sink in a
// package variable of its own (metrics.NewGlobal): only one daemon per
// process may bridge, so tests that run several in one process pass
// bridge=false.
func New(snapshot func() Snapshot, bridge bool) (*Metrics, error) {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		apiCalls: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "vxsec_api_call_duration_seconds", Help: "Remote API calls (Docker's and vxsec's own) by method: how long each took.",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 30},
		}, []string{"method"}),
		apiErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vxsec_api_call_errors_total", Help: "Remote API calls answered with an error, by method.",
		}, []string{"method"}),
	}
	for _, c := range []prometheus.Collector{
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector(),
		m.apiCalls, m.apiErrors, &collector{snapshot: snapshot},
	} {
		if err := m.reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering metrics: %w", err)
		}
	}
	if bridge {
		sink, err := promsink.NewPrometheusSinkFrom(promsink.PrometheusOpts{Registerer: m.reg})
		if err != nil {
			return nil, fmt.Errorf("bridging serf's and memberlist's metrics: %w", err)
		}
		cfg := gometrics.DefaultConfig("vxsec")
		cfg.EnableHostname, cfg.EnableRuntimeMetrics, cfg.EnableServiceLabel = false, false, false
		if _, err := gometrics.NewGlobal(cfg, sink); err != nil {
			return nil, fmt.Errorf("bridging serf's and memberlist's metrics: %w", err)
		}
		m.sink = sink
	}
	return m, nil
}

// Observe records one remote API call.
func (m *Metrics) Observe(method string, took time.Duration, failed bool) {
	m.apiCalls.WithLabelValues(method).Observe(took.Seconds())
	if failed {
		m.apiErrors.WithLabelValues(method).Inc()
	}
}

// Handler serves the registry in Prometheus's text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Serve answers on addr until ctx ends: /metrics, and whatever else mux
// routes (the daemon adds its status). It fails only if addr cannot be
// bound.
func Serve(ctx context.Context, addr string, mux *http.ServeMux, log *slog.Logger) error {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("binding the metrics address %s (VXSEC_METRICS_ADDR; empty disables it): %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	log.Info("serving metrics and status", "addr", l.Addr().String())
	select {
	case <-ctx.Done():
		srv.Close()
		<-errc
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serving metrics: %w", err)
	}
}

var (
	descMembers   = prometheus.NewDesc("vxsec_cluster_members", "Cluster members by state, as this host's serf sees them.", []string{"state"}, nil)
	descNetworks  = prometheus.NewDesc("vxsec_networks", "vxsec networks on this host.", nil, nil)
	descEndpoints = prometheus.NewDesc("vxsec_endpoints", "Endpoints over every network: on this host (local) and on peers (remote).", []string{"where"}, nil)
	descDrops     = prometheus.NewDesc("vxsec_lock_drops_total", "Packets each lock dropped: the firewall's rules by lock name, and the kernel's IPsec refusals (xfrm:...).", []string{"lock"}, nil)
	descXfrm      = prometheus.NewDesc("vxsec_xfrm_errors_total", "The kernel's xfrm error counters (/proc/net/xfrm_stat), for the host's network namespace.", []string{"counter"}, nil)
	descIPsec     = prometheus.NewDesc("vxsec_ipsec_active", "1 while an encrypted network exists on this host (its keys and SAs live).", nil, nil)
	descEpochAge  = prometheus.NewDesc("vxsec_ipsec_epoch_age_seconds", "Age of this host's newest key epoch.", nil, nil)
	descRotations = prometheus.NewDesc("vxsec_ipsec_rotations_total", "Key epochs this host started after its first since the daemon started (rotations, and re-keys to change an encapsulation).", nil, nil)
	descLastRot   = prometheus.NewDesc("vxsec_ipsec_last_rotation_timestamp_seconds", "When this host's newest epoch began (Unix time); absent before the first rotation.", nil, nil)
	descRefused   = prometheus.NewDesc("vxsec_ipsec_refused_reannouncements_total", "Pairs of epochs and SPIs a peer re-announced after this host had sent on them, refused rather than keyed again.", nil, nil)
	descPeerAge   = prometheus.NewDesc("vxsec_ipsec_peer_key_age_seconds", "Per peer: how long the outbound SA in use has been.", []string{"peer"}, nil)
	descPeerKeys  = prometheus.NewDesc("vxsec_ipsec_peer_rekeys_total", "Per peer: outbound SAs installed since the daemon started.", []string{"peer"}, nil)
	descEncap     = prometheus.NewDesc("vxsec_ipsec_peer_encapsulation", "Per peer and direction: 1 for the encapsulation in use (esp or udp).", []string{"peer", "direction", "encap"}, nil)
	descSABytes   = prometheus.NewDesc("vxsec_ipsec_sa_bytes_total", "Per peer and direction: bytes the kernel carried on vxsec's live SAs (SAs removed at rotation take theirs with them).", []string{"peer", "direction"}, nil)
	descSAPackets = prometheus.NewDesc("vxsec_ipsec_sa_packets_total", "Per peer and direction: packets the kernel carried on vxsec's live SAs.", []string{"peer", "direction"}, nil)
	descReplay    = prometheus.NewDesc("vxsec_ipsec_sa_replay_failures_total", "Per peer: inbound packets the live SAs refused as replayed.", []string{"peer"}, nil)
	descIntegrity = prometheus.NewDesc("vxsec_ipsec_sa_integrity_failures_total", "Per peer: inbound packets whose ICV did not verify on the live SAs.", []string{"peer"}, nil)
	descSeq       = prometheus.NewDesc("vxsec_ipsec_sa_out_seq", "Per peer: the sequence number the outbound SA in use has reached (packets sent on it); its headroom is 2^64 less this (ESN), and a rotation starts a new SA.", []string{"peer"}, nil)
	descReconcile = prometheus.NewDesc("vxsec_reconcile_runs_total", "Reconcile passes (every 30 s, at start, and on `vxsec reconcile`).", nil, nil)
	descReconFail = prometheus.NewDesc("vxsec_reconcile_failures_total", "Reconcile passes that ended in an error.", nil, nil)
	descTables    = prometheus.NewDesc("vxsec_tables_taken_total", "Members' tables taken (newer than the one held).", nil, nil)
	descPasses    = prometheus.NewDesc("vxsec_peer_passes_total", "Passes that applied members' tables to the kernel (FDB and neighbour entries, SAs).", nil, nil)
	descApplyLag  = prometheus.NewDesc("vxsec_table_apply_lag_seconds", "How long the oldest table of the last pass waited from its arrival until its entries were in the kernel.", nil, nil)
	descAccepted  = prometheus.NewDesc("vxsec_gossip_accepted_total", "What the gossip port let through, by kind (stream, pull, packet; delta: members' tables installed from a delta).", []string{"kind"}, nil)
	descRefusedG  = prometheus.NewDesc("vxsec_gossip_refused_total", "What the gossip port refused, by reason.", []string{"reason"}, nil)
)

// collector turns a Snapshot into metrics at each scrape.
type collector struct{ snapshot func() Snapshot }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMembers, descNetworks, descEndpoints, descDrops, descXfrm, descIPsec, descEpochAge,
		descRotations, descLastRot, descRefused, descPeerAge, descPeerKeys, descEncap, descSABytes, descSAPackets, descReplay,
		descIntegrity, descSeq, descReconcile, descReconFail, descTables, descPasses, descApplyLag, descAccepted, descRefusedG} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.snapshot()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	for state, n := range s.Members {
		gauge(descMembers, float64(n), state)
	}
	gauge(descNetworks, float64(s.Networks))
	gauge(descEndpoints, float64(s.LocalEndpoints), "local")
	gauge(descEndpoints, float64(s.RemoteEndpoints), "remote")
	for lock, n := range s.Drops {
		counter(descDrops, float64(n), lock)
	}
	for name, n := range s.Xfrm {
		counter(descXfrm, float64(n), name)
	}
	counter(descReconcile, float64(s.Driver.Reconciles))
	counter(descReconFail, float64(s.Driver.ReconcileFailures))
	counter(descTables, float64(s.Driver.TablesTaken))
	counter(descPasses, float64(s.Driver.PeerPasses))
	gauge(descApplyLag, s.Driver.ApplyLag.Seconds())
	if g := s.Gossip; g != nil {
		for k, n := range g.Accepted {
			counter(descAccepted, float64(n), k)
		}
		for k, n := range g.Refused {
			counter(descRefusedG, float64(n), k)
		}
	}
	ip := s.IPsec
	if ip == nil || !ip.Active {
		gauge(descIPsec, 0)
		return
	}
	gauge(descIPsec, 1)
	if len(ip.Epochs) > 0 {
		gauge(descEpochAge, epochAge(ip.Epochs[len(ip.Epochs)-1], s.Now))
	}
	counter(descRotations, float64(ip.Rotations))
	if !ip.LastRotation.IsZero() {
		gauge(descLastRot, float64(ip.LastRotation.UnixNano())/1e9)
	}
	counter(descRefused, float64(ip.Refused))
	outSPI := map[netip.Addr]uint32{}
	for _, p := range ip.Peers {
		peer := p.Host.String()
		outSPI[p.Host] = p.SPI
		if !p.Since.IsZero() {
			gauge(descPeerAge, s.Now.Sub(p.Since).Seconds(), peer)
		}
		counter(descPeerKeys, float64(p.Rekeys), peer)
		if p.Encap != "" {
			gauge(descEncap, 1, peer, "out", p.Encap)
		}
		if p.InEncap != "" {
			gauge(descEncap, 1, peer, "in", p.InEncap)
		}
	}
	type key struct {
		peer netip.Addr
		out  bool
	}
	type sums struct{ bytes, packets, replay, integrity float64 }
	per := map[key]*sums{}
	for _, sa := range s.SAs {
		k := key{sa.Src, false}
		if sa.Src == s.Self {
			k = key{sa.Dst, true}
		}
		if per[k] == nil {
			per[k] = &sums{}
		}
		t := per[k]
		t.bytes += float64(sa.Bytes)
		t.packets += float64(sa.Packets)
		t.replay += float64(sa.Replay)
		t.integrity += float64(sa.IntegrityFailed)
		if k.out && sa.SPI == outSPI[k.peer] {
			gauge(descSeq, float64(sa.Packets), k.peer.String())
		}
	}
	for k, t := range per {
		dir := "in"
		if k.out {
			dir = "out"
		}
		counter(descSABytes, t.bytes, k.peer.String(), dir)
		counter(descSAPackets, t.packets, k.peer.String(), dir)
		if !k.out {
			counter(descReplay, t.replay, k.peer.String())
			counter(descIntegrity, t.integrity, k.peer.String())
		}
	}
}

// epochAge is the age of an epoch, whose number is the nanosecond it was
// made at (ipsec: a clock set back makes it the previous number plus one).
func epochAge(epoch uint64, now time.Time) float64 {
	return max(0, now.Sub(time.Unix(0, int64(epoch))).Seconds())
}
