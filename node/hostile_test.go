package node_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/shardchat/shard/internal/testcluster"
	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/node"
)

// heapInUse is the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestHostileClientsAndPeersGetTheirAnswerAndChangeNothing throws what a
// public endpoint meets at a 3-node cluster while two well-behaved users
// chat: malformed and oversized frames, a flood past the rate limit, a
// client that never reads, half-open handshakes, forged node-to-node frames
// and a gossip join without the cluster key. Each gets its documented
// answer, the users lose nothing, and goroutines and memory come back to
// their level afterwards.
func TestHostileClientsAndPeersGetTheirAnswerAndChangeNothing(t *testing.T) {
	const key = "cluster secret"
	c := testcluster.Start(t, 3, func(_ int, cfg *node.Config) {
		cfg.ClusterKey = key
		cfg.HandshakeTimeout = time.Second
		cfg.Session.SendQueue = 256
	})
	alice, bob := c.Dial(0, "alice"), c.Dial(2, "bob")
	if err := bob.Join(ctxFor(t), "lobby"); err != nil {
		t.Fatal(err)
	}
	// Warm up, then take the baseline.
	sendOK(t, alice, "bob", "warm-up", "delivered")
	recvMsg(t, bob, "bob")
	goroutines0, heap0 := runtime.NumGoroutine(), heapInUse()

	// The users chat all through the attack; every message must arrive.
	stopChat := make(chan struct{})
	chatDone := make(chan error, 1)
	var sent int
	go func() {
		pace := time.NewTicker(10 * time.Millisecond) // well within the rate limit
		defer pace.Stop()
		for i := 0; ; i++ {
			select {
			case <-stopChat:
				chatDone <- nil
				return
			case <-pace.C:
			}
			body := fmt.Sprintf("chat %d", i)
			// Each message gets its own 5 s, like bob's wait below: the
			// test's 10 s context is shorter than an attack on a busy box.
			sendCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			ack, err := alice.Send(sendCtx, "bob", body)
			cancel()
			if err != nil || ack.Status != "delivered" {
				chatDone <- fmt.Errorf("alice's message %d: %+v %v", i, ack, err)
				return
			}
			select {
			case m := <-bob.Messages():
				if m.Body != body {
					chatDone <- fmt.Errorf("bob got %q, want %q", m.Body, body)
					return
				}
			case <-time.After(5 * time.Second):
				chatDone <- fmt.Errorf("bob never got %q", body)
				return
			}
			sent++
		}
	}()

	var wg sync.WaitGroup
	attack := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}()
	}
	// Thousands of malformed frames, each answered with bad_request. A
	// client that does not read its answers as fast as it writes may
	// instead be cut as a slow consumer: that is an answer SPEC gives too.
	for i := 0; i < 10; i++ {
		node := i % 3
		attack("malformed frames", func() error {
			ws, _, err := websocket.DefaultDialer.Dial(c.URL(node)+fmt.Sprintf("?user=mallory%d", node), nil)
			if err != nil {
				return err
			}
			defer ws.Close()
			ws.ReadMessage() // welcome
			junk := []string{`{`, `[]`, `{"type":"send","id":"x"}`, "{\"type\":\"\xff\"}", `{"type":"warp","id":"w"}`, `{"type":"join","id":"j","room":"no spaces"}`}
			const n = 300
			go func() {
				for i := 0; i < n; i++ {
					ws.WriteMessage(websocket.TextMessage, []byte(junk[i%len(junk)]))
				}
			}()
			for i := 0; i < n; i++ {
				ws.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, p, err := ws.ReadMessage()
				if websocket.IsCloseError(err, websocket.ClosePolicyViolation) {
					return nil
				}
				if err != nil {
					return fmt.Errorf("after %d answers: %v", i, err)
				}
				if !strings.Contains(string(p), `"bad_request"`) && !strings.Contains(string(p), `"rate_limited"`) {
					return fmt.Errorf("junk answered with %s", p)
				}
			}
			return nil
		})
	}
	// Oversized frames close with 1009.
	for i := 0; i < 5; i++ {
		attack("oversized frame", func() error {
			ws, _, err := websocket.DefaultDialer.Dial(c.URL(1)+"?user=giant", nil)
			if err != nil {
				return err
			}
			defer ws.Close()
			ws.ReadMessage()
			go ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping","body":"`+strings.Repeat("x", 1<<17)+`"}`))
			ws.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _, err = ws.ReadMessage()
			if !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
				return fmt.Errorf("got %v, want close 1009", err)
			}
			return nil
		})
	}
	// A flood past the rate limit: the excess is refused, not processed.
	attack("flood", func() error {
		ws, _, err := websocket.DefaultDialer.Dial(c.URL(0)+"?user=flooder", nil)
		if err != nil {
			return err
		}
		defer ws.Close()
		ws.ReadMessage()
		// The frames go out as fast as they can be written, not one per
		// answer: in lockstep the flood's pace would be the round trip's,
		// and on a loaded machine (over 1.3 ms each) the bucket refills
		// fast enough to let most of it through.
		const n = 1000
		wrote := make(chan struct{})
		defer func() { ws.Close(); <-wrote }()
		go func() {
			defer close(wrote)
			for i := 0; i < n; i++ {
				ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"send","to":"nobody","body":"spam","id":"s`+fmt.Sprint(i)+`"}`))
			}
		}()
		limited := 0
		for i := 0; i < n; i++ {
			ws.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, p, err := ws.ReadMessage()
			if err != nil {
				return fmt.Errorf("after %d answers: %v", i, err)
			}
			if strings.Contains(string(p), `"rate_limited"`) {
				limited++
			}
		}
		if limited < n/3 {
			return fmt.Errorf("only %d of %d flood frames were rate limited", limited, n)
		}
		return nil
	})
	// A client that never reads, in a busy room: cut as a slow consumer.
	attack("never reads", func() error {
		ws, _, err := websocket.DefaultDialer.Dial(c.URL(2)+"?user=sloth", nil)
		if err != nil {
			return err
		}
		defer ws.Close()
		ws.ReadMessage()
		ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"join","id":"j","room":"busy"}`))
		ws.ReadMessage()
		blaster, _, err := websocket.DefaultDialer.Dial(c.URL(0)+"?user=blaster", nil)
		if err != nil {
			return err
		}
		defer blaster.Close()
		blaster.ReadMessage()
		blaster.WriteMessage(websocket.TextMessage, []byte(`{"type":"join","id":"j","room":"busy"}`))
		blaster.ReadMessage()
		big := strings.Repeat("x", 32<<10)
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
			if c.Counter(2, "shard_connections_closed_total", "reason=slow_consumer") > 0 {
				return nil
			}
			blaster.WriteMessage(websocket.TextMessage, []byte(`{"type":"send","room":"busy","body":"`+big+`"}`))
			blaster.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, _, err := blaster.ReadMessage(); err != nil { // its ack: stay within the rate
				return err
			}
		}
		return fmt.Errorf("a client that never reads was never cut")
	})
	// Half-open handshakes: a request that never finishes is dropped.
	for i := 0; i < 20; i++ {
		attack("half-open handshake", func() error {
			conn, err := net.Dial("tcp", c.Nodes[i%3].HTTPAddr())
			if err != nil {
				return err
			}
			defer conn.Close()
			fmt.Fprintf(conn, "GET /ws?user=slowpoke HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = bufio.NewReader(conn).ReadByte()
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return fmt.Errorf("the server kept a half-open handshake for 5 s")
			}
			return nil
		})
	}
	wg.Wait()
	close(stopChat)
	if err := <-chatDone; err != nil {
		t.Fatalf("a well-behaved user lost a message during the attack: %v", err)
	}
	t.Logf("alice and bob exchanged %d messages during the attack, all delivered", sent)

	// Forged node-to-node traffic: garbage, and a hello without the key.
	for _, forged := range [][]byte{
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		{0xff, 0xff, 0xff, 0xff, 1, 2, 3},
		helloWithoutKey(),
	} {
		conn, err := net.Dial("tcp", c.Nodes[2].LinkAddr())
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(forged)
		// A forward for bob, as if the hello had been accepted.
		conn.Write(forgedForward())
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		for {
			if _, err := conn.Read(buf); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("the node kept a link with a forged hello %q open", forged[:4])
				}
				break
			}
		}
		conn.Close()
	}
	// Its own 10 s: the attacks above may have used up more than the
	// test's first context on a loaded machine.
	if err := bob.Ping(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
	noMsg(t, bob, "bob (a forged node-to-node message)")

	// A gossip join without the key fails, and the cluster is unchanged.
	intruder := testcluster.Config(9)
	intruder.Join = []string{c.Nodes[0].GossipAddr()}
	intruder.JoinTimeout = 2 * time.Second
	if n, err := node.Start(intruder); err == nil {
		n.Kill()
		t.Fatal("a node without the cluster key joined the cluster")
	}
	intruder.ClusterKey = "wrong"
	if n, err := node.Start(intruder); err == nil {
		n.Kill()
		t.Fatal("a node with the wrong cluster key joined the cluster")
	}
	c.WaitRing(3)

	// Goroutines and memory come back to their level.
	wait.For(t, 20*time.Second, 100*time.Millisecond, func() error {
		if g := runtime.NumGoroutine(); g > goroutines0+10 {
			var b strings.Builder
			pprof.Lookup("goroutine").WriteTo(&b, 1)
			return fmt.Errorf("%d goroutines, %d before the attack:\n%s", g, goroutines0, b.String())
		}
		return nil
	})
	heap1 := heapInUse()
	t.Logf("goroutines: %d before, %d after; heap in use: %.1f MiB before, %.1f MiB after",
		goroutines0, runtime.NumGoroutine(), float64(heap0)/(1<<20), float64(heap1)/(1<<20))
	if heap1 > heap0+16<<20 {
		t.Fatalf("heap grew from %d to %d bytes and stayed", heap0, heap1)
	}
	sendOK(t, alice, "bob", "after the storm", "delivered")
}

// helloWithoutKey is a link hello from a process that does not hold the
// cluster key: right version, a name, a nonce, no proof.
func helloWithoutKey() []byte {
	body := []byte{1, 0} // kind hello, request id 0
	body = binary.AppendUvarint(body, 1)
	body = appendLinkStr(body, "node-1")
	body = appendLinkStr(body, "inc")
	body = appendLinkStr(body, "0123456789abcdef")
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// forgedForward is a forward request for bob, as the link would carry it.
func forgedForward() []byte {
	body := []byte{3, 1, 1} // kind forward, request id 1, mode direct
	body = appendLinkStr(body, "bob")
	body = appendLinkStr(body, "mallory")
	body = appendLinkStr(body, `{"type":"msg","mid":"forged","from":"mallory","to":"bob","body":"forged","ts":1}`)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

func appendLinkStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}
