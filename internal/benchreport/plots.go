package benchreport

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// The size of every plot: wide enough for a few groups' labels, small
// enough to sit in a page of text.
const (
	plotWidth  = 6 * vg.Inch
	plotHeight = 3.6 * vg.Inch
)

// series is one named set of values of a plot.
type series struct {
	name   string
	values []float64
}

// save writes p as dir/name (SVG).
func save(p *plot.Plot, dir, name string) error {
	if err := p.Save(plotWidth, plotHeight, filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("plot %s: %w", name, err)
	}
	return nil
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	// A legend placed in a corner keeps clear of the axis and the title.
	p.Legend.XOffs, p.Legend.YOffs = vg.Points(8), -vg.Points(6)
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.Add(plotter.NewGrid())
	return p
}

// cdf plots the empirical distribution of each series: the share of samples
// at or below each value, as steps, so every sample is visible.
func cdf(title, x string, ss []series) (*plot.Plot, error) {
	p := newPlot(title, x, "share of samples ≤ x")
	p.Y.Min, p.Y.Max = 0, 1
	p.X.Min = 0 // durations: a curve far from 0 should look far from it
	// Top left: the curves rise to the right of it.
	p.Legend.Top = true
	p.Legend.Left = true
	for i, s := range ss {
		if len(s.values) == 0 {
			continue
		}
		v := slices.Clone(s.values)
		slices.Sort(v)
		n := float64(len(v))
		pts := plotter.XYs{{X: v[0], Y: 0}}
		for j, x := range v {
			pts = append(pts, plotter.XY{X: x, Y: float64(j) / n}, plotter.XY{X: x, Y: float64(j+1) / n})
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		l.Color = plotutil.Color(i)
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s (n=%d)", s.name, len(v)), l)
	}
	return p, nil
}

// curve is one line of a plot against a number (hosts): x and y alike long.
type curve struct {
	name string
	x, y []float64
}

// curves plots lines with points, one per curve.
func curves(title, x, y string, cs []curve) (*plot.Plot, error) {
	p := newPlot(title, x, y)
	p.Legend.Top = true
	p.Legend.Left = true
	p.X.Min, p.Y.Min = 0, 0
	// Ticks at the host counts measured, and room above the data for the
	// legend.
	var ticks []plot.Tick
	top := 0.0
	for _, c := range cs {
		for j, x := range c.x {
			if !slices.ContainsFunc(ticks, func(t plot.Tick) bool { return t.Value == x }) {
				ticks = append(ticks, plot.Tick{Value: x, Label: fmt.Sprint(x)})
			}
			top = max(top, c.y[j])
		}
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	if top > 0 {
		p.Y.Max = top * 1.4
	}
	for i, c := range cs {
		pts := make(plotter.XYs, len(c.x))
		for j := range c.x {
			pts[j] = plotter.XY{X: c.x[j], Y: c.y[j]}
		}
		slices.SortFunc(pts, func(a, b plotter.XY) int { return compare(a.X, b.X) })
		l, s, err := plotter.NewLinePoints(pts)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.name, err)
		}
		l.Color = plotutil.Color(i)
		s.Color = plotutil.Color(i)
		s.Shape = plotutil.Shape(i)
		p.Add(l, s)
		p.Legend.Add(c.name, l, s)
	}
	return p, nil
}

func compare(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// bars plots each series' median as a bar with every value on it as a
// point, so that a bar of two runs does not look like a bar of twenty.
func bars(title, y string, ss []series) (*plot.Plot, error) {
	p := newPlot(title, "", y)
	p.Y.Min = 0
	var names []string
	for i, s := range ss {
		names = append(names, s.name)
		if len(s.values) == 0 {
			continue
		}
		b, err := plotter.NewBarChart(plotter.Values{median(s.values)}, vg.Points(36))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		b.XMin = float64(i)
		b.Color = lighter(plotutil.Color(i))
		b.LineStyle.Color = plotutil.Color(i)
		p.Add(b)
		pts := make(plotter.XYs, len(s.values))
		for j, v := range s.values {
			// Spread a side's points a little so equal values stay apart.
			pts[j] = plotter.XY{X: float64(i) + spread(j, len(s.values)), Y: v}
		}
		sc, err := plotter.NewScatter(pts)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		sc.Color = color.Black
		sc.Shape = draw.CircleGlyph{}
		sc.Radius = vg.Points(2.5)
		p.Add(sc)
	}
	p.NominalX(names...)
	p.X.Min, p.X.Max = -0.6, float64(len(ss))-0.4
	return p, nil
}

// boxes plots a box (quartiles, whiskers, outliers) for each series, with
// every value beside it as a point.
func boxes(title, y string, ss []series) (*plot.Plot, error) {
	p := newPlot(title, "", y)
	var names []string
	for i, s := range ss {
		names = append(names, s.name)
		if len(s.values) == 0 {
			continue
		}
		b, err := plotter.NewBoxPlot(vg.Points(24), float64(i), plotter.Values(s.values))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		b.FillColor = lighter(plotutil.Color(i))
		p.Add(b)
		pts := make(plotter.XYs, len(s.values))
		for j, v := range s.values {
			pts[j] = plotter.XY{X: float64(i) + 0.3 + spread(j, len(s.values))/2, Y: v}
		}
		sc, err := plotter.NewScatter(pts)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		sc.Color = plotutil.Color(i)
		sc.Radius = vg.Points(1.5)
		p.Add(sc)
	}
	p.NominalX(names...)
	p.X.Min, p.X.Max = -0.6, float64(len(ss))-0.4
	return p, nil
}

// spread places point j of n within ±0.15 of its group's centre.
func spread(j, n int) float64 {
	if n < 2 {
		return 0
	}
	return -0.15 + 0.3*float64(j)/float64(n-1)
}

// lighter is c halfway to white: a fill that the points on it stand out from.
func lighter(c color.Color) color.Color {
	r, g, b, _ := c.RGBA()
	mix := func(v uint32) uint8 { return uint8(math.Round((float64(v>>8) + 255) / 2)) }
	return color.RGBA{R: mix(r), G: mix(g), B: mix(b), A: 255}
}
