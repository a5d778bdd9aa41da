package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/vxsec/vxsec/lab"
)

// hostCounters are a daemon's running totals that tell where a cluster's
// work goes: tables installed, passes over the kernel, pulls served, and
// the bytes its underlay link carried.
type hostCounters struct {
	tables, passes, pullsServed float64
	// sent is what the host's underlay link sent, in bytes.
	sent float64
}

func (a hostCounters) sub(b hostCounters) hostCounters {
	return hostCounters{a.tables - b.tables, a.passes - b.passes, a.pullsServed - b.pullsServed, a.sent - b.sent}
}

// readCounters scrapes every host's metrics (the default metrics address,
// in its namespace) and its underlay link's byte counters.
func readCounters(ctx context.Context, hosts []*lab.Host) ([]hostCounters, error) {
	out := make([]hostCounters, len(hosts))
	err := eachHost(hosts, 8, func(h *lab.Host) error {
		i := slices.Index(hosts, h)
		raw, err := h.HTTPGet(ctx, "127.0.0.1:7949", "/metrics")
		if err != nil {
			return err
		}
		m := parseMetrics(raw)
		out[i].tables = m["vxsec_tables_taken_total"]
		out[i].passes = m["vxsec_peer_passes_total"]
		out[i].pullsServed = m[`vxsec_gossip_accepted_total{kind="pull"}`]
		out[i].sent, err = linkSent(ctx, h.NS, "eth0")
		return err
	})
	return out, err
}

// parseMetrics reads Prometheus' text format into series → value.
func parseMetrics(raw []byte) map[string]float64 {
	m := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m
}

// linkSent is what dev in namespace ns sent, in bytes.
func linkSent(ctx context.Context, ns, dev string) (float64, error) {
	raw, err := exec.CommandContext(ctx, "ip", "-n", ns, "-s", "-j", "link", "show", dev).Output()
	if err != nil {
		return 0, fmt.Errorf("ip -n %s -s link show %s: %w", ns, dev, err)
	}
	var links []struct {
		Stats64 struct {
			TX struct{ Bytes float64 } `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(raw, &links); err != nil || len(links) != 1 {
		return 0, fmt.Errorf("ip -s -j link show %s in %s: %v", dev, ns, err)
	}
	return links[0].Stats64.TX.Bytes, nil
}
