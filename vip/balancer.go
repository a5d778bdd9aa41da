package vip

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"
)

// Engine is what the Balancer needs of the local Docker engine.
type Engine interface {
	// Services lists the services with a VIP on the network, with their
	// tasks' addresses there; an unknown network has none.
	Services(ctx context.Context, network string) ([]Service, error)
}

// Namespaces opens a container's network namespace by the path Docker
// named it with (Join's SandboxKey).
type Namespaces interface {
	Open(sandbox string) (fd int, close func(), err error)
}

// DefaultPoll is how often the engine is asked for the services of the
// networks local containers are on.
const DefaultPoll = time.Second

// Config is what a Balancer is built from.
type Config struct {
	Engine     Engine
	Namespaces Namespaces
	// Program is the kernel (Program); tests give a fake.
	Program func(fd int, services []Service) error
	Poll    time.Duration
	Log     *slog.Logger
}

// Balancer keeps the VIP tables of the local containers on vxsec networks:
// what the driver says is wanted (Set) crossed with what the engine says
// the services are (Run).
type Balancer struct {
	cfg Config

	mu sync.Mutex
	// want is every sandbox with a joined endpoint, and its networks.
	want map[string][]string
	// services are the last services the engine gave, by network.
	services map[string][]Service
	// applied is the fingerprint of what each sandbox's table holds.
	applied map[string]string
	// failed counts sandboxes whose last programming failed.
	failed    map[string]error
	engineOK  bool
	engineErr error
	// locks serialize the programming of one sandbox, so that what
	// applied records is what its table holds.
	locks map[string]*sync.Mutex
	kick  chan struct{}
}

// New returns a Balancer; Run makes it follow the engine.
func New(cfg Config) *Balancer {
	if cfg.Poll == 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.Program == nil {
		cfg.Program = Program
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Balancer{cfg: cfg, want: map[string][]string{}, services: map[string][]Service{},
		applied: map[string]string{}, failed: map[string]error{}, locks: map[string]*sync.Mutex{},
		kick: make(chan struct{}, 1)}
}

// Set replaces the wanted sandboxes (sandbox → its networks). Sandboxes
// that are new or whose networks changed are programmed before Set returns,
// from the services last polled, so that a joining container has its VIPs
// before it runs; the engine is not called. A sandbox no longer wanted
// loses its table (if its namespace is still there). Set keeps want (its
// lists sorted): the caller makes a new map for every call.
func (b *Balancer) Set(want map[string][]string) error {
	b.mu.Lock()
	var changed []string
	for s, nets := range want {
		nets = slices.Sorted(slices.Values(nets))
		if !slices.Equal(b.want[s], nets) {
			changed = append(changed, s)
		}
		want[s] = nets
	}
	for s := range b.want {
		if _, ok := want[s]; !ok {
			changed = append(changed, s)
		}
	}
	newNets := false
	for _, s := range changed {
		for _, n := range want[s] {
			if _, ok := b.services[n]; !ok {
				newNets = true
			}
		}
	}
	b.want = want
	b.mu.Unlock()
	if newNets {
		b.poke()
	}
	return b.reconcile(changed)
}

func (b *Balancer) poke() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// Run polls the engine for the services of the networks in use, every
// Poll (and at once when a sandbox joins a network not polled yet), and
// reprograms the sandboxes whose services changed, until ctx ends.
func (b *Balancer) Run(ctx context.Context) {
	t := time.NewTicker(b.cfg.Poll)
	defer t.Stop()
	for {
		b.refresh(ctx)
		b.reconcile(nil)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-b.kick:
		}
	}
}

// refresh asks the engine for the services of every network in use.
func (b *Balancer) refresh(ctx context.Context) {
	b.mu.Lock()
	nets := map[string]bool{}
	for _, ns := range b.want {
		for _, n := range ns {
			nets[n] = true
		}
	}
	b.mu.Unlock()
	got := map[string][]Service{}
	var errs []error
	for n := range nets {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := b.cfg.Engine.Services(cctx, n)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("network %.12s: %w", n, err))
			continue
		}
		got[n] = s
	}
	// Sorted, so that the same failure logs once, not once per order.
	slices.SortFunc(errs, func(a, b error) int { return cmp.Compare(a.Error(), b.Error()) })
	err := errors.Join(errs...)
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil && ctx.Err() == nil && (b.engineErr == nil || b.engineErr.Error() != err.Error()) {
		b.cfg.Log.Warn("service VIPs: asking the Docker engine for services failed; keeping the last ones", "err", err)
	}
	if err == nil && b.engineErr != nil {
		b.cfg.Log.Info("service VIPs: the Docker engine answers again")
	}
	b.engineErr, b.engineOK = err, err == nil || b.engineOK
	for n := range b.services {
		if !nets[n] {
			delete(b.services, n)
		}
	}
	maps.Copy(b.services, got)
}

// reconcile programs the sandboxes given (nil: all, and every sandbox
// whose table is not what its services call for).
func (b *Balancer) reconcile(only []string) error {
	b.mu.Lock()
	if only == nil {
		only = slices.Collect(maps.Keys(b.want))
		for s := range b.applied {
			if _, ok := b.want[s]; !ok {
				only = append(only, s)
			}
		}
	}
	b.mu.Unlock()
	var errs []error
	for _, s := range only {
		if err := b.sync(s); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// sync programs one sandbox if its table is not what is wanted.
func (b *Balancer) sync(sandbox string) error {
	b.mu.Lock()
	l := b.locks[sandbox]
	if l == nil {
		l = &sync.Mutex{}
		b.locks[sandbox] = l
	}
	b.mu.Unlock()
	l.Lock()
	defer l.Unlock()

	b.mu.Lock()
	nets, wanted := b.want[sandbox]
	var svcs []Service
	for _, n := range nets {
		svcs = append(svcs, b.services[n]...)
	}
	fp := fingerprint(svcs)
	was, programmed := b.applied[sandbox]
	b.mu.Unlock()
	if (wanted && programmed && was == fp) || (!wanted && !programmed) {
		return nil
	}
	err := b.program(sandbox, svcs)
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case err != nil && !wanted:
		// Its container is gone with its namespace: nothing left to undo.
		delete(b.applied, sandbox)
		delete(b.failed, sandbox)
		delete(b.locks, sandbox)
		return nil
	case err != nil:
		b.failed[sandbox] = err
		return fmt.Errorf("service VIPs of sandbox %s: %w", sandbox, err)
	case !wanted:
		delete(b.applied, sandbox)
		delete(b.locks, sandbox)
	default:
		b.applied[sandbox] = fp
	}
	delete(b.failed, sandbox)
	return nil
}

func (b *Balancer) program(sandbox string, svcs []Service) error {
	fd, done, err := b.cfg.Namespaces.Open(sandbox)
	if err != nil {
		return err
	}
	defer done()
	return b.cfg.Program(fd, svcs)
}

// fingerprint names a list of services: equal lists, equal names.
func fingerprint(svcs []Service) string {
	slices.SortFunc(svcs, func(a, b Service) int {
		return cmp.Or(cmp.Compare(a.Network, b.Network), cmp.Compare(a.Name, b.Name))
	})
	h := sha256.New()
	for _, s := range svcs {
		fmt.Fprintf(h, "%s\x00%s\x00%s\x00%v\n", s.Network, s.Name, s.VIP, s.Backends)
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// Status is what the Balancer holds, for vxsec status.
type Status struct {
	// Engine is "ok", "never answered" or the last error.
	Engine    string
	Sandboxes int
	Services  []ServiceStatus `json:",omitempty"`
	// Failed are sandboxes whose table could not be programmed.
	Failed map[string]string `json:",omitempty"`
}

// ServiceStatus is one service's VIP on one network.
type ServiceStatus struct {
	Network  string
	Name     string
	VIP      string
	Backends int
}

// Status reports the services and the sandboxes programmed.
func (b *Balancer) Status() Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := Status{Engine: "ok", Sandboxes: len(b.applied)}
	switch {
	case b.engineErr != nil:
		st.Engine = b.engineErr.Error()
	case !b.engineOK:
		st.Engine = "never answered"
	}
	for _, n := range slices.Sorted(maps.Keys(b.services)) {
		for _, s := range b.services[n] {
			st.Services = append(st.Services, ServiceStatus{Network: s.Network, Name: s.Name, VIP: s.VIP.String(), Backends: len(s.Backends)})
		}
	}
	for s, err := range b.failed {
		if st.Failed == nil {
			st.Failed = map[string]string{}
		}
		st.Failed[s] = err.Error()
	}
	return st
}
