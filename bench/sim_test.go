package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// TestSimReportsEverySizeWithChurnAndCharts: `bench sim --json --chart`
// reports each size asked for, churns only those of --churn-sizes, and
// writes its three charts.
func TestSimReportsEverySizeWithChurnAndCharts(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	args := []string{"--sizes", "3,4", "--churn", "2", "--churn-every", "50ms", "--churn-sizes", "4", "--chart", dir, "--json"}
	if code := runSim(args, &out, &errb); code != 0 {
		t.Fatalf("bench sim %s: exit %d: %s", strings.Join(args, " "), code, errb.String())
	}
	var rep SimReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("the report is not JSON: %v\n%s", err, out.String())
	}
	if len(rep.Sizes) != 2 || rep.Sizes[0].Nodes != 3 || rep.Sizes[1].Nodes != 4 {
		t.Fatalf("sizes %+v, want 3 and 4", rep.Sizes)
	}
	if rep.Sizes[0].Churn != nil {
		t.Errorf("3 nodes churned, but --churn-sizes is 4")
	}
	if ch := rep.Sizes[1].Churn; ch == nil || ch.Sends == 0 || ch.Changes != 2 {
		t.Errorf("churn at 4 nodes: %+v, want 2 changes with sends", ch)
	}
	if sp := rep.Sizes[1].JoinSpread; sp.Joins != spreadJoins || sp.Min > sp.Mean || sp.Mean > sp.Max {
		t.Errorf("join spread %+v", sp)
	}
	if len(rep.Charts) != 3 {
		t.Fatalf("charts %q, want 3", rep.Charts)
	}
	for _, p := range rep.Charts {
		if b, err := os.ReadFile(p); err != nil || !bytes.HasPrefix(b, []byte("<svg")) {
			t.Errorf("chart %s: %v, %.20q", p, err, b)
		}
	}
}

func TestSimRefusesChurnSizesItDoesNotRun(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runSim([]string{"--sizes", "3", "--churn", "2", "--churn-sizes", "8"}, &out, &errb); code != 2 {
		t.Fatalf("exit %d, want 2 (%s)", code, errb.String())
	}
	if !strings.Contains(errb.String(), "--churn-sizes") {
		t.Errorf("error %q does not name --churn-sizes", errb.String())
	}
}
