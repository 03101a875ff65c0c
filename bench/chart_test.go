package main

import (
	"strings"
	"testing"
)

func TestTicksEncloseTheData(t *testing.T) {
	for _, tc := range []struct{ lo, hi float64 }{{0, 17695}, {0, 1}, {3, 8}, {0.5, 11.5}, {2500, 16384}} {
		ticks := niceTicks(tc.lo, tc.hi, 6)
		if ticks[0] > tc.lo || ticks[len(ticks)-1] < tc.hi {
			t.Errorf("ticks %v do not enclose [%v, %v]: the data would be drawn off the chart", ticks, tc.lo, tc.hi)
		}
	}
	for _, v := range niceTicks(0, 0.75, 4) {
		if l := fmtTick(v); len(l) > 4 {
			t.Errorf("tick %v is labelled %q: float noise in the label", v, l)
		}
	}
	if got := logTicks(0.1, 1000); len(got) != 13 || got[0] != 0.1 || got[12] != 1000 {
		t.Errorf("logTicks(0.1, 1000) = %v, want 1-2-5 steps from 0.1 to 1000", got)
	}
}

func TestChartIsWellFormedSVG(t *testing.T) {
	c := &lineChart{title: "a < b & c", xLabel: "x", yLabel: "y", intX: true,
		series: []series{{name: "owner", dots: true, pts: [][2]float64{{3, 100}, {5, 180}, {8, 250}}}}}
	svg := c.svg()
	if !strings.HasPrefix(svg, "<svg ") || !strings.HasSuffix(svg, "</svg>\n") {
		t.Fatal("not an svg document")
	}
	if !strings.Contains(svg, "a &lt; b &amp; c") {
		t.Error("title not escaped")
	}
	if strings.Contains(svg, ">3.5<") {
		t.Error("a tick between whole node counts")
	}
	if n := strings.Count(svg, "<circle"); n != 3 {
		t.Errorf("%d points drawn, want 3", n)
	}
}
