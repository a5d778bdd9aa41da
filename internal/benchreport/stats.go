package benchreport

import (
	"math"
	"slices"
)

// summary is the distribution of a sample, as the tables show it.
type summary struct {
	n                            int
	min, p50, p90, p99, max, med float64
}

// summarize sorts a copy of v. Percentiles are nearest-rank, as vxlab bench
// and scripts/bench.sh compute them, so the report's figures match theirs.
func summarize(v []float64) summary {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return summary{}
	}
	return summary{
		n: len(s), min: s[0], max: s[len(s)-1],
		p50: percentile(s, 50), p90: percentile(s, 90), p99: percentile(s, 99),
		med: median(s),
	}
}

// percentile is the nearest-rank percentile p (0..100) of sorted s.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// median is the middle of v (the mean of the two middle values of an even
// count), as the benchmarks print their medians.
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	switch {
	case len(s) == 0:
		return math.NaN()
	case len(s)%2 == 1:
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// scaled multiplies every value, for plotting in a readable unit.
func scaled(v []float64, k float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = x * k
	}
	return out
}
