package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Charts are plain hand-written SVG: a line chart with axes, ticks and a
// legend is all the README needs, and no plotting library is worth a
// dependency for it.

// series is one line of a chart.
type series struct {
	name  string
	color string
	pts   [][2]float64 // x, y; y <= 0 is skipped on a log scale
	dots  bool
	dash  bool
}

type lineChart struct {
	title, subtitle string
	xLabel, yLabel  string
	logY            bool
	intX            bool       // x values are counts (nodes): whole-number ticks
	shade           [2]float64 // x range drawn shaded (the warm-up); none when equal
	shadeLabel      string
	series          []series
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"}

const (
	chartW, chartH                     = 760, 420
	marginL, marginR, marginT, marginB = 72, 24, 44, 56
)

var xmlEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;")

// niceTicks returns about n round tick values covering [lo, hi].
func niceTicks(lo, hi float64, n int) []float64 {
	if hi <= lo {
		hi = lo + 1
	}
	raw := (hi - lo) / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	return ticksBy(lo, hi, step)
}

// ticksBy returns the multiples of step from the last one at or below lo to
// the first one at or above hi, so that the ticks enclose the data.
func ticksBy(lo, hi, step float64) []float64 {
	var out []float64
	for v := math.Floor(lo/step+1e-9) * step; ; v += step {
		v = math.Round(v/step) * step
		out = append(out, v)
		if v >= hi-step*1e-9 {
			return out
		}
	}
}

// logTicks returns 1-2-5 ticks per decade over [lo, hi], lo > 0.
func logTicks(lo, hi float64) []float64 {
	var out []float64
	for d := math.Floor(math.Log10(lo)); d <= math.Ceil(math.Log10(hi)); d++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, d)
			if v >= lo*0.999 && v <= hi*1.001 {
				out = append(out, v)
			}
		}
	}
	return out
}

func fmtTick(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 1000 && math.Mod(v, 1000) == 0:
		return fmt.Sprintf("%gk", v/1000)
	default:
		// 6 digits hide the float noise of tick arithmetic (0.6000000000000001).
		return fmt.Sprintf("%.6g", v)
	}
}

// svg renders the chart.
func (c *lineChart) svg() string {
	xmin, xmax := math.Inf(1), math.Inf(-1)
	ymin, ymax := math.Inf(1), math.Inf(-1)
	for _, s := range c.series {
		for _, p := range s.pts {
			if c.logY && p[1] <= 0 {
				continue
			}
			xmin, xmax = math.Min(xmin, p[0]), math.Max(xmax, p[0])
			ymin, ymax = math.Min(ymin, p[1]), math.Max(ymax, p[1])
		}
	}
	if math.IsInf(xmin, 0) {
		xmin, xmax, ymin, ymax = 0, 1, 0, 1
	}
	if c.shade[1] > c.shade[0] {
		xmin = math.Min(xmin, c.shade[0])
	}
	if xmax == xmin {
		xmin, xmax = xmin-1, xmax+1
	}
	var yticks []float64
	if c.logY {
		ymin = math.Pow(10, math.Floor(math.Log10(ymin)))
		ymax = math.Pow(10, math.Ceil(math.Log10(ymax)))
		if ymax == ymin {
			ymax *= 10
		}
		yticks = logTicks(ymin, ymax)
	} else {
		ymin = 0
		yticks = niceTicks(0, ymax*1.08, 6)
		ymax = yticks[len(yticks)-1]
	}
	xticks := niceTicks(xmin, xmax, 8)
	if c.intX && len(xticks) > 1 && xticks[1]-xticks[0] < 1 {
		xticks = ticksBy(xmin, xmax, 1)
	}
	pw, ph := float64(chartW-marginL-marginR), float64(chartH-marginT-marginB)
	px := func(x float64) float64 { return float64(marginL) + (x-xmin)/(xmax-xmin)*pw }
	py := func(y float64) float64 {
		f := (y - ymin) / (ymax - ymin)
		if c.logY {
			f = (math.Log10(y) - math.Log10(ymin)) / (math.Log10(ymax) - math.Log10(ymin))
		}
		return float64(marginT) + (1-f)*ph
	}

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", chartW, chartH, chartW, chartH)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="15" font-weight="bold">%s</text>`+"\n", marginL, xmlEscaper.Replace(c.title))
	if c.subtitle != "" {
		fmt.Fprintf(&b, `<text x="%d" y="36" fill="#555">%s</text>`+"\n", marginL, xmlEscaper.Replace(c.subtitle))
	}
	if c.shade[1] > c.shade[0] {
		x0, x1 := px(c.shade[0]), px(math.Min(c.shade[1], xmax))
		fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%.1f" fill="#eeeeee"/>`+"\n", x0, marginT, x1-x0, ph)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#888">%s</text>`+"\n", x0+4, float64(marginT)+ph-6, xmlEscaper.Replace(c.shadeLabel))
	}
	for _, t := range yticks {
		y := py(t)
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", marginL, chartW-marginR, y, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", marginL-6, y+4, fmtTick(t))
	}
	for _, t := range xticks {
		if t < xmin-1e-9 || t > xmax+1e-9 {
			continue
		}
		x := px(t)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#999"/>`+"\n", x, x, chartH-marginB, chartH-marginB+5)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, chartH-marginB+19, fmtTick(t))
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="#333"/>`+"\n", marginL, marginT, pw, ph)
	fmt.Fprintf(&b, `<text x="%.0f" y="%d" text-anchor="middle">%s</text>`+"\n", float64(marginL)+pw/2, chartH-12, xmlEscaper.Replace(c.xLabel))
	fmt.Fprintf(&b, `<text transform="translate(16 %.0f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", float64(marginT)+ph/2, xmlEscaper.Replace(c.yLabel))
	for i, s := range c.series {
		color := s.color
		if color == "" {
			color = palette[i%len(palette)]
		}
		var path []string
		for _, p := range s.pts {
			if c.logY && p[1] <= 0 {
				continue
			}
			path = append(path, fmt.Sprintf("%.1f,%.1f", px(p[0]), py(p[1])))
		}
		dash := ""
		if s.dash {
			dash = ` stroke-dasharray="6 4"`
		}
		if len(path) > 1 {
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n", color, dash, strings.Join(path, " "))
		}
		if s.dots || len(path) == 1 {
			for _, p := range path {
				xy := strings.Split(p, ",")
				fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="3.5" fill="%s"/>`+"\n", xy[0], xy[1], color)
			}
		}
		ly := marginT + 16 + 18*i
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`+"\n", marginL+12, marginL+36, ly-4, ly-4, color, dash)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", marginL+42, ly, xmlEscaper.Replace(s.name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// writeSVG writes c into dir as name and returns its path.
func writeSVG(dir, name string, c *lineChart) (string, error) {
	p := filepath.Join(dir, name)
	return p, os.WriteFile(p, []byte(c.svg()), 0o644)
}

// writeCharts writes the charts the report supports into dir and returns
// their paths: latency over time per case, p99 against offered rate for
// --max, and throughput against cluster size for a sweep.
func writeCharts(dir string, r *Report) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var files []string
	write := func(name string, c *lineChart) error {
		p, err := writeSVG(dir, name, c)
		if err == nil {
			files = append(files, p)
		}
		return err
	}
	warm := r.Workload.Warmup
	for _, cs := range r.Cases {
		run := cs.mainRun()
		if run == nil || len(run.Timeline) == 0 {
			continue
		}
		var p50, p99, mx series
		p50.name, p99.name, mx.name = "p50", "p99", "max"
		for _, tp := range run.Timeline {
			x := float64(tp.Second) + 0.5
			p50.pts = append(p50.pts, [2]float64{x, tp.P50})
			p99.pts = append(p99.pts, [2]float64{x, tp.P99})
			mx.pts = append(mx.pts, [2]float64{x, tp.Max})
		}
		mx.dash = true
		c := &lineChart{
			title:  fmt.Sprintf("%s: send-to-delivery latency per second at %.0f msg/s", cs.Label, run.OfferedRate),
			xLabel: "seconds (by scheduled send time)", yLabel: "latency, ms (log)", logY: true,
			shade: [2]float64{0, warm}, shadeLabel: "warm-up",
			series: []series{p50, p99, mx},
		}
		if err := write("latency-"+cs.Label+".svg", c); err != nil {
			return files, err
		}
	}
	// With --compare: p99 over time of both routings, size by size.
	for _, cmp := range r.Compare {
		c := &lineChart{
			title:  fmt.Sprintf("owner vs broadcast, %d nodes: p99 latency per second", cmp.Nodes),
			xLabel: "seconds (by scheduled send time)", yLabel: "p99 latency, ms (log)", logY: true,
			shade: [2]float64{0, warm}, shadeLabel: "warm-up",
		}
		for _, cs := range r.Cases {
			if cs.Nodes != cmp.Nodes || cs.mainRun() == nil {
				continue
			}
			s := series{name: fmt.Sprintf("%s at %.0f msg/s", cs.Routing, cs.mainRun().OfferedRate)}
			for _, tp := range cs.mainRun().Timeline {
				s.pts = append(s.pts, [2]float64{float64(tp.Second) + 0.5, tp.P99})
			}
			c.series = append(c.series, s)
		}
		if err := write(fmt.Sprintf("latency-compare-n%d.svg", cmp.Nodes), c); err != nil {
			return files, err
		}
	}
	if len(r.Cases) > 0 && r.Cases[0].Max != nil {
		c := &lineChart{title: "p99 latency against offered rate (--max steps)", xLabel: "offered msg/s", yLabel: "p99 latency, ms (log)", logY: true}
		lo, hi := math.Inf(1), 0.0
		for _, cs := range r.Cases {
			for _, run := range cs.Runs {
				lo, hi = math.Min(lo, run.OfferedRate), math.Max(hi, run.OfferedRate)
			}
		}
		bound := r.Cases[0].Max.P99Bound
		c.series = append(c.series, series{name: fmt.Sprintf("bound %.0f ms", bound), color: "#999", dash: true,
			pts: [][2]float64{{lo, bound}, {hi, bound}}})
		for _, cs := range r.Cases {
			s := series{name: cs.Label, dots: true}
			for _, run := range cs.Runs {
				s.pts = append(s.pts, [2]float64{run.OfferedRate, run.Latency.P99})
			}
			sort.Slice(s.pts, func(i, j int) bool { return s.pts[i][0] < s.pts[j][0] })
			c.series = append(c.series, s)
		}
		if err := write("p99-vs-rate.svg", c); err != nil {
			return files, err
		}
	}
	if rows := sweepRows(r); len(rows) > 0 {
		title, sub, yl := "delivered messages per second against cluster size",
			fmt.Sprintf("at %.0f chat msgs/s offered", r.Workload.Rate), "deliveries/s"
		if r.Cases[0].Max != nil {
			title, yl = "highest sustained rate against cluster size", "chat msgs/s"
			sub = fmt.Sprintf("p99 send-to-delivery ≤ %.0f ms and nothing lost", r.Cases[0].Max.P99Bound)
			for _, row := range rows {
				if row.open {
					sub += "; some searches found no limit (lower bounds)"
					break
				}
			}
		}
		c := &lineChart{title: title, subtitle: sub, xLabel: "nodes", yLabel: yl, intX: true}
		byRouting := map[string]*series{}
		var order []string
		for _, row := range rows {
			s := byRouting[row.routing]
			if s == nil {
				s = &series{name: row.routing, dots: true}
				byRouting[row.routing] = s
				order = append(order, row.routing)
			}
			s.pts = append(s.pts, [2]float64{float64(row.nodes), row.rate})
		}
		for _, k := range order {
			c.series = append(c.series, *byRouting[k])
		}
		if err := write("throughput-vs-size.svg", c); err != nil {
			return files, err
		}
		// The cost side of the claim: node-to-node messages and node CPU per
		// chat message, against cluster size.
		for _, fig := range []struct {
			file, title, yLabel string
			value               func(*ClusterStats) float64
		}{
			{"peer-per-msg-vs-size.svg", "node-to-node messages per chat message", "node-to-node msgs / chat msg",
				func(c *ClusterStats) float64 { return c.PeerPerChat }},
			{"cpu-per-1k-vs-size.svg", "node CPU per 1,000 chat messages (all nodes)", "CPU seconds / 1,000 msgs",
				func(c *ClusterStats) float64 { return c.CPUPer1k }},
		} {
			c := &lineChart{title: fig.title + " against cluster size", xLabel: "nodes", yLabel: fig.yLabel, intX: true,
				subtitle: fmt.Sprintf("at %.0f chat msgs/s offered, %.0f%% direct", r.Workload.Rate, r.Workload.Mix*100)}
			if r.Cases[0].Max != nil {
				c.subtitle = "at each case's highest sustained rate"
			}
			byRouting := map[string]*series{}
			var order []string
			for _, cs := range r.Cases {
				run := cs.mainRun()
				if run == nil || run.Cluster == nil {
					continue
				}
				s := byRouting[cs.Routing]
				if s == nil {
					s = &series{name: cs.Routing, dots: true}
					byRouting[cs.Routing] = s
					order = append(order, cs.Routing)
				}
				s.pts = append(s.pts, [2]float64{float64(cs.Nodes), fig.value(run.Cluster)})
			}
			for _, k := range order {
				c.series = append(c.series, *byRouting[k])
			}
			if err := write(fig.file, c); err != nil {
				return files, err
			}
		}
	}
	return files, nil
}
