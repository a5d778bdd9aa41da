package vip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
)

// fakeEngine answers with what the test put in it, or fails.
type fakeEngine struct {
	services map[string][]Service
	err      error
	calls    int
}

func (e *fakeEngine) Services(_ context.Context, n string) ([]Service, error) {
	e.calls++
	if e.err != nil {
		return nil, e.err
	}
	return slices.Clone(e.services[n]), nil
}

// fakeKernel is the namespaces and their tables: a namespace exists while
// the test says so; each table is the services' "name=vip>backends".
type fakeKernel struct {
	exists   map[string]bool
	tables   map[string]string
	fds      map[int]string
	programs int
	fail     error
}

func (k *fakeKernel) Open(s string) (int, func(), error) {
	if !k.exists[s] {
		return 0, nil, fmt.Errorf("opening the network namespace %s: %w", s, os.ErrNotExist)
	}
	fd := len(k.fds) + 100
	k.fds[fd] = s
	return fd, func() {}, nil
}

func (k *fakeKernel) program(fd int, svcs []Service) error {
	k.programs++
	if k.fail != nil {
		return k.fail
	}
	s := k.fds[fd]
	if len(svcs) == 0 {
		delete(k.tables, s)
		return nil
	}
	var parts []string
	for _, v := range svcs {
		parts = append(parts, fmt.Sprintf("%s=%s>%v", v.Name, v.VIP, v.Backends))
	}
	slices.Sort(parts)
	k.tables[s] = strings.Join(parts, " ")
	return nil
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// TestBalancerStates walks a Balancer through the lives of containers and
// services, checking each namespace's table after every step, and how
// many times the kernel and the engine were called: a step that changes
// nothing programs nothing, and Set (a Join) never calls the engine.
func TestBalancerStates(t *testing.T) {
	web := func(backends ...string) Service {
		return Service{Network: "n1", Name: "web", VIP: netip.MustParseAddr("10.0.1.2"), Backends: addrs(backends...)}
	}
	db := Service{Network: "n2", Name: "db", VIP: netip.MustParseAddr("10.0.2.2"), Backends: addrs("10.0.2.5")}
	eng := &fakeEngine{services: map[string][]Service{}}
	k := &fakeKernel{exists: map[string]bool{"/ns/c1": true, "/ns/c2": true}, tables: map[string]string{}, fds: map[int]string{}}
	b := New(Config{Engine: eng, Namespaces: k, Program: k.program, Log: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	ctx := context.Background()
	poll := func() { b.refresh(ctx); b.reconcile(nil) }

	steps := []struct {
		name        string
		do          func() error
		tables      map[string]string
		programs    int // kernel calls in this step
		engineCalls int
	}{
		{"c1 joins n1 before the engine was asked", func() error { return b.Set(map[string][]string{"/ns/c1": {"n1"}}) },
			map[string]string{}, 1, 0},
		{"the poll finds web", func() error { eng.services["n1"] = []Service{web("10.0.1.5", "10.0.1.6")}; poll(); return nil },
			map[string]string{"/ns/c1": "web=10.0.1.2>[10.0.1.5 10.0.1.6]"}, 1, 1},
		{"nothing changed", func() error { poll(); return nil },
			map[string]string{"/ns/c1": "web=10.0.1.2>[10.0.1.5 10.0.1.6]"}, 0, 1},
		{"c2 joins n1 and n2: programmed from the last poll", func() error {
			return b.Set(map[string][]string{"/ns/c1": {"n1"}, "/ns/c2": {"n2", "n1"}})
		}, map[string]string{"/ns/c1": "web=10.0.1.2>[10.0.1.5 10.0.1.6]", "/ns/c2": "web=10.0.1.2>[10.0.1.5 10.0.1.6]"}, 1, 0},
		{"web scales up, db appears", func() error {
			eng.services["n1"] = []Service{web("10.0.1.5", "10.0.1.6", "10.0.1.7")}
			eng.services["n2"] = []Service{db}
			poll()
			return nil
		}, map[string]string{"/ns/c1": "web=10.0.1.2>[10.0.1.5 10.0.1.6 10.0.1.7]",
			"/ns/c2": "db=10.0.2.2>[10.0.2.5] web=10.0.1.2>[10.0.1.5 10.0.1.6 10.0.1.7]"}, 2, 2},
		{"the engine fails: the last services stay", func() error { eng.err = errors.New("engine restarting"); poll(); return nil },
			map[string]string{"/ns/c1": "web=10.0.1.2>[10.0.1.5 10.0.1.6 10.0.1.7]",
				"/ns/c2": "db=10.0.2.2>[10.0.2.5] web=10.0.1.2>[10.0.1.5 10.0.1.6 10.0.1.7]"}, 0, 2},
		{"web is removed", func() error { eng.err = nil; eng.services["n1"] = nil; poll(); return nil },
			map[string]string{"/ns/c2": "db=10.0.2.2>[10.0.2.5]"}, 2, 2},
		{"c1 leaves n1 (disconnect): its table goes", func() error { return b.Set(map[string][]string{"/ns/c2": {"n1", "n2"}}) },
			map[string]string{"/ns/c2": "db=10.0.2.2>[10.0.2.5]"}, 1, 0},
		{"c2 stopped: its namespace is gone, nothing to undo", func() error { delete(k.exists, "/ns/c2"); return b.Set(map[string][]string{}) },
			map[string]string{"/ns/c2": "db=10.0.2.2>[10.0.2.5]"}, 0, 0},
		{"no network in use: the engine is not asked", func() error { poll(); return nil },
			map[string]string{"/ns/c2": "db=10.0.2.2>[10.0.2.5]"}, 0, 0},
	}
	for _, st := range steps {
		p0, e0 := k.programs, eng.calls
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if !mapsEqual(k.tables, st.tables) {
			t.Fatalf("%s: tables %v, want %v", st.name, k.tables, st.tables)
		}
		if got := k.programs - p0; got != st.programs {
			t.Errorf("%s: %d programs, want %d", st.name, got, st.programs)
		}
		if got := eng.calls - e0; got != st.engineCalls {
			t.Errorf("%s: %d engine calls, want %d", st.name, got, st.engineCalls)
		}
	}
	if st := b.Status(); st.Sandboxes != 0 || len(st.Failed) != 0 {
		t.Fatalf("status at the end: %+v", st)
	}
}

// TestBalancerProgramFails: a table that cannot be programmed is reported
// (by Set, and in Status) and programmed again at the next poll.
func TestBalancerProgramFails(t *testing.T) {
	eng := &fakeEngine{services: map[string][]Service{"n1": {{Network: "n1", Name: "web", VIP: netip.MustParseAddr("10.0.1.2"), Backends: addrs("10.0.1.5")}}}}
	k := &fakeKernel{exists: map[string]bool{"/ns/c1": true}, tables: map[string]string{}, fds: map[int]string{}, fail: errors.New("EPERM")}
	b := New(Config{Engine: eng, Namespaces: k, Program: k.program})
	if err := b.Set(map[string][]string{"/ns/c1": {"n1"}}); err == nil || !strings.Contains(err.Error(), "EPERM") {
		t.Fatalf("Set: %v, want the kernel's refusal", err)
	}
	if st := b.Status(); len(st.Failed) != 1 {
		t.Fatalf("status: %+v, want the sandbox failed", st)
	}
	k.fail = nil
	b.refresh(context.Background())
	b.reconcile(nil)
	if k.tables["/ns/c1"] != "web=10.0.1.2>[10.0.1.5]" || len(b.Status().Failed) != 0 {
		t.Fatalf("after the retry: %v %+v", k.tables, b.Status())
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
