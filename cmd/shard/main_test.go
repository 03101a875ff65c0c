package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/internal/freeport"
	"github.com/shardchat/shard/internal/testcluster"
	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/router"
)

func TestEnvironmentFillsFlagsAndCommandLineWins(t *testing.T) {
	env := map[string]string{
		"SHARD_HTTP":            "127.0.0.9:9000",
		"SHARD_RATE":            "50",
		"SHARD_ROUTING":         "broadcast",
		"SHARD_JOIN":            "127.0.0.2:7946, 127.0.0.3:7946",
		"SHARD_MAX_FRAME":       "1024",
		"SHARD_LOG_LEVEL":       "debug",
		"SHARD_SEND_QUEUE":      "64",
		"SHARD_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cfg, level, err := parseFlags([]string{"--rate", "75"}, lookup, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP != "127.0.0.9:9000" || cfg.Session.MaxFrame != 1024 || cfg.Session.SendQueue != 64 || cfg.Routing != router.Broadcast {
		t.Fatalf("environment not applied: %+v", cfg)
	}
	if cfg.Session.Rate != 75 {
		t.Fatalf("rate %d, want the command line's 75 over the environment's 50", cfg.Session.Rate)
	}
	if len(cfg.Join) != 2 || cfg.Join[1] != "127.0.0.3:7946" || level.String() != "DEBUG" {
		t.Fatalf("join %q level %s", cfg.Join, level)
	}
	if len(cfg.TrustedProxies) != 2 || cfg.TrustedProxies[1] != "192.0.2.1" {
		t.Fatalf("trusted proxies %q", cfg.TrustedProxies)
	}
}

func TestBadFlagsExitWithTwo(t *testing.T) {
	for _, args := range [][]string{
		{"--rate", "many"},
		{"--routing", "gossip"},
		{"--no-such-flag"},
		{"--log-level", "loud"},
		{"--send-queue", "0"},
		{"--public-url", "chat.example"},
		{"--private-api"},
		{"--trusted-proxies", "10.0.0.0/8,nginx"},
		{"--max-conns-per-ip", "-1"},
		{"stray-argument"},
	} {
		var stderr bytes.Buffer
		if code := run(args, &stderr); code != 2 {
			t.Errorf("shard %s exited %d, want 2", strings.Join(args, " "), code)
		}
		if stderr.Len() == 0 {
			t.Errorf("shard %s printed no message", strings.Join(args, " "))
		}
	}
}

func TestAddressInUseExitsWithOneAndSaysWhich(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var stderr bytes.Buffer
	code := run([]string{"--http", ln.Addr().String(), "--gossip", "127.0.0.1:0", "--link", "127.0.0.1:0"}, &stderr)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), ln.Addr().String()) || !strings.Contains(stderr.String(), "in use") {
		t.Fatalf("message %q does not name the address in use", stderr.String())
	}
}

func TestUnreachableJoinExitsWithOne(t *testing.T) {
	port, err := freeport.TCPAndUDP("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	dead := fmt.Sprintf("127.0.0.1:%d", port)
	var stderr bytes.Buffer
	code := run([]string{"--http", "127.0.0.1:0", "--gossip", "127.0.0.1:0", "--link", "127.0.0.1:0",
		"--join", dead, "--join-timeout", "1s"}, &stderr)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), dead) {
		t.Fatalf("message %q does not name the seed %s", stderr.String(), dead)
	}
}

// TestThreeProcessesFormOneCluster starts the binary three times, as the
// README shows, on three loopback addresses, and chats across them.
func TestThreeProcessesFormOneCluster(t *testing.T) {
	procs := testcluster.StartProcesses(t, 3, "--drain-timeout", "5s")
	for _, p := range procs {
		wait.For(t, 10*time.Second, 50*time.Millisecond, func() error {
			v, err := p.Cluster()
			if err != nil {
				return err
			}
			if v.Ring.Members != 3 || len(v.Members) != 3 {
				return fmt.Errorf("%s sees %d members and a ring of %d, want 3", p.Name, len(v.Members), v.Ring.Members)
			}
			return nil
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	alice, err := client.Dial(ctx, client.Options{URL: "ws://" + procs[0].HTTP + "/ws", User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	bob, err := client.Dial(ctx, client.Options{URL: "ws://" + procs[2].HTTP + "/ws", User: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	if bob.Welcome().Node != "n3" {
		t.Fatalf("bob's welcome names %q, want n3", bob.Welcome().Node)
	}
	ack, err := alice.Send(ctx, "bob", "across processes")
	if err != nil || ack.Status != protocol.StatusDelivered {
		t.Fatalf("send: %+v %v, want delivered", ack, err)
	}
	select {
	case m := <-bob.Messages():
		if m.Body != "across processes" {
			t.Fatalf("bob got %q", m.Body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("bob got nothing")
	}

	// SIGTERM drains the middle node: it exits 0 and the others list it
	// as left, or not at all.
	procs[1].Signal(syscall.SIGTERM)
	if code := procs[1].Wait(10 * time.Second); code != 0 {
		t.Fatalf("n2 exited %d after SIGTERM, want 0\n%s", code, procs[1].Output())
	}
	wait.For(t, 5*time.Second, 50*time.Millisecond, func() error {
		v, err := procs[0].Cluster()
		if err != nil {
			return err
		}
		for _, m := range v.Members {
			if m.Name == "n2" && m.State != "left" {
				return fmt.Errorf("n1 lists n2 as %s, want left or absent", m.State)
			}
		}
		if v.Ring.Members != 2 {
			return fmt.Errorf("n1 routes by a ring of %d, want 2", v.Ring.Members)
		}
		return nil
	})
}
