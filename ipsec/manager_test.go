package ipsec

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// memKernel is an xfrm that keeps its state in memory. The Manager's logic
// is tested against it because this machine's kernel has no ESP (the
// kernel-lab tier runs the same Manager on real xfrm); it refuses what the
// kernel refuses (a duplicate SA) so that mistakes show.
type memKernel struct {
	local  netip.Addr
	guard  bool
	sas    map[saID]memSA
	outReq map[netip.Addr]uint32
	inPol  map[netip.Addr]bool
}

type saID struct {
	src, dst netip.Addr
	spi      uint32
}

type memSA struct {
	reqid uint32
	key   [KeyMaterial]byte
}

func newMemKernel(local netip.Addr) *memKernel {
	return &memKernel{local: local, sas: map[saID]memSA{}, outReq: map[netip.Addr]uint32{}, inPol: map[netip.Addr]bool{}}
}

func (k *memKernel) EnsureGuard() error { k.guard = true; return nil }
func (k *memKernel) SetPeer(p netip.Addr, r uint32) error {
	k.outReq[p], k.inPol[p] = r, true
	return nil
}
func (k *memKernel) DelPeer(p netip.Addr) error { delete(k.outReq, p); delete(k.inPol, p); return nil }
func (k *memKernel) AddSA(sa SA) error {
	id := saID{sa.Src, sa.Dst, sa.SPI}
	if _, dup := k.sas[id]; dup {
		return fmt.Errorf("adding SA %v: %w", id, unix.EEXIST)
	}
	k.sas[id] = memSA{reqid: sa.Reqid, key: sa.Key}
	return nil
}
func (k *memKernel) DelSA(src, dst netip.Addr, spi uint32) error {
	delete(k.sas, saID{src, dst, spi})
	return nil
}
func (k *memKernel) State() (KernelState, error) {
	ks := KernelState{OutReqid: map[netip.Addr]uint32{}, InPeers: map[netip.Addr]bool{}}
	for p := range k.inPol {
		ks.InPeers[p] = true
	}
	for id, sa := range k.sas {
		ks.SAs = append(ks.SAs, KernelSA{Src: id.src, Dst: id.dst, SPI: id.spi, Reqid: sa.reqid})
	}
	for p, r := range k.outReq {
		ks.OutReqid[p] = r
	}
	return ks, nil
}
func (k *memKernel) RemoveAll() error {
	k.guard, k.sas, k.outReq, k.inPol = false, map[saID]memSA{}, map[netip.Addr]uint32{}, map[netip.Addr]bool{}
	return nil
}

// outbound is the SA the kernel would encrypt to peer with, if any.
func (k *memKernel) outbound(peer netip.Addr) (saID, memSA, bool) {
	r, ok := k.outReq[peer]
	if !ok {
		return saID{}, memSA{}, false
	}
	for id, sa := range k.sas {
		if id.src == k.local && id.dst == peer && sa.reqid == r {
			return id, sa, true
		}
	}
	return saID{}, memSA{}, false
}

// simHost is one host of a simulated cluster: a Manager, its kernel, the
// announcement it published last and what it has heard from the others.
type simHost struct {
	addr      netip.Addr
	m         *Manager
	k         *memKernel
	published Announcement
	heard     map[netip.Addr]Announcement
	// sending: the host has had an outbound SA to the peer; from then on
	// it must always have one (a gap is packet loss).
	sending map[netip.Addr]bool
}

type sim struct {
	t *testing.T
	// lax skips the per-step checks (while drift is being repaired).
	lax bool
	// keyOwner remembers, for the whole run, which SA every key was
	// used for: a key under two SAs means GCM nonces repeat.
	keyOwner map[[KeyMaterial]byte]saID
	hosts    []*simHost
	now      time.Time
	rng      *rand.Rand
}

func newSim(t *testing.T, n int, seed uint64) *sim {
	s := &sim{t: t, now: time.Unix(1_800_000_000, 0), rng: rand.New(rand.NewPCG(seed, 7)), keyOwner: map[[KeyMaterial]byte]saID{}}
	for i := 0; i < n; i++ {
		addr := netip.AddrFrom4([4]byte{198, 18, 0, byte(i + 1)})
		h := &simHost{addr: addr, k: newMemKernel(addr), heard: map[netip.Addr]Announcement{}, sending: map[netip.Addr]bool{}}
		s.start(h)
		s.hosts = append(s.hosts, h)
	}
	return s
}

func (s *sim) clock() time.Time { return s.now }

// start runs a fresh Manager on h's kernel, as a (re)started daemon does.
func (s *sim) start(h *simHost) {
	h.m = NewManager(ManagerConfig{
		Local: h.addr, Kernel: h.k, DrainMax: time.Hour, Now: s.clock,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err := h.m.Activate(); err != nil {
		s.t.Fatal(err)
	}
	h.published = h.m.Announcement()
}

func (s *sim) sync(h *simHost) {
	var peers []PeerInfo
	for _, o := range s.hosts {
		if a, ok := h.heard[o.addr]; ok && o != h {
			peers = append(peers, PeerInfo{Host: o.addr, Announcement: a})
		}
	}
	a, err := h.m.Sync(peers, true)
	if err != nil {
		s.t.Fatalf("%s: sync: %v", h.addr, err)
	}
	h.published = a
}

func (s *sim) deliver(from, to *simHost) { to.heard[from.addr] = from.published }

// check asserts what packets need: every SA a host encrypts with exists,
// with the same key, at the receiver; and no host that was sending to a
// peer ever stops having an SA to send with.
func (s *sim) check(step string) {
	s.t.Helper()
	for _, h := range s.hosts {
		for id, sa := range h.k.sas {
			if owner, ok := s.keyOwner[sa.key]; ok && owner != id {
				s.t.Fatalf("%s: the key of SA %v was used before for SA %v (GCM nonces would repeat)", step, id, owner)
			}
			s.keyOwner[sa.key] = id
		}
	}
	if s.lax {
		return
	}
	for _, a := range s.hosts {
		for _, b := range s.hosts {
			if a == b {
				continue
			}
			id, sa, ok := a.k.outbound(b.addr)
			if !ok {
				if a.sending[b.addr] {
					s.t.Fatalf("%s: %s lost its outbound SA to %s (policy reqid %#x)", step, a.addr, b.addr, a.k.outReq[b.addr])
				}
				continue
			}
			a.sending[b.addr] = true
			got, ok := b.k.sas[id]
			if !ok {
				s.t.Fatalf("%s: %s sends to %s on spi %#x, which %s has no SA for\n%s: %+v\n%s: %+v\n%s heard of %s: %+v\n%s heard of %s: %+v", step, a.addr, b.addr, id.spi, b.addr,
					a.addr, a.m.Status(), b.addr, b.m.Status(), b.addr, a.addr, b.heard[a.addr], a.addr, b.addr, a.heard[b.addr])
			}
			if got.key != sa.key {
				s.t.Fatalf("%s: %s and %s disagree on the key of spi %#x", step, a.addr, b.addr, id.spi)
			}
			if !b.k.inPol[a.addr] {
				s.t.Fatalf("%s: %s has no inbound policy for %s", step, b.addr, a.addr)
			}
		}
	}
}

// mix weighs the kinds of step randomSteps takes, each chance its weight
// over the sum. After maxRotations (if set) a rotation becomes a sync.
type mix struct {
	tick                           time.Duration // the clock moves up to this much a step
	restart, rotate, sync, deliver int
	maxRotations                   int
}

// randomSteps takes n random steps (a host restarts, rotates, syncs, or
// delivers its announcement to another) and checks after every one.
func (s *sim) randomSteps(what string, n int, m mix) {
	s.t.Helper()
	rotations := 0
	for step := 0; step < n; step++ {
		if m.tick > 0 {
			s.now = s.now.Add(time.Duration(s.rng.Int64N(int64(m.tick))))
		}
		h := s.hosts[s.rng.IntN(len(s.hosts))]
		r := s.rng.IntN(m.restart + m.rotate + m.sync + m.deliver)
		switch {
		case r < m.restart:
			s.now = s.now.Add(time.Second) // epoch numbers are the clock's: a restart moves it on
			s.start(h)
		case r < m.restart+m.rotate && (m.maxRotations == 0 || rotations < m.maxRotations):
			if err := h.m.Rotate(); err != nil {
				s.t.Fatal(err)
			}
			rotations++
		case r < m.restart+m.rotate+m.sync:
			s.sync(h)
		default:
			if o := s.hosts[s.rng.IntN(len(s.hosts))]; o != h {
				s.deliver(h, o)
			}
		}
		s.check(fmt.Sprintf("%s %d", what, step))
	}
}

// converge runs every host and delivers everything until nothing changes.
func (s *sim) converge(step string) {
	s.t.Helper()
	for round := 0; round < 8; round++ {
		for _, h := range s.hosts {
			s.sync(h)
			s.check(step)
			for _, o := range s.hosts {
				if o != h {
					s.deliver(h, o)
				}
			}
		}
	}
}

// steady asserts the end state: one epoch per host, and per pair exactly
// one SA each way, matching at both ends.
func (s *sim) steady(step string) {
	s.t.Helper()
	n := len(s.hosts)
	for _, h := range s.hosts {
		st := h.m.Status()
		if len(st.Epochs) != 1 {
			s.t.Fatalf("%s: %s still has epochs %v", step, h.addr, st.Epochs)
		}
		if len(h.k.sas) != 2*(n-1) {
			s.t.Fatalf("%s: %s has %d SAs, want %d: %v", step, h.addr, len(h.k.sas), 2*(n-1), h.k.sas)
		}
		for _, o := range s.hosts {
			if o != h {
				if _, _, ok := h.k.outbound(o.addr); !ok {
					s.t.Fatalf("%s: %s has no outbound SA to %s", step, h.addr, o.addr)
				}
			}
		}
	}
}

func TestNegotiationConverges(t *testing.T) {
	s := newSim(t, 3, 1)
	s.converge("first exchange")
	s.steady("first exchange")
	// Every SPI on a host is distinct, across peers and directions.
	for _, h := range s.hosts {
		seen := map[uint32]bool{}
		for id := range h.k.sas {
			if id.dst == h.addr {
				if seen[id.spi] {
					t.Fatalf("%s: inbound SPI %#x used twice", h.addr, id.spi)
				}
				seen[id.spi] = true
			}
		}
	}
}

// TestRotationUnderReordering rotates hosts again and again while
// announcements arrive late, out of turn, or not at all for a while: no
// step may leave a sender without a key its receiver holds.
func TestRotationUnderReordering(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			s := newSim(t, 3, seed)
			s.converge("start")
			s.randomSteps("step", 600, mix{tick: 200 * time.Millisecond, rotate: 1, sync: 4, deliver: 5, maxRotations: 20})
			s.converge("end")
			s.steady("end")
		})
	}
}

// TestRestartRekeys: a host restarts (a fresh Manager, the kernel as it
// was); its old SAs carry traffic until its peers hold its new keys, and
// afterwards nothing of the old run is left.
func TestRestartRekeys(t *testing.T) {
	s := newSim(t, 3, 3)
	s.converge("start")
	h := s.hosts[1]
	old := map[saID]bool{}
	for id := range h.k.sas {
		old[id] = true
	}
	// Epoch numbers are the clock's nanoseconds: a restart moves it on.
	s.now = s.now.Add(time.Second)
	s.start(h)
	if got := h.m.Status().Legacy; got == 0 {
		t.Fatal("the restarted manager adopted none of the kernel's SAs")
	}
	s.check("right after the restart")
	s.randomSteps("after the restart, step", 200, mix{sync: 1, deliver: 1})
	s.converge("after the restart")
	s.steady("after the restart")
	for id := range h.k.sas {
		if old[id] {
			t.Fatalf("SA %v of the previous run is still there", id)
		}
	}
}

// TestPeerGone: a peer that leaves the cluster leaves no SA or policy.
func TestPeerGone(t *testing.T) {
	s := newSim(t, 3, 4)
	s.converge("start")
	gone := s.hosts[2]
	s.hosts = s.hosts[:2]
	for _, h := range s.hosts {
		delete(h.heard, gone.addr)
	}
	s.converge("after the peer left")
	s.steady("after the peer left")
	for _, h := range s.hosts {
		for id := range h.k.sas {
			if id.src == gone.addr || id.dst == gone.addr {
				t.Fatalf("%s kept SA %v of the departed peer", h.addr, id)
			}
		}
		if _, ok := h.k.outReq[gone.addr]; ok {
			t.Fatalf("%s kept the departed peer's policy", h.addr)
		}
	}
}

// TestSilentPeerDrains: a peer that stops answering cannot keep an old key
// alive past DrainMax.
func TestSilentPeerDrains(t *testing.T) {
	s := newSim(t, 2, 5)
	s.converge("start")
	a := s.hosts[0]
	if err := a.m.Rotate(); err != nil {
		t.Fatal(err)
	}
	s.sync(a) // the peer never hears of it
	if n := len(a.m.Status().Epochs); n != 2 {
		t.Fatalf("epochs right after a rotation: %d, want 2", n)
	}
	s.now = s.now.Add(2 * time.Hour)
	s.sync(a)
	if n := len(a.m.Status().Epochs); n != 1 {
		t.Fatalf("epochs after DrainMax with a silent peer: %d, want 1", n)
	}
}

func TestDeactivateLeavesNothing(t *testing.T) {
	s := newSim(t, 2, 6)
	s.converge("start")
	h := s.hosts[0]
	if err := h.m.Deactivate(); err != nil {
		t.Fatal(err)
	}
	if h.k.guard || len(h.k.sas) != 0 || len(h.k.outReq) != 0 {
		t.Fatalf("left behind: guard %v, %d SAs, %d policies", h.k.guard, len(h.k.sas), len(h.k.outReq))
	}
	if a := h.m.Announcement(); len(a.Keys) != 0 {
		t.Fatal("an inactive manager still announces keys")
	}
}

// TestChaos mixes rotations, restarts and late, reordered announcements.
func TestChaos(t *testing.T) {
	for seed := uint64(100); seed < 130; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			s := newSim(t, 4, seed)
			s.converge("start")
			s.randomSteps("step", 800, mix{tick: 300 * time.Millisecond, restart: 1, rotate: 3, sync: 16, deliver: 20})
			s.converge("end")
			s.steady("end")
		})
	}
}

// TestRepairRestoresDrift: SAs and policies removed behind vxsec's back come
// back at the next Repair and Sync, and traffic keys match again.
func TestRepairRestoresDrift(t *testing.T) {
	s := newSim(t, 3, 7)
	s.converge("start")
	h := s.hosts[0]
	for id := range h.k.sas {
		delete(h.k.sas, id) // every SA of h, inbound and outbound
	}
	h.k.DelPeer(s.hosts[1].addr)
	// The drift itself breaks traffic until the peers have switched to
	// the replacements: check only the outcome.
	s.lax = true
	for _, x := range s.hosts {
		if err := x.m.Repair(); err != nil {
			t.Fatal(err)
		}
	}
	s.converge("repairing")
	s.lax = false
	s.check("after repair")
	s.steady("after repair")
}
