package main

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

var (
	swarmColor = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff} // blue
	otherColor = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff} // orange
)

// writeCharts draws every chart there is data for.
func writeCharts(dir string, r *Results) error {
	byKey := map[string]Comparison{}
	for _, pr := range r.Parts {
		for _, c := range pr.Comparisons {
			byKey[c.Key] = c
		}
	}
	// pick takes "key=short label" pairs and returns those with data.
	pick := func(pairs ...string) (labels []string, cs []Comparison) {
		for _, kv := range pairs {
			k, label, _ := strings.Cut(kv, "=")
			if c, ok := byKey[k]; ok {
				labels = append(labels, label)
				cs = append(cs, c)
			}
		}
		return labels, cs
	}

	if pr := r.Parts["dht"]; pr != nil {
		var ms, hops []Comparison
		var sizes []float64
		for _, c := range pr.Comparisons {
			var n int
			if _, err := fmt.Sscanf(c.Key, "lookup-ms-%d", &n); err == nil {
				ms = append(ms, c)
				sizes = append(sizes, float64(n))
			}
			if strings.HasPrefix(c.Key, "lookup-hops-") {
				hops = append(hops, c)
			}
		}
		if len(ms) > 0 {
			if err := lineChart(filepath.Join(dir, "dht_lookup.png"), "DHT lookup time vs network size (median, min–max)", "network size (nodes)", "lookup time (ms)", sizes, ms); err != nil {
				return err
			}
			if err := lineChart(filepath.Join(dir, "dht_hops.png"), "DHT lookup hops vs network size (median, min–max)", "network size (nodes)", "hops", sizes, hops); err != nil {
				return err
			}
		}
	}
	if labels, cs := pick("db-writes-64=writes, 64 B", "db-writes-1024=writes, 1 KiB", "db-reads-64=reads, 64 B", "db-reads-1024=reads, 1 KiB"); len(cs) > 0 {
		if err := dotChart(filepath.Join(dir, "db_rates.png"), "Verified writes/s (durable for swarmdb) and reads/s — higher is better", "operations per second (log)", labels, cs, true); err != nil {
			return err
		}
	}
	if labels, cs := pick("loop-connect-ms=join to connection", "loop-wall-ms=process start to connection"); len(cs) > 0 {
		if err := dotChart(filepath.Join(dir, "loopback_connect.png"), "Loopback: time to first connection — lower is better", "ms", labels, cs, false); err != nil {
			return err
		}
	}
	if labels, cs := pick("loop-mibps=one stream"); len(cs) > 0 {
		if err := dotChart(filepath.Join(dir, "loopback_throughput.png"), "Loopback: one-stream throughput — higher is better", "MiB/s", labels, cs, false); err != nil {
			return err
		}
	}
	if labels, cs := pick("res-dht-rss=idle DHT node", "res-idle-rss=idle pipe server"); len(cs) > 0 {
		if err := dotChart(filepath.Join(dir, "resources_rss.png"), "Idle process memory (RSS) — lower is better", "MiB", labels, cs, false); err != nil {
			return err
		}
	}
	if labels, cs := pick("nat-loss-0=no loss", "nat-loss-0.005=0.5 % loss", "nat-loss-0.02=2 % loss"); len(cs) > 0 {
		if err := dotChart(filepath.Join(dir, "nat_loss.png"), "NAT lab: one-stream throughput through the port-restricted pair — higher is better", "MiB/s", labels, cs, false); err != nil {
			return err
		}
	}
	if pr := r.Parts["nat"]; pr != nil {
		var conn, succ []Comparison
		var cl, sl []string
		for _, c := range pr.Comparisons {
			switch {
			case c.Key == "nat-ms-all":
			case strings.HasPrefix(c.Key, "nat-ms-"):
				conn = append(conn, c)
				cl = append(cl, strings.TrimPrefix(c.Key, "nat-ms-"))
			case strings.HasPrefix(c.Key, "nat-ok-"):
				succ = append(succ, c)
				sl = append(sl, strings.TrimPrefix(c.Key, "nat-ok-"))
			}
		}
		if len(conn) > 0 {
			if err := dotChart(filepath.Join(dir, "nat_connect.png"), "NAT lab: connect time per NAT pair (successful runs) — lower is better", "ms (log)", cl, conn, true); err != nil {
				return err
			}
		}
		if len(succ) > 0 {
			if err := dotChart(filepath.Join(dir, "nat_success.png"), "NAT lab: connection success rate per NAT pair — higher is better", "% of runs", sl, succ, false); err != nil {
				return err
			}
		}
	}
	return nil
}

// medianErrs is one side's medians with min/max whiskers, at given x.
type medianErrs struct {
	plotter.XYs
	plotter.YErrors
}

func sideSeries(xs []float64, ss []Sample, logY bool) medianErrs {
	var m medianErrs
	for i, s := range ss {
		if !s.OK() {
			continue
		}
		med := s.Median()
		if logY && med <= 0 {
			continue
		}
		m.XYs = append(m.XYs, plotter.XY{X: xs[i], Y: med})
		m.YErrors = append(m.YErrors, struct{ Low, High float64 }{med - s.Min(), s.Max() - med})
	}
	return m
}

// addSide draws one side as points (and a line when joined) with whiskers.
func addSide(p *plot.Plot, name string, col color.Color, m medianErrs, joined bool, shape draw.GlyphDrawer) error {
	if len(m.XYs) == 0 {
		return nil
	}
	sc, err := plotter.NewScatter(m.XYs)
	if err != nil {
		return err
	}
	sc.GlyphStyle.Color = col
	sc.GlyphStyle.Radius = vg.Points(3.5)
	sc.GlyphStyle.Shape = shape
	eb, err := plotter.NewYErrorBars(m)
	if err != nil {
		return err
	}
	eb.LineStyle.Color = col
	eb.LineStyle.Width = vg.Points(1.2)
	p.Add(sc, eb)
	if joined && len(m.XYs) > 1 {
		l, err := plotter.NewLine(m.XYs)
		if err != nil {
			return err
		}
		l.LineStyle.Color = col
		l.LineStyle.Width = vg.Points(1.5)
		p.Add(l)
	}
	p.Legend.Add(name, sc)
	return nil
}

func naTitle(title string, cs []Comparison) string {
	for _, c := range cs {
		if !c.Swarm.OK() && c.Swarm.NA != "" {
			return title + "\n(swarmdb side not available yet: " + strings.TrimPrefix(c.Swarm.NA, "not available: ") + ")"
		}
	}
	return title
}

// lineChart plots both sides' medians against xs (log x axis).
func lineChart(file, title, xlabel, ylabel string, xs []float64, cs []Comparison) error {
	p := plot.New()
	p.Title.Text = naTitle(title, cs)
	p.X.Label.Text = xlabel
	p.Y.Label.Text = ylabel
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = fixedTicks(xs)
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	var sw, ot []Sample
	for _, c := range cs {
		sw = append(sw, c.Swarm)
		ot = append(ot, c.Them)
	}
	if err := addSide(p, "swarmdb", swarmColor, sideSeries(xs, sw, false), true, draw.CircleGlyph{}); err != nil {
		return err
	}
	if err := addSide(p, otherNames(cs), otherColor, sideSeries(xs, ot, false), true, draw.SquareGlyph{}); err != nil {
		return err
	}
	p.Y.Min = 0
	return p.Save(16*vg.Centimeter, 10*vg.Centimeter, file)
}

// dotChart plots one group per comparison, swarmdb left and the other side
// right, medians with min–max whiskers.
func dotChart(file, title, ylabel string, labels []string, cs []Comparison, logY bool) error {
	p := plot.New()
	p.Title.Text = naTitle(title, cs)
	p.Y.Label.Text = ylabel
	p.Add(plotter.NewGrid())
	if logY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, c := range cs {
			for _, s := range []Sample{c.Swarm, c.Them} {
				if s.OK() && s.Min() > 0 {
					lo, hi = math.Min(lo, s.Min()), math.Max(hi, s.Max())
				}
			}
		}
		if lo < hi {
			p.Y.Min, p.Y.Max = lo/2, hi*2
		}
	}
	n := len(cs)
	xl, xr := make([]float64, n), make([]float64, n)
	var sw, ot []Sample
	for i, c := range cs {
		xl[i], xr[i] = float64(i)-0.15, float64(i)+0.15
		sw = append(sw, c.Swarm)
		ot = append(ot, c.Them)
	}
	if err := addSide(p, "swarmdb", swarmColor, sideSeries(xl, sw, logY), false, draw.CircleGlyph{}); err != nil {
		return err
	}
	if err := addSide(p, otherNames(cs), otherColor, sideSeries(xr, ot, logY), false, draw.SquareGlyph{}); err != nil {
		return err
	}
	p.NominalX(labels...)
	p.X.Min, p.X.Max = -0.6, float64(n)-0.4
	if !logY {
		p.Y.Min = 0
		hi := 0.0
		for _, c := range cs {
			for _, s := range []Sample{c.Swarm, c.Them} {
				if s.OK() {
					hi = math.Max(hi, s.Max())
				}
			}
		}
		p.Y.Max = hi * 1.3 // room for the legend above the points
	}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.XOffs = vg.Points(8)
	width, height := vg.Length(max(14, 3.2*float64(n)))*vg.Centimeter, 10*vg.Centimeter
	if n > 6 {
		width, height = vg.Length(max(14, 1.2*float64(n)))*vg.Centimeter, 13*vg.Centimeter
		p.X.Tick.Label.Rotation = 0.8
		p.X.Tick.Label.XAlign = draw.XRight
		p.X.Tick.Label.YAlign = draw.YCenter
	}
	return p.Save(width, height, file)
}

// fixedTicks labels exactly the given x values.
type fixedTicks []float64

func (f fixedTicks) Ticks(min, max float64) []plot.Tick {
	var t []plot.Tick
	for _, x := range f {
		t = append(t, plot.Tick{Value: x, Label: fmt.Sprint(x)})
	}
	return t
}

// otherNames joins the distinct names of the other side ("HyperDHT /
// Hyperswarm").
func otherNames(cs []Comparison) string {
	var names []string
	for _, c := range cs {
		if !slices.Contains(names, c.Other) {
			names = append(names, c.Other)
		}
	}
	return strings.Join(names, " / ")
}
