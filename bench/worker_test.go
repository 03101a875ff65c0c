package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/shardchat/shard/protocol"
)

// chatServer is the part of docs/protocol.md a worker relies on, in memory:
// welcome, join, direct and room sends with their acks and deliveries. drop,
// when it returns true for a body, acknowledges the message but delivers it to
// nobody, as a buggy server would.
type chatServer struct {
	srv  *httptest.Server
	drop func(body string) bool

	mu    sync.Mutex
	users map[string][]*fakeConn
	rooms map[string][]*fakeConn
}

type fakeConn struct {
	user string
	mu   sync.Mutex
	ws   *websocket.Conn
}

func (c *fakeConn) write(v any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ws.WriteJSON(v)
}

func newChatServer(t *testing.T, drop func(string) bool) *chatServer {
	s := &chatServer{drop: drop, users: map[string][]*fakeConn{}, rooms: map[string][]*fakeConn{}}
	up := websocket.Upgrader{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		c := &fakeConn{user: r.URL.Query().Get("user"), ws: ws}
		s.mu.Lock()
		s.users[c.user] = append(s.users[c.user], c)
		s.mu.Unlock()
		c.write(map[string]string{"type": protocol.TypeWelcome, "user": c.user, "node": "fake"})
		for {
			var f struct{ Type, ID, To, Room, Body string }
			if ws.ReadJSON(&f) != nil {
				return
			}
			s.handle(c, f.Type, f.ID, f.To, f.Room, f.Body)
		}
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *chatServer) handle(c *fakeConn, typ, id, to, room, body string) {
	s.mu.Lock()
	var rcpts []*fakeConn
	switch {
	case typ == "join":
		s.rooms[room] = append(s.rooms[room], c)
	case room != "":
		rcpts = s.rooms[room]
	default:
		rcpts = append(append(rcpts, s.users[to]...), s.users[c.user]...)
	}
	s.mu.Unlock()
	if typ == "join" {
		c.write(map[string]any{"type": protocol.TypeAck, "id": id, "status": protocol.StatusOK})
		return
	}
	n := 0
	for _, r := range rcpts {
		if r == c {
			continue
		}
		n++
		if !s.drop(body) {
			r.write(map[string]any{"type": protocol.TypeMsg, "mid": id, "from": c.user, "to": to, "room": room, "body": body, "ts": 1})
		}
	}
	if room != "" {
		c.write(map[string]any{"type": protocol.TypeAck, "id": id, "status": protocol.StatusSent, "recipients": n})
	} else {
		c.write(map[string]any{"type": protocol.TypeAck, "id": id, "status": protocol.StatusDelivered})
	}
}

func TestWorkerCountsAMessageTheServerDropsAsLost(t *testing.T) {
	const dropped = 7 // the sequence number the server swallows
	srv := newChatServer(t, func(body string) bool {
		_, seq, _, _ := parseBody(body)
		return seq == dropped
	})
	cfg := workerConfig{
		Procs: 1, RunID: "t", URLs: []string{"ws" + strings.TrimPrefix(srv.srv.URL, "http") + "/ws"},
		SrcBase: "127.0.0.1", ConnsPerSrc: 1000,
		Users: 6, ConnsPerUser: 2, Rooms: 2, RoomSize: 3, Mix: 0.5, Body: 40, Seed: 3, DialConcurrency: 4,
	}
	w := newWorker(cfg, func(event) {})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ready := w.setup(ctx)
	defer w.close()
	if ready.Established != 12 || ready.Joins != 12 || ready.JoinsFailed != 0 {
		t.Fatalf("setup %+v: want 12 connections, each in one room", ready)
	}
	// 100 messages in 250 ms, all measured. The grace bounds the wait for
	// the swallowed message, which never comes.
	res := w.run(ctx, runCmd{Phase: 1, Rate: 400, Duration: 250 * time.Millisecond, Grace: time.Second,
		StartAt: time.Now().Add(20 * time.Millisecond).UnixNano()})

	c := res.Counts
	lost := int64(len(w.plan.recipients(w.plan.pick(1, dropped), nil)))
	if c.Offered != 100 || c.Sent != 100 || c.Answered() != 100 {
		t.Errorf("offered %d, sent %d, answered %d: want all 100", c.Offered, c.Sent, c.Answered())
	}
	if c.Lost != lost || c.LostMessages != 1 {
		t.Errorf("lost %d deliveries in %d messages; the server swallowed message %d, owed to %d connections",
			c.Lost, c.LostMessages, dropped, lost)
	}
	if c.Delivered != c.Expected-lost || c.Excluded != 0 || c.Duplicates != 0 || c.Unexpected != 0 || c.Reordered != 0 {
		t.Errorf("counts %+v: every other delivery should have arrived exactly once", c)
	}
	if res.Up != 12 || res.Disconnects != 0 {
		t.Errorf("%d connections up, %d disconnects: none should have dropped", res.Up, res.Disconnects)
	}
	// The report survives the trip to the parent.
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var back workerResult
	if err := json.Unmarshal(b, &back); err != nil || back.Counts.Lost != c.Lost {
		t.Errorf("result after JSON: %v, lost %d", err, back.Counts.Lost)
	}
	r, err := buildRun(&Config{Duration: 250 * time.Millisecond}, 1, 400, []*workerResult{&back})
	if err != nil || r.Latency.Count != c.Delivered {
		t.Errorf("merged run: %v, %d latency samples, want %d", err, r.Latency.Count, c.Delivered)
	}
}
