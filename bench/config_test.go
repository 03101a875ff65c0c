package main

import (
	"io"
	"math"
	"strings"
	"testing"
)

func TestMixTakesAFractionOrThreeWeights(t *testing.T) {
	for _, tc := range []struct {
		arg             string
		direct, group   float64
		rooms, groups   int
		wantErr, stored bool
	}{
		{arg: "0.9", direct: 0.9, rooms: 20},
		{arg: "1", direct: 1},
		{arg: "0:0:1", group: 1, groups: 20, stored: true},
		{arg: "2:1:1", direct: 0.5, group: 0.25, rooms: 20, groups: 20, stored: true},
		{arg: "0:0:1", wantErr: true}, // no store
		{arg: "1.5", wantErr: true},
		{arg: "0:1", wantErr: true},
		{arg: "0:0:0", wantErr: true},
		{arg: "a:b:c", wantErr: true},
		{arg: "-1:1:1", wantErr: true},
	} {
		args := []string{"--mix", tc.arg}
		if tc.stored {
			args = append(args, "--store", "postgres://x")
		}
		c, err := parseFlags(args, io.Discard)
		if tc.wantErr {
			if err == nil {
				t.Errorf("--mix %s (store %v): no error", tc.arg, tc.stored)
			}
			continue
		}
		if err != nil {
			t.Errorf("--mix %s: %v", tc.arg, err)
			continue
		}
		if math.Abs(c.Mix-tc.direct) > 1e-9 || math.Abs(c.GroupMix-tc.group) > 1e-9 || c.Rooms != tc.rooms || c.Groups != tc.groups {
			t.Errorf("--mix %s: direct %v, groups %v, %d rooms, %d groups; want %v, %v, %d, %d",
				tc.arg, c.Mix, c.GroupMix, c.Rooms, c.Groups, tc.direct, tc.group, tc.rooms, tc.groups)
		}
	}
}

// TestSoakRefusesGroupMessages: the soak's users send direct and room
// messages only, so a --mix with groups would be soaked as something else.
func TestSoakRefusesGroupMessages(t *testing.T) {
	if _, err := parseFlags([]string{"--soak", "1m", "--mix", "0:0:1", "--store", "postgres://x"}, io.Discard); err == nil {
		t.Fatal("--soak with --mix 0:0:1: no error, and the soak would send direct messages instead")
	}
	if _, err := parseFlags([]string{"--soak", "1m", "--mix", "0.5"}, io.Discard); err != nil {
		t.Fatalf("--soak with --mix 0.5: %v", err)
	}
}

// TestNodeEnvTakesNameValuePairs: --node-env reaches the nodes as it was
// written, and a word that is not NAME=VALUE is refused rather than passed
// on to be ignored.
func TestNodeEnvTakesNameValuePairs(t *testing.T) {
	c, err := parseFlags([]string{"--node-env", "GOMAXPROCS=1  GOGC=400"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.NodeEnv, " "); got != "GOMAXPROCS=1 GOGC=400" {
		t.Errorf("--node-env gave the nodes %q, want GOMAXPROCS=1 GOGC=400", got)
	}
	for _, bad := range []string{"GOMAXPROCS", "=1", "GOGC=400 x"} {
		if _, err := parseFlags([]string{"--node-env", bad}, io.Discard); err == nil {
			t.Errorf("--node-env %q: no error", bad)
		}
	}
	if _, err := parseFlags([]string{"--node-env", "GOGC=400", "--url", "ws://127.0.0.1:1/ws"}, io.Discard); err == nil {
		t.Error("--node-env with --url: no error, and no node would get it")
	}
}
