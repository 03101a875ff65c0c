package main

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/shardchat/shard/client"
)

func TestEchoAnswersEverySendOfTheGoClient(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: echoHandler}
	go srv.Serve(ln)
	defer srv.Shutdown()
	c, err := client.Dial(ctx, client.Options{URL: "ws://" + ln.Addr().String() + "/ws", User: "alice"})
	if err != nil {
		t.Fatalf("dial the echo: %v", err)
	}
	defer c.Close()
	if got := c.Welcome().User; got != "alice" {
		t.Errorf("welcome names %q, want alice", got)
	}
	for i := 0; i < 3; i++ {
		if _, err := c.Send(ctx, "bob", "hello"); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
}

func TestEchoRoundsDivideNodeCostByTheEchosPerRound(t *testing.T) {
	run := func(per1k, reads, writes, wakeups float64) []*RunReport {
		return []*RunReport{{Cluster: &ClusterStats{CPUPer1k: per1k, ReadCallsPerChat: reads, WriteCallsPerChat: writes, WakeupsPerChat: wakeups}}}
	}
	echo := &CaseReport{Routing: echoRouting, Runs: run(0.040, 1, 1, 1.5)}
	owner := &CaseReport{Routing: "owner", Runs: run(0.100, 3, 4, 6)}
	echoRounds([]*CaseReport{echo, owner})
	if owner.EchoRounds < 2.49 || owner.EchoRounds > 2.51 {
		t.Errorf("0.100 s per 1,000 messages against an echo's 0.040 per 1,000 rounds: %.3f rounds, want 2.5", owner.EchoRounds)
	}
	if owner.EchoCalls != 3.5 || owner.EchoWakeups != 4 {
		t.Errorf("7 system calls and 6 wake-ups a message against an echo's 2 and 1.5 a round: %.2f and %.2f rounds, want 3.5 and 4",
			owner.EchoCalls, owner.EchoWakeups)
	}
	if echo.EchoRounds != 0 || echo.EchoCalls != 0 {
		t.Errorf("the echo is given %.2f rounds of itself", echo.EchoRounds)
	}
}

func TestRemotePickSendsToAUserOnAnotherNode(t *testing.T) {
	cfg := workerConfig{Users: 30, ConnsPerUser: 1, Mix: 1, Seed: 1, Procs: 1, Remote: true, URLs: []string{"a", "b", "c"}}
	p := newPlan(cfg, split(30, 0, 0, 1, 0, 1))
	for seq := int64(0); seq < 1000; seq++ {
		pk := p.pick(1, seq)
		if p.node(pk.to) == p.node(pk.from) {
			t.Fatalf("message %d goes from connection %d to user %d, both on node %d", seq, pk.from, pk.to, p.node(pk.from))
		}
	}
}
