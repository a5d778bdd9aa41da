package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/vxsec/vxsec/internal/benchdata"
)

// seconds is ds in float seconds, the results files' unit.
func seconds(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = d.Seconds()
	}
	return out
}

// sidesOf is iperfABBA's results in the order of the sides measured.
func sidesOf(sides []pair, results map[string][]float64) []benchdata.Side {
	var out []benchdata.Side
	for _, s := range sides {
		out = append(out, benchdata.Side{Name: s.name, BitsPerSecond: results[s.name]})
	}
	return out
}

// parseSweep reads -hosts-sweep: host counts, comma-separated, each at
// least 2 (the scale benchmark needs a remote host).
func parseSweep(s string) ([]int, error) {
	var hosts []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 2 {
			return nil, fmt.Errorf("host count %q: want a whole number of at least 2", f)
		}
		hosts = append(hosts, n)
	}
	if len(hosts) == 0 {
		return nil, fmt.Errorf("no host count in %q", s)
	}
	return hosts, nil
}
