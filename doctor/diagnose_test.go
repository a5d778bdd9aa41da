package doctor

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	h1, h2, h3 = "198.18.0.1", "198.18.0.2", "198.18.0.3"
	a1, a2, a3 = netip.MustParseAddr(h1), netip.MustParseAddr(h2), netip.MustParseAddr(h3)
	now        = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
)

// healthy is a three-member cluster as h1 sees it, where every probe
// arrives everywhere: the doctor must name nothing.
func healthy() Input {
	in := Input{Self: h1, DataPort: 4800, GossipPort: 7947, ESPUDPPort: 4802, Waited: 3 * time.Second,
		Members: []Member{{h3, "alive"}, {h1, "alive"}, {h2, "alive"}}, Answers: map[string]Received{}}
	for _, h := range []netip.Addr{a1, a2, a3} {
		var others Addrs
		for _, o := range []netip.Addr{a1, a2, a3} {
			if o != h {
				others = append(others, o)
			}
		}
		in.Answers[h.String()] = Received{At: now, RTT: 20 * time.Millisecond, Answer: Answer{
			Clock: now.Add(-10 * time.Millisecond).UnixMilli(), Encap: "auto", Recording: 60, MTU: 1500,
			Small: others, Full: slices.Clone(others), ESP: slices.Clone(others)}}
	}
	return in
}

// change edits member name's answer.
func change(in Input, name string, f func(*Answer)) Input {
	rec := in.Answers[name]
	f(&rec.Answer)
	in.Answers[name] = rec
	return in
}

func without(as Addrs, a netip.Addr) Addrs {
	return slices.DeleteFunc(slices.Clone(as), func(x netip.Addr) bool { return x == a })
}

func encrypted(in Input, encap string) Input {
	for _, h := range []string{h1, h2, h3} {
		in = change(in, h, func(a *Answer) { a.Encrypted, a.Encap = true, encap })
	}
	return in
}

// want is one finding expected: its severity, where, and words its what
// and fix must hold.
type want struct {
	sev   Severity
	where string
	what  string
	fix   string
}

func TestDiagnose(t *testing.T) {
	cases := []struct {
		name  string
		in    Input
		paths int
		want  []want
	}{
		{"healthy", healthy(), 6, nil},
		{"healthy-encrypted-auto", encrypted(healthy(), "auto"), 6, nil},
		{"member-failed", func() Input {
			in := healthy()
			in.Members[0].Status = "failed"
			delete(in.Answers, h3)
			return in
		}(), 2, []want{{Fault, h3, `not alive: the cluster says "failed"`, "TCP and UDP 7947"}}},
		{"member-left", func() Input {
			in := healthy()
			in.Members[0].Status = "left"
			delete(in.Answers, h3)
			return in
		}(), 2, []want{{Note, h3, "left the cluster", "decommissioned"}}},
		{"member-silent", func() Input { in := healthy(); delete(in.Answers, h2); return in }(), 2,
			[]want{{Fault, h2, "did not answer the doctor's query within 3s", "UDP 7947 from 198.18.0.2 to 198.18.0.1"}}},
		{"member-unreadable", func() Input {
			in := healthy()
			in.Answers[h2] = Received{Err: "decoding a doctor's answer: bad"}
			return in
		}(), 2, []want{{Fault, h2, "cannot read", "same vxsec release"}}},
		{"data-port-blocked-one-way", change(healthy(), h3, func(a *Answer) { a.Small, a.Full = without(a.Small, a2), without(a.Full, a2) }), 6,
			[]want{{Fault, h2 + " → " + h3, "probes to UDP 4800 (the data port) do not reach 198.18.0.3", "open UDP 4800 from 198.18.0.2 on 198.18.0.3's firewall"}}},
		{"mtu-black-hole", change(change(healthy(), h3, func(a *Answer) { a.Full = nil }), h1, func(a *Answer) { a.Full = without(a.Full, a3) }), 6,
			[]want{
				{Fault, h3 + " → " + h1, "MTU black hole", "tracepath -n 198.18.0.1"},
				{Fault, h1 + " → " + h3, "MTU black hole", "com.docker.network.driver.mtu"},
				{Fault, h2 + " → " + h3, "(1500 bytes, DF set)", "raise its MTU to 1500"},
			}},
		{"esp-dropped-auto", change(encrypted(healthy(), "auto"), h2, func(a *Answer) { a.ESP = without(a.ESP, a1) }), 6,
			[]want{{Note, h1 + " → " + h2, "travels as ESP in UDP (UDP 4802)", "nothing is needed"}}},
		{"esp-dropped-esp-mode", change(encrypted(healthy(), "esp"), h2, func(a *Answer) { a.ESP = without(a.ESP, a1) }), 6,
			[]want{{Fault, h1 + " → " + h2, "nothing encrypted flows", "VXSEC_ESP_ENCAP=auto on 198.18.0.2"}}},
		{"esp-dropped-udp-mode-receiver", change(encrypted(healthy(), "udp"), h2, func(a *Answer) { a.ESP = nil }), 6, nil},
		{"esp-unseen-without-encrypted-networks", change(healthy(), h2, func(a *Answer) { a.ESP = nil }), 6, nil},
		{"clock-ahead", change(healthy(), h3, func(a *Answer) { a.Clock = now.Add(time.Minute).UnixMilli() }), 6,
			[]want{{Fault, h3, "its clock is 1m0s ahead of the cluster's (2 of 3 members agree within 2s)", "NTP"}}},
		{"clock-within-bound", change(healthy(), h3, func(a *Answer) { a.Clock = now.Add(1500 * time.Millisecond).UnixMilli() }), 6, nil},
		{"clock-of-this-host-off", change(change(healthy(), h2, func(a *Answer) { a.Clock = now.Add(-time.Minute).UnixMilli() }), h3,
			func(a *Answer) { a.Clock = now.Add(-time.Minute).UnixMilli() }), 6,
			[]want{{Fault, h1, "its clock is 1m0s ahead of the cluster's", "NTP"}}},
		{"round-trip-halved", func() Input {
			// h3's answer took 6 s: its clock, 3 s behind the arrival,
			// is on time.
			in := change(healthy(), h3, func(a *Answer) { a.Clock = now.Add(-3 * time.Second).UnixMilli() })
			rec := in.Answers[h3]
			rec.RTT = 6 * time.Second
			in.Answers[h3] = rec
			return in
		}(), 6, nil},
		{"kernel-without-esp-no-encrypted-network", func() Input {
			in := healthy()
			for _, h := range []string{h1, h2, h3} {
				in = change(in, h, func(a *Answer) { a.Lacks = []string{LackESP, LackGCM} })
			}
			return in
		}(), 6, []want{{Note, h1 + ", " + h2 + ", " + h3, "lacks IPsec ESP and AES-GCM", "modprobe esp4"}}},
		{"kernel-without-gcm-encrypted-elsewhere", change(change(healthy(), h1, func(a *Answer) { a.Encrypted = true }), h2,
			func(a *Answer) { a.Lacks = []string{LackGCM} }), 6,
			[]want{{Fault, h2, "lacks AES-GCM, and this cluster has encrypted networks", "CONFIG_CRYPTO_GCM"}}},
		{"kernel-without-vxlan-and-nftables", change(healthy(), h2, func(a *Answer) { a.Lacks = []string{LackVXLAN, LackNftables} }), 6,
			[]want{{Fault, h2, "VXLAN devices", "modprobe vxlan"}, {Fault, h2, "nftables is unavailable", "nf_tables"}}},
		{"swarm-directory-unseen", change(healthy(), h3, func(a *Answer) { a.SwarmUnseen = true }), 6,
			[]want{{Fault, h3, "does not see the swarm directory", "swarm.source"}}},
		{"no-network-no-record", change(healthy(), h3, func(a *Answer) { a.Recording, a.Small, a.Full, a.ESP = 0, nil, nil, nil }), 4,
			[]want{{Note, h3, "no vxsec network", "once a vxsec network exists"}}},
		{"record-too-young", change(healthy(), h3, func(a *Answer) { a.Recording, a.Small, a.Full = 3, nil, nil }), 4, nil},
		{"answer-truncated", change(healthy(), h3, func(a *Answer) { a.Small, a.Full, a.Cut = Addrs{a1}, Addrs{a1}, []int{1, 1, 0} }), 5,
			[]want{{Note, h3, "left out 2 of the sources", "another host"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := Diagnose(tc.in)
			if r.Paths != tc.paths {
				t.Errorf("paths checked %d, want %d", r.Paths, tc.paths)
			}
			if r.Host != h1 || r.Members != len(tc.in.Members) {
				t.Errorf("report of %q with %d members, want %s with %d", r.Host, r.Members, h1, len(tc.in.Members))
			}
			if len(r.Findings) != len(tc.want) {
				t.Fatalf("%d findings, want %d: %+v", len(r.Findings), len(tc.want), r.Findings)
			}
			for _, w := range tc.want {
				found := false
				for _, f := range r.Findings {
					found = found || (f.Severity == w.sev && f.Where == w.where && strings.Contains(f.What, w.what) && strings.Contains(f.Fix, w.fix))
				}
				if !found {
					t.Errorf("no %s at %q saying %q, fix %q; findings: %+v", w.sev, w.where, w.what, w.fix, r.Findings)
				}
			}
			for i, f := range r.Findings {
				if f.Fix == "" || f.What == "" || f.Where == "" {
					t.Errorf("finding %d lacks a part: %+v", i, f)
				}
				if i > 0 && f.Severity == Fault && r.Findings[i-1].Severity == Note {
					t.Errorf("a fault after a note: %+v", r.Findings)
				}
			}
		})
	}
}
