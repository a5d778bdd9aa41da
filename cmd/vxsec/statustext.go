package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// writeStatus prints st for a person: what needs attention first, then
// the members, the networks, the peers' keys and the locks' drops.
func writeStatus(w io.Writer, st daemonStatus, now time.Time) {
	head := "vxsec on " + st.Node
	if st.Local != "" {
		head += " (behind NAT: its own address is " + st.Local + ")"
	}
	fmt.Fprintln(w, head)

	if warns := warnings(st, now); len(warns) > 0 {
		fmt.Fprintln(w, "\nWarnings:")
		for _, m := range warns {
			fmt.Fprintln(w, "  ! "+m)
		}
	}

	byState := map[string][]string{}
	for _, m := range st.Members {
		byState[m.Status] = append(byState[m.Status], m.Name)
	}
	fmt.Fprintf(w, "\nMembers: %d", len(st.Members))
	for _, state := range slices.Sorted(maps.Keys(byState)) {
		fmt.Fprintf(w, ", %d %s", len(byState[state]), state)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, m := range st.Members {
		fmt.Fprintf(tw, "  %s\t%s\n", m.Name, m.Status)
	}
	tw.Flush()

	fmt.Fprintf(w, "\nNetworks: %d\n", len(st.Networks))
	if len(st.Networks) > 0 {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  NETWORK\tVNI\tLOCAL\tREMOTE")
		for _, n := range st.Networks {
			fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\n", short(n.ID), n.VNI, n.Local, n.Remote)
		}
		tw.Flush()
	}

	if ip := st.IPsec; ip != nil && ip.Active {
		fmt.Fprintf(w, "\nIPsec: active, %d live epoch(s)", len(ip.Epochs))
		if len(ip.Epochs) > 0 {
			fmt.Fprintf(w, ", newest %s old", age(now, time.Unix(0, int64(ip.Epochs[len(ip.Epochs)-1]))))
		}
		fmt.Fprintf(w, ", %d rotation(s) since start", ip.Rotations)
		if !ip.LastRotation.IsZero() {
			fmt.Fprintf(w, ", last %s ago", age(now, ip.LastRotation))
		}
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  PEER\tSENDS\tRECEIVES\tKEY AGE\tREKEYS\tWHY")
		for _, p := range ip.Peers {
			keyAge := "-"
			if !p.Since.IsZero() {
				keyAge = age(now, p.Since)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%s\n", p.Host, dash(p.Encap), dash(p.InEncap), keyAge, p.Rekeys, p.EncapWhy)
		}
		tw.Flush()
	}

	var drops []string
	for _, lock := range slices.Sorted(maps.Keys(st.Drops)) {
		if n := st.Drops[lock]; n > 0 {
			drops = append(drops, fmt.Sprintf("%s %d", lock, n))
		}
	}
	if len(drops) == 0 {
		fmt.Fprintln(w, "\nDrops: none")
	} else {
		fmt.Fprintln(w, "\nDrops (each lock holding; a stranger's traffic counts here): "+strings.Join(drops, ", "))
	}
	if sv := st.Services; sv != nil {
		fmt.Fprintf(w, "\nService VIPs: %d in %d container namespace(s); engine: %s\n", len(sv.Services), sv.Sandboxes, sv.Engine)
	}
	fmt.Fprintln(w, "\n(vxsec status --json for everything)")
}

// warnings are what a person should look at first.
func warnings(st daemonStatus, now time.Time) []string {
	var out []string
	for _, m := range st.Members {
		if m.Status != "alive" {
			out = append(out, fmt.Sprintf("member %s is %s: its endpoints are unreachable", m.Name, m.Status))
		}
	}
	if len(st.Members) == 0 {
		out = append(out, "no cluster yet: waiting for the swarm's secret, or set VXSEC_SECRET and VXSEC_JOIN")
	}
	if ip := st.IPsec; ip != nil && ip.Active {
		for _, p := range ip.Peers {
			if p.Encap == "" {
				out = append(out, fmt.Sprintf("no outbound key with %s yet: encrypted traffic to it is held back (fail closed)", p.Host))
			}
		}
	}
	if t := st.Trust; t != nil && t.LastRefusal != "" {
		out = append(out, "swarm trust refused a peer: "+t.LastRefusal)
	}
	if sv := st.Services; sv != nil {
		if sv.Engine != "ok" {
			out = append(out, "service VIPs: the engine's API: "+sv.Engine)
		}
		for sb, err := range sv.Failed {
			out = append(out, fmt.Sprintf("service VIPs: container %s: %s", short(sb), err))
		}
	}
	for _, r := range st.Refusals {
		if now.Sub(r.Time) < time.Hour {
			out = append(out, fmt.Sprintf("Docker's %s failed %s ago: %s", r.Method, age(now, r.Time), r.Error))
		}
	}
	return out
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// age is a duration for people: 42s, 7m, 3h, 2d.
func age(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
