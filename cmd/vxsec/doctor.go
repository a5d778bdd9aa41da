package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netlink"

	"github.com/vxsec/vxsec/config"
	"github.com/vxsec/vxsec/doctor"
	"github.com/vxsec/vxsec/driver"
	"github.com/vxsec/vxsec/engine"
	"github.com/vxsec/vxsec/firewall"
	"github.com/vxsec/vxsec/gossip"
	"github.com/vxsec/vxsec/ipsec"
	"github.com/vxsec/vxsec/swarmtrust"
)

// doctorWait is how long a doctor run waits for the members' answers: they
// come in milliseconds; a member silent this long is named.
const doctorWait = 3 * time.Second

// engineWait bounds the question to the local engine inside an answer: the
// asker waits doctorWait for it.
const engineWait = time.Second

// doctorHost is what this host tells a doctor about itself (doctor.Answer).
type doctorHost struct {
	fw       *firewall.Firewall
	keys     *ipsec.Manager
	d        *driver.Driver
	docker   *engine.Docker
	swarmDir string
	encap    string
	mtu      int
	// now is the driver's clock (shifted in a test build).
	now func() time.Time
	log *slog.Logger
}

// answerQuery is the cluster's query handler (gossip.Config.Queries).
func (h *doctorHost) answerQuery(name string, _ []byte) []byte {
	if name != doctor.Query {
		return nil
	}
	b, err := doctor.Encode(h.answer(), gossip.MaxAnswer)
	if err != nil {
		h.log.Error("answering the doctor", "err", err)
		return nil
	}
	return b
}

// answer gathers this host's facts. It asks the kernel and the engine,
// under no lock of the driver's.
func (h *doctorHost) answer() doctor.Answer {
	a := doctor.Answer{Encap: h.encap, Encrypted: h.keys.Active(), MTU: h.mtu}
	a.Lacks = h.kernelLacks()
	if !swarmtrust.InSwarm(h.swarmDir) {
		ctx, cancel := context.WithTimeout(context.Background(), engineWait)
		active, err := h.docker.SwarmActive(ctx)
		cancel()
		// An engine that cannot be asked (none has called the plugin
		// yet: a lab host) says nothing.
		a.SwarmUnseen = err == nil && active
	}
	rec, err := h.fw.PathSeen()
	if err != nil {
		h.log.Warn("reading the path probe record for the doctor", "err", err)
	}
	if rec.Recording {
		a.Recording = max(1, int(time.Since(rec.Since).Seconds()))
		a.Small, a.Full = rec.Small, rec.Full
	}
	if a.Encrypted {
		seen, _, err := h.fw.ESPSeen()
		if err != nil {
			h.log.Warn("reading which members' native ESP arrived, for the doctor", "err", err)
		}
		a.ESP = seen
	}
	// Last: the clock as close to the answer's sending as can be.
	a.Clock = h.now().UnixMilli()
	return a
}

// kernelLacks checks the kernel's features vxsec needs.
func (h *doctorHost) kernelLacks() []string {
	var out []string
	esp, gcm := ipsec.ProbeFeatures()
	if esp != nil {
		out = append(out, doctor.LackESP)
	}
	if gcm != nil {
		out = append(out, doctor.LackGCM)
	}
	if len(h.d.Networks()) == 0 {
		// No network proves VXLAN works here: make a device (down, so it
		// binds no port) and remove it.
		if err := tryVXLAN(); err != nil {
			h.log.Debug("the kernel cannot make a VXLAN device", "err", err)
			out = append(out, doctor.LackVXLAN)
		}
	}
	if _, err := h.fw.Present(); err != nil {
		out = append(out, doctor.LackNftables)
	}
	return out
}

// tryVXLAN makes a VXLAN device of a random name, which no other code of
// vxsec's would take for its own (no vxsec- prefix, no alias), and removes
// it.
func tryVXLAN() error {
	b := make([]byte, 4)
	rand.Read(b)
	l := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vxdoc" + hex.EncodeToString(b)}, VxlanId: 1}
	if err := netlink.LinkAdd(l); err != nil {
		return fmt.Errorf("adding a VXLAN device: %w", err)
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("removing the VXLAN device %s made to check the kernel: %w", l.Name, err)
	}
	return nil
}

// errDoctorBusy: one doctor run at a time per host. Each run asks every
// member, and any local user can ask for one on the metrics address.
var errDoctorBusy = errors.New("a doctor run is already under way on this host; try again in a few seconds")

// doctorRunner runs the doctor on this host.
type doctorRunner struct {
	// running holds a token while a run is under way.
	running chan struct{}
	cl      *clusterRef
	self    netip.Addr
	s       config.Settings
	now     func() time.Time
}

func newDoctorRunner(cl *clusterRef, self netip.Addr, s config.Settings, now func() time.Time) *doctorRunner {
	return &doctorRunner{running: make(chan struct{}, 1), cl: cl, self: self, s: s, now: now}
}

// run asks every member and diagnoses their answers.
func (r *doctorRunner) run(ctx context.Context) (doctor.Report, error) {
	select {
	case r.running <- struct{}{}:
		defer func() { <-r.running }()
	default:
		return doctor.Report{}, errDoctorBusy
	}
	c := r.cl.get()
	if c == nil {
		return doctor.Report{}, errors.New("the cluster has not started yet (in swarm mode: no secret agreed with the swarm's nodes yet)")
	}
	ctx, cancel := context.WithTimeout(ctx, doctorWait)
	defer cancel()
	in := doctor.Input{Self: r.self.String(), DataPort: r.s.DataPort, GossipPort: r.s.GossipPort, ESPUDPPort: r.s.ESPUDPPort,
		Answers: map[string]doctor.Received{}}
	for _, m := range c.Members() {
		in.Members = append(in.Members, doctor.Member{Name: m.Name, Status: m.Status})
	}
	start := time.Now()
	answers, err := c.Ask(ctx, doctor.Query, nil)
	if err != nil {
		return doctor.Report{}, fmt.Errorf("asking the members: %w", err)
	}
	in.Waited = time.Since(start)
	// Answers arrive timed by the real clock; the doctor compares members'
	// clocks with the driver's (the same, save in a test build).
	shift := r.now().Sub(time.Now())
	for name, a := range answers {
		rec := doctor.Received{At: a.At.Add(shift), RTT: a.RTT}
		if rec.Answer, err = doctor.Decode(a.Payload); err != nil {
			rec.Err = err.Error()
		}
		in.Answers[name] = rec
	}
	return doctor.Diagnose(in), nil
}

// serveDoctor answers /doctor (text) and /doctor.json on the metrics mux.
func (r *doctorRunner) serveDoctor(asJSON bool) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		rep, err := r.run(req.Context())
		if err != nil {
			code := http.StatusServiceUnavailable
			if errors.Is(err, errDoctorBusy) {
				code = http.StatusTooManyRequests
			}
			http.Error(w, "vxsec doctor: "+err.Error(), code)
			return
		}
		if asJSON {
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			enc.Encode(rep)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		rep.WriteText(w)
	}
}

// alivePeers are the members to probe: alive ones.
func alivePeers(cl *clusterRef) func() []netip.Addr {
	return func() []netip.Addr {
		c := cl.get()
		if c == nil {
			return nil
		}
		var out []netip.Addr
		for _, m := range c.Members() {
			if a, err := netip.ParseAddr(m.Name); err == nil && m.Status == "alive" {
				out = append(out, a)
			}
		}
		return out
	}
}

func doctorCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use: "doctor",
		Short: "check this host and every path between members (data port, MTU, native ESP, clocks, kernels) and print " +
			"each problem with its fix; exits 1 when there is a fault",
		Args: cobra.NoArgs,
	}
	sock := socketFlag(cmd)
	asJSON := cmd.Flags().Bool("json", false, "print the report as JSON")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		var raw json.RawMessage
		if err := daemonClient(cmd, *sock).Call(cmd.Context(), "VxSec.Doctor", struct{}{}, &raw); err != nil {
			return fmt.Errorf("%w (is the plugin enabled? `docker plugin ls`; without the vxsec binary on the host: curl -s http://%s/doctor)",
				err, config.DefaultMetricsAddr)
		}
		var rep doctor.Report
		if err := json.Unmarshal(raw, &rep); err != nil {
			return fmt.Errorf("reading the doctor's report: %w", err)
		}
		if *asJSON {
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			enc.Encode(rep)
		} else {
			rep.WriteText(cmd.OutOrStdout())
		}
		if n := rep.Faults(); n > 0 {
			return fmt.Errorf("%d %s found", n, plural(n, "fault"))
		}
		return nil
	}
	return cmd
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
