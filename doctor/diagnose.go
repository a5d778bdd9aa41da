package doctor

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// MaxSkew is the clock difference between members the doctor names.
const MaxSkew = 2 * time.Second

// Settle is how long a member's firewall must have recorded path probes
// before a member missing from its record is named: two probe rounds
// (pathprobe.Every) and a margin, so a member that was merely not heard
// yet is not.
const Settle = 11 * time.Second

// Severity says whether a finding breaks something.
type Severity string

const (
	// Fault: traffic the cluster needs does not flow, or will not.
	Fault Severity = "fault"
	// Note: worth knowing, nothing broken.
	Note Severity = "note"
)

// Finding is one problem: where it is (a host, hosts, or a path "A → B"),
// what it is, and how to fix it.
type Finding struct {
	Severity Severity `json:"Severity"`
	Where    string   `json:"Where"`
	What     string   `json:"What"`
	Fix      string   `json:"Fix"`
}

// Report is what the doctor found.
type Report struct {
	// Host is the address of the host that ran the doctor.
	Host string `json:"Host"`
	// Members is how many members this host knows; Answered how many
	// answered the query.
	Members  int `json:"Members"`
	Answered int `json:"Answered"`
	// Paths is how many ordered pairs of members were checked.
	Paths    int       `json:"Paths"`
	Findings []Finding `json:"Findings"`
}

// Faults counts the report's faults.
func (r Report) Faults() int {
	n := 0
	for _, f := range r.Findings {
		if f.Severity == Fault {
			n++
		}
	}
	return n
}

// Member is a cluster member as this host's serf sees it.
type Member struct {
	// Name is its advertise address, as text.
	Name string
	// Status is serf's: alive, leaving, left, failed, suspect(ed).
	Status string
}

// Received is one member's answer as it arrived.
type Received struct {
	Answer Answer
	// Err is why the answer could not be read; Answer is then empty.
	Err string
	// At is this host's clock when the answer arrived, RTT how long after
	// the query was sent: the member's Clock is compared with At - RTT/2.
	At  time.Time
	RTT time.Duration
}

// Input is what Diagnose works from.
type Input struct {
	// Self is this host's advertise address.
	Self string
	// DataPort, GossipPort and ESPUDPPort are the cluster's ports
	// (the same on every host), named in fixes.
	DataPort, GossipPort, ESPUDPPort int
	// Waited is how long the query waited for answers.
	Waited time.Duration
	// Members are the members this host knows, itself included.
	Members []Member
	// Answers are the answers by member name.
	Answers map[string]Received
}

// Diagnose names every problem the answers show: members not alive or not
// answering, each ordered pair of answering members whose data port, full
// size or native ESP does not get through, clocks apart, kernels that lack
// what vxsec needs, a swarm directory unseen.
func Diagnose(in Input) Report {
	r := Report{Host: in.Self, Members: len(in.Members)}
	var fs []Finding
	add := func(sev Severity, where, what, fix string) {
		fs = append(fs, Finding{Severity: sev, Where: where, What: what, Fix: fix})
	}
	members := slices.Clone(in.Members)
	slices.SortFunc(members, func(a, b Member) int { return compareNames(a.Name, b.Name) })

	var answered []string
	answers := map[string]Answer{}
	for _, m := range members {
		switch m.Status {
		case "alive":
		case "left", "leaving":
			add(Note, m.Name, "left the cluster (`vxsec leave`, or its plugin was removed)",
				"nothing, if it was decommissioned; otherwise install or enable the plugin on it again")
			continue
		default:
			add(Fault, m.Name, fmt.Sprintf("not alive: the cluster says %q (it stopped answering the gossip port's probes)", m.Status),
				fmt.Sprintf("check that the vxsec plugin runs on %s (`docker plugin ls`), and that TCP and UDP %d (the gossip port) pass both ways between it and every other host; every host needs the same cluster secret",
					m.Name, in.GossipPort))
			continue
		}
		rec, ok := in.Answers[m.Name]
		switch {
		case !ok:
			add(Fault, m.Name, fmt.Sprintf("alive, but did not answer the doctor's query within %s", in.Waited.Round(100*time.Millisecond)),
				fmt.Sprintf("run the same vxsec release on every host (an older one does not answer); otherwise UDP %d from %s to %s is blocked one way (answers come back over it)",
					in.GossipPort, m.Name, in.Self))
		case rec.Err != "":
			add(Fault, m.Name, "answered with something this doctor cannot read: "+rec.Err,
				"run the same vxsec release on every host")
		default:
			answered = append(answered, m.Name)
			answers[m.Name] = rec.Answer
		}
	}
	r.Answered = len(answered)

	encrypted := false
	for _, name := range answered {
		encrypted = encrypted || answers[name].Encrypted
	}
	for _, name := range answered {
		fs = append(fs, hostFindings(name, answers[name], encrypted)...)
	}
	fs = append(fs, skewFindings(in, answered)...)

	for _, b := range answered {
		ab := answers[b]
		if ab.Recording == 0 {
			add(Note, b, "paths into it are not checked: it has no vxsec network, and only a host with one records probes",
				"nothing to do: they are checked once a vxsec network exists there")
			continue
		}
		if time.Duration(ab.Recording)*time.Second < Settle {
			// Too young a record to tell a lost probe from one not
			// sent yet: not checked, not named.
			continue
		}
		unlisted := false
		for _, a := range answered {
			if a == b {
				continue
			}
			pf, ok := pathFindings(in, a, b, answers[a], ab)
			if !ok {
				unlisted = true
				continue
			}
			r.Paths++
			fs = append(fs, pf...)
		}
		if unlisted {
			add(Note, b, fmt.Sprintf("its answer left out %d of the sources it recorded (too many members for one answer): paths from members not listed were not checked",
				ab.cut(0)+ab.cut(1)+ab.cut(2)),
				"nothing to do: run the doctor on another host to check those paths")
		}
	}
	r.Findings = group(fs)
	return r
}

// pathFindings checks the path from a to b by what b recorded: ok false
// when b's answer left a out of a list that would decide.
func pathFindings(in Input, a, b string, aa, ab Answer) ([]Finding, bool) {
	addr, err := netip.ParseAddr(a)
	if err != nil {
		return nil, false
	}
	where := a + " → " + b
	if !slices.Contains(ab.Small, addr) {
		if ab.cut(0) > 0 {
			return nil, false
		}
		return []Finding{{Severity: Fault, Where: where,
			What: fmt.Sprintf("%s's probes to UDP %d (the data port) do not reach %s: VXLAN from %s is dropped on the way", a, in.DataPort, b, a),
			Fix: fmt.Sprintf("open UDP %d from %s on %s's firewall and on anything between them (security groups, another nftables or iptables table); VXSEC_DATA_PORT must be the same on every host",
				in.DataPort, a, b)}}, true
	}
	var out []Finding
	if !slices.Contains(ab.Full, addr) {
		if ab.cut(1) > 0 {
			return nil, false
		}
		mtu := aa.MTU
		out = append(out, Finding{Severity: Fault, Where: where,
			What: fmt.Sprintf("an MTU black hole: %s's small probes reach %s, but its full-size ones (%d bytes, DF set) are lost: the path is narrower than the underlay MTU vxsec assumes, and full-size packets of its networks are dropped", a, b, mtu),
			Fix: fmt.Sprintf("find the narrower link (`tracepath -n %s` on %s) and raise its MTU to %d, or create the networks with a smaller underlay MTU (--opt com.docker.network.driver.mtu=N, N the path's) and let ICMP \"fragmentation needed\" through",
				b, a, mtu)})
	}
	if aa.Encrypted && ab.Encrypted && ab.Encap != "udp" && !slices.Contains(ab.ESP, addr) {
		if ab.cut(2) > 0 {
			return out, true
		}
		if ab.Encap == "esp" {
			out = append(out, Finding{Severity: Fault, Where: where,
				What: fmt.Sprintf("native ESP (IP protocol 50) from %s does not reach %s, which receives encrypted traffic only as native ESP (VXSEC_ESP_ENCAP=esp): nothing encrypted flows from %s to %s", a, b, a, b),
				Fix: fmt.Sprintf("let IP protocol 50 from %s through to %s (its firewall and anything between them), or set VXSEC_ESP_ENCAP=auto on %s, which receives in ESP in UDP (UDP %d) where native ESP is dropped",
					a, b, b, in.ESPUDPPort)})
		} else {
			out = append(out, Finding{Severity: Note, Where: where,
				What: fmt.Sprintf("native ESP (IP protocol 50) from %s does not reach %s: encrypted traffic on this path travels as ESP in UDP (UDP %d) instead", a, b, in.ESPUDPPort),
				Fix:  fmt.Sprintf("nothing is needed (VXSEC_ESP_ENCAP=auto); for native ESP, let IP protocol 50 from %s through to %s", a, b)})
		}
	}
	return out, true
}

// hostFindings are what a member's own checks say of it.
func hostFindings(name string, a Answer, encrypted bool) []Finding {
	var out []Finding
	var ipsec []string
	for _, l := range a.Lacks {
		switch l {
		case LackESP:
			ipsec = append(ipsec, "IPsec ESP")
		case LackGCM:
			ipsec = append(ipsec, "AES-GCM")
		case LackVXLAN:
			out = append(out, Finding{Severity: Fault, Where: name,
				What: "the kernel cannot make VXLAN devices: no vxsec network works here",
				Fix:  "load the vxlan module (`modprobe vxlan`) or use a kernel built with CONFIG_VXLAN"})
		case LackNftables:
			out = append(out, Finding{Severity: Fault, Where: name,
				What: "nftables is unavailable: vxsec makes no network without its firewall",
				Fix:  "load nf_tables (`modprobe nf_tables`) or use a kernel built with CONFIG_NF_TABLES"})
		}
	}
	if len(ipsec) > 0 {
		f := Finding{Severity: Note, Where: name,
			What: fmt.Sprintf("the kernel lacks %s: encrypted networks are refused here (no network of this cluster is encrypted)", strings.Join(ipsec, " and ")),
			Fix:  "load the modules (`modprobe esp4 esp6`; AES-GCM is CONFIG_CRYPTO_GCM) or use a kernel built with them"}
		if encrypted {
			f.Severity = Fault
			f.What = fmt.Sprintf("the kernel lacks %s, and this cluster has encrypted networks: they are refused here", strings.Join(ipsec, " and "))
		}
		out = append(out, f)
	}
	if a.SwarmUnseen {
		out = append(out, Finding{Severity: Fault, Where: name,
			What: "its engine is a swarm node, but the plugin does not see the swarm directory (VXSEC_SWARM_DIR): it runs as outside swarm (local scope, no secret agreed with the swarm's nodes)",
			Fix:  "with the plugin disabled, `docker plugin set vxsec swarm.source=<data-root>/swarm` (again after every upgrade), then enable it"})
	}
	return out
}

// skewFindings names the members whose clock is more than MaxSkew from the
// clock most members agree on (this host's on a tie). A member's offset is
// its Clock less this host's clock halfway through the query's round trip.
func skewFindings(in Input, answered []string) []Finding {
	if len(answered) < 2 {
		return nil
	}
	off := map[string]time.Duration{}
	for _, name := range answered {
		rec := in.Answers[name]
		mid := rec.At.Add(-rec.RTT / 2)
		off[name] = time.UnixMilli(rec.Answer.Clock).Sub(mid)
	}
	agree := func(ref time.Duration) int {
		n := 0
		for _, name := range answered {
			if d := off[name] - ref; d <= MaxSkew && d >= -MaxSkew {
				n++
			}
		}
		return n
	}
	ref, best := off[in.Self], -1
	if _, ok := off[in.Self]; ok {
		best = agree(ref)
	}
	for _, name := range answered {
		if n := agree(off[name]); n > best {
			ref, best = off[name], n
		}
	}
	var out []Finding
	for _, name := range answered {
		d := off[name] - ref
		if d <= MaxSkew && d >= -MaxSkew {
			continue
		}
		dir := "ahead of"
		if d < 0 {
			dir, d = "behind", -d
		}
		out = append(out, Finding{Severity: Fault, Where: name,
			What: fmt.Sprintf("its clock is %s %s the cluster's (%d of %d members agree within %s)", d.Round(time.Second), dir, best, len(answered), MaxSkew),
			Fix:  "synchronise its clock (NTP: chrony or systemd-timesyncd): host certificates, swarm's TLS and table versions are checked against it"})
	}
	return out
}

// group merges findings that differ only in where (a kernel several hosts
// share), keeps the order of first appearance within faults first, then
// notes.
func group(fs []Finding) []Finding {
	var out []Finding
	idx := map[[3]string]int{}
	for _, f := range fs {
		k := [3]string{string(f.Severity), f.What, f.Fix}
		if i, ok := idx[k]; ok {
			out[i].Where += ", " + f.Where
			continue
		}
		idx[k] = len(out)
		out = append(out, f)
	}
	slices.SortStableFunc(out, func(a, b Finding) int {
		if a.Severity == b.Severity {
			return 0
		}
		if a.Severity == Fault {
			return -1
		}
		return 1
	})
	return out
}

// compareNames orders member names as addresses (198.18.0.2 before
// 198.18.0.10), text when they are not.
func compareNames(a, b string) int {
	x, errA := netip.ParseAddr(a)
	y, errB := netip.ParseAddr(b)
	if errA == nil && errB == nil {
		return x.Compare(y)
	}
	return strings.Compare(a, b)
}
