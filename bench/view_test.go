package main

import (
	"testing"
	"time"
)

func TestViewSearchCountsTheReplayOfABusyStep(t *testing.T) {
	steps := []ViewStep{
		{Rate: 1000, Pass: true},
		{Rate: 2000, Limit: "box"}, // the box was busy: played again
		{Rate: 2000, Pass: true},
		{Rate: 4000, Limit: "node"},
	}
	if pass, fail := searchBounds(steps); pass != 2000 || fail != 4000 {
		t.Errorf("bounds %v, %v; want 2000 (its replay passed), 4000", pass, fail)
	}
}

func TestViewStepBlamesTheNodeOnlyForWhatIsItsOwn(t *testing.T) {
	cfg := &viewConfig{MaxP99: 50 * time.Millisecond, MaxCores: 0.95}
	sec := time.Second
	cases := []struct {
		name string
		r    loadResult
		want string
	}{
		{"quiet box, slow node", loadResult{ack: Latency{P99: 80}, box: sec / 2}, "node"},
		{"full core", loadResult{nodeCPU: sec, box: 2 * sec}, "node"},
		{"full box", loadResult{ack: Latency{P99: 80}, nodeCPU: sec / 2, box: 19 * sec / 10}, "box"},
		{"late generator", loadResult{ack: Latency{P99: 80}, lag: Latency{P99: 40}, box: sec}, "generator"},
		{"starved node", loadResult{ack: Latency{P99: 80}, nodeCPU: sec / 2, nodeWait: sec, box: sec}, "box"},
		{"passes", loadResult{ack: Latency{P99: 10}, box: 2 * sec}, ""},
	}
	for _, c := range cases {
		c.r.window = sec
		if got := viewStep(cfg, c.r, 1000, 2); got.Limit != c.want || got.Pass != (c.want == "") {
			t.Errorf("%s: limit %q (pass %v), want %q", c.name, got.Limit, got.Pass, c.want)
		}
	}
}
