package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/protocol"
)

// testTimeout bounds every wait of these tests: generous, since a loopback
// round trip takes well under a millisecond even under -race.
const testTimeout = 5 * time.Second

// fakeServer is the server side of docs/protocol.md as far as a client can
// tell, on loopback, scripted by the test.
type fakeServer struct {
	srv   *httptest.Server
	conns chan *fakeConn // every accepted connection, after its welcome

	mu          sync.Mutex
	node        string   // welcome.node of new connections
	refuse      *refusal // when set, upgrades are refused
	auto        bool     // answer join, leave, ping and send frames by itself
	holdWelcome bool     // send no welcome
	store       bool     // welcome.store: the node keeps messages
	maxFrame    int      // welcome.max_frame; 0 leaves it out
	all         []*fakeConn
	closeOnce   sync.Once
}

type refusal struct {
	status        int
	code, message string
}

type fakeConn struct {
	ws    *websocket.Conn
	query url.Values
	in    chan Frame  // every frame received, in order; closed when the connection ends
	pongs chan string // payloads of pongs received
	ended chan error  // the error that ended the read loop
	wmu   sync.Mutex  // one writer at a time
	mu    sync.Mutex
	rooms []string // rooms joined, recorded before the ok is sent
	// watched counts the users of each watch frame, recorded before the ok.
	watched []int
	users   map[string]bool
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	s := &fakeServer{conns: make(chan *fakeConn, 16), node: "n1"}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve)) // 127.0.0.1
	t.Cleanup(s.close)
	return s
}

func (s *fakeServer) url() string { return "ws" + strings.TrimPrefix(s.srv.URL, "http") + "/ws" }

func (s *fakeServer) set(f func(*fakeServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

// close stops the server and drops every connection it accepted.
func (s *fakeServer) close() {
	s.closeOnce.Do(func() {
		s.srv.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, fc := range s.all {
			fc.ws.Close()
		}
	})
}

func (s *fakeServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	refuse, node, hold, store, maxFrame := s.refuse, s.node, s.holdWelcome, s.store, s.maxFrame
	s.mu.Unlock()
	if refuse != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(refuse.status)
		fmt.Fprintf(w, `{"error":{"code":%q,"message":%q}}`, refuse.code, refuse.message)
		return
	}
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	fc := &fakeConn{
		ws:    ws,
		query: r.URL.Query(),
		in:    make(chan Frame, 64),
		pongs: make(chan string, 4),
		ended: make(chan error, 1),
	}
	ws.SetPongHandler(func(p string) error { fc.pongs <- p; return nil })
	s.mu.Lock()
	s.all = append(s.all, fc)
	s.mu.Unlock()
	user := fc.query.Get("user")
	if tok := fc.query.Get("token"); tok != "" {
		user = "jwt-" + tok
	}
	if !hold {
		welcome := map[string]any{"type": protocol.TypeWelcome, "user": user, "node": node, "store": store}
		if maxFrame > 0 {
			welcome["max_frame"] = maxFrame
		}
		fc.send(welcome)
	}
	s.conns <- fc
	defer close(fc.in)
	for {
		var f Frame
		if err := ws.ReadJSON(&f); err != nil {
			fc.ended <- err
			return
		}
		s.mu.Lock()
		auto := s.auto
		s.mu.Unlock()
		if auto {
			fc.answer(f)
		}
		fc.in <- f
	}
}

func (fc *fakeConn) send(v any) {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	fc.ws.WriteJSON(v)
}

func (fc *fakeConn) ack(id, status string) {
	fc.send(map[string]any{"type": protocol.TypeAck, "id": id, "status": status})
}

// answer is what a healthy server would say.
func (fc *fakeConn) answer(f Frame) {
	switch f.Type {
	case protocol.TypeJoin:
		fc.mu.Lock()
		fc.rooms = append(fc.rooms, f.Room)
		fc.mu.Unlock()
		fc.ack(f.ID, protocol.StatusOK)
	case protocol.TypeLeave, protocol.TypeTyping:
		fc.ack(f.ID, protocol.StatusOK)
	case protocol.TypeWatch, protocol.TypeUnwatch:
		fc.mu.Lock()
		if fc.users == nil {
			fc.users = map[string]bool{}
		}
		for _, u := range f.Users {
			fc.users[u] = f.Type == protocol.TypeWatch
		}
		if f.Type == protocol.TypeWatch {
			fc.watched = append(fc.watched, len(f.Users))
		}
		fc.mu.Unlock()
		fc.ack(f.ID, protocol.StatusOK)
	case protocol.TypePing:
		fc.send(map[string]any{"type": protocol.TypePong, "id": f.ID})
	case protocol.TypeSend:
		if f.Room != "" {
			fc.send(map[string]any{"type": protocol.TypeAck, "id": f.ID, "status": protocol.StatusSent, "recipients": 0})
		} else {
			fc.ack(f.ID, protocol.StatusDelivered)
		}
	}
}

// watching returns the users watched on fc, and the size of each watch
// frame.
func (fc *fakeConn) watching() (users []string, frames []int) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	for u, on := range fc.users {
		if on {
			users = append(users, u)
		}
	}
	slices.Sort(users)
	return users, slices.Clone(fc.watched)
}

func (fc *fakeConn) joined() []string {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return slices.Sorted(slices.Values(fc.rooms))
}

// closeWith sends a close frame, as a draining node does with 1012.
func (fc *fakeConn) closeWith(code int, text string) {
	fc.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text),
		time.Now().Add(testTimeout))
}

// recv waits for one value from ch, failing the test after testTimeout.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v, ok := <-ch:
		if !ok {
			t.Fatalf("waiting for %s: channel closed", what)
		}
		return v
	case <-time.After(testTimeout):
		t.Fatalf("timed out after %v waiting for %s", testTimeout, what)
	}
	panic("unreachable")
}

// waitClosed waits for ch to be closed, failing the test after testTimeout.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(testTimeout):
		t.Fatalf("timed out after %v waiting for %s", testTimeout, what)
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// dial connects user to s; edit adjusts the options. The client is closed
// when the test ends.
func dial(t *testing.T, s *fakeServer, user string, edit func(*Options)) *Client {
	t.Helper()
	o := Options{URL: s.url(), User: user}
	if edit != nil {
		edit(&o)
	}
	c, err := Dial(testCtx(t), o)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// stateLog collects OnState calls.
func stateLog(o *Options) chan State {
	ch := make(chan State, 256)
	o.OnState = func(s State) { ch <- s }
	return ch
}

// nextState skips states of other types until one of type T comes.
func nextState[T State](t *testing.T, states chan State) T {
	t.Helper()
	for {
		s := recv(t, states, fmt.Sprintf("state %T", *new(T)))
		if v, ok := s.(T); ok {
			return v
		}
	}
}

func TestDialReturnsWelcomeOfItsConnection(t *testing.T) {
	s := newFakeServer(t)
	var states chan State
	c := dial(t, s, "alice", func(o *Options) { states = stateLog(o) })
	fc := recv(t, s.conns, "connection")

	if got := fc.query.Get("user"); got != "alice" {
		t.Errorf("server saw ?user=%q, want alice", got)
	}
	if got, want := c.Welcome(), (Welcome{User: "alice", Node: "n1"}); got != want {
		t.Errorf("Welcome() = %+v, want %+v", got, want)
	}
	if got := nextState[Connected](t, states); got.Welcome.Node != "n1" {
		t.Errorf("Connected state has welcome %+v", got.Welcome)
	}

	// A token wins over a user id, and travels alone.
	c2 := dial(t, s, "alice", func(o *Options) { o.Token = "t0k" })
	fc2 := recv(t, s.conns, "connection with token")
	if fc2.query.Get("token") != "t0k" || fc2.query.Has("user") {
		t.Errorf("server saw query %v, want only token=t0k", fc2.query)
	}
	if got := c2.Welcome().User; got != "jwt-t0k" {
		t.Errorf("Welcome().User = %q, want the server's jwt-t0k", got)
	}
}

func TestDialWithoutWelcomeEndsWithContext(t *testing.T) {
	s := newFakeServer(t)
	s.set(func(s *fakeServer) { s.holdWelcome = true })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	c, err := Dial(ctx, Options{URL: s.url(), User: "alice"})
	if err == nil {
		c.Close()
		t.Fatal("Dial returned a client although no welcome came")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Dial error = %v, want the context's deadline", err)
	}
}

func TestDialRejectsAFirstFrameThatIsNotWelcome(t *testing.T) {
	s := newFakeServer(t)
	s.set(func(s *fakeServer) { s.holdWelcome = true })
	go func() {
		fc := <-s.conns
		fc.send(map[string]any{"type": protocol.TypePong, "id": "x"})
	}()
	c, err := Dial(testCtx(t), Options{URL: s.url(), User: "alice"})
	if err == nil {
		c.Close()
		t.Fatal("Dial accepted a connection whose first frame was a pong")
	}
}

func TestMessagesArriveInOrderWithTheirFields(t *testing.T) {
	s := newFakeServer(t)
	c := dial(t, s, "bob", nil)
	fc := recv(t, s.conns, "connection")
	before := time.Now()
	fc.send(map[string]any{"type": protocol.TypeMsg, "mid": "m1", "from": "alice", "to": "bob", "body": "hi", "ts": 1732450000123})
	fc.send(map[string]any{"type": protocol.TypeMsg, "mid": "m2", "from": "carol", "room": "lobby", "body": "yo", "ts": 1732450000124, "seq": 9})

	m1 := recv(t, c.Messages(), "first message")
	want1 := Msg{Mid: "m1", From: "alice", To: "bob", Body: "hi", TS: 1732450000123}
	if m1.Received.Before(before) {
		t.Errorf("Received = %v, before the message was sent (%v)", m1.Received, before)
	}
	m1.Received = time.Time{}
	if m1 != want1 {
		t.Errorf("first message = %+v, want %+v", m1, want1)
	}
	m2 := recv(t, c.Messages(), "second message")
	m2.Received = time.Time{}
	if want := (Msg{Mid: "m2", From: "carol", Room: "lobby", Body: "yo", TS: 1732450000124, Seq: 9}); m2 != want {
		t.Errorf("second message = %+v, want %+v", m2, want)
	}
}

func TestAcksReachTheirRequestsWhateverTheirOrder(t *testing.T) {
	s := newFakeServer(t)
	c := dial(t, s, "alice", nil)
	fc := recv(t, s.conns, "connection")
	ctx := testCtx(t)

	type res struct {
		ack Ack
		err error
	}
	bob, carol, lobby := make(chan res, 1), make(chan res, 1), make(chan res, 1)
	go func() { a, err := c.Send(ctx, "bob", "hi"); bob <- res{a, err} }()
	go func() { a, err := c.Send(ctx, "carol", "hi"); carol <- res{a, err} }()
	go func() { a, err := c.SendRoom(ctx, "lobby", "hi"); lobby <- res{a, err} }()

	var frames []Frame
	ids := map[string]bool{}
	for range 3 {
		f := recv(t, fc.in, "send frame")
		if !ValidID(f.ID) || ids[f.ID] {
			t.Fatalf("frame id %q is malformed or repeated (ids so far %v)", f.ID, ids)
		}
		ids[f.ID] = true
		frames = append(frames, f)
	}
	// Answer in the reverse order of arrival.
	for _, f := range slices.Backward(frames) {
		switch {
		case f.To == "bob":
			fc.ack(f.ID, protocol.StatusDelivered)
		case f.To == "carol":
			fc.ack(f.ID, protocol.StatusOffline)
		case f.Room == "lobby":
			fc.send(map[string]any{"type": protocol.TypeAck, "id": f.ID, "status": protocol.StatusSent, "recipients": 7})
		}
	}
	for _, tc := range []struct {
		name       string
		ch         chan res
		status     string
		recipients int
	}{{"bob", bob, protocol.StatusDelivered, 0}, {"carol", carol, protocol.StatusOffline, 0}, {"lobby", lobby, protocol.StatusSent, 7}} {
		r := recv(t, tc.ch, "answer for "+tc.name)
		if r.err != nil || r.ack.Status != tc.status || r.ack.Recipients != tc.recipients || !ids[r.ack.ID] {
			t.Errorf("send to %s got (%+v, %v), want status %s with %d recipients",
				tc.name, r.ack, r.err, tc.status, tc.recipients)
		}
	}
}

func TestErrorFrameIsReturnedAsError(t *testing.T) {
	s := newFakeServer(t)
	c := dial(t, s, "alice", nil)
	fc := recv(t, s.conns, "connection")
	go func() {
		f := <-fc.in
		fc.send(map[string]any{"type": protocol.TypeError, "id": f.ID, "code": protocol.CodeNotMember, "message": "join lobby first"})
	}()
	_, err := c.SendRoom(testCtx(t), "lobby", "hi")
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("SendRoom error = %v (%T), want *Error", err, err)
	}
	if e.Code != protocol.CodeNotMember || e.Message != "join lobby first" || e.ID == "" {
		t.Errorf("error = %+v, want not_member with its id", e)
	}
	if got := err.Error(); got != "not_member: join lobby first" {
		t.Errorf("Error() = %q", got)
	}
}

func TestPingAndServerPingsAreAnswered(t *testing.T) {
	s := newFakeServer(t)
	s.set(func(s *fakeServer) { s.auto = true })
	c := dial(t, s, "alice", nil)
	fc := recv(t, s.conns, "connection")
	if err := c.Ping(testCtx(t)); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	fc.ws.WriteControl(websocket.PingMessage, []byte("hb"), time.Now().Add(testTimeout))
	if got := recv(t, fc.pongs, "pong to the server's ping"); got != "hb" {
		t.Errorf("pong payload %q, want hb", got)
	}
}

func TestSendAsyncIDs(t *testing.T) {
	s := newFakeServer(t)
	c := dial(t, s, "alice", nil)
	fc := recv(t, s.conns, "connection")

	called := make(chan Ack, 4)
	never := func(Ack, error) { t.Error("done called for a frame SendAsync refused") }
	if err := c.SendAsync(Frame{Type: protocol.TypePing, ID: "bad id"}, never); err == nil {
		t.Error("SendAsync accepted a malformed id")
	}
	if err := c.SendAsync(Frame{Type: protocol.TypePing, ID: "c1"}, func(a Ack, _ error) { called <- a }); err != nil {
		t.Fatalf("SendAsync with id c1: %v", err)
	}
	if err := c.SendAsync(Frame{Type: protocol.TypePing, ID: "c1"}, never); err == nil {
		t.Error("SendAsync accepted an id that already awaits an answer")
	}
	if err := c.SendAsync(Frame{Type: protocol.TypePing}, func(a Ack, _ error) { called <- a }); err != nil {
		t.Fatalf("SendAsync: %v", err)
	}
	if f := recv(t, fc.in, "first ping"); f.ID != "c1" {
		t.Errorf("first ping id %q, want c1", f.ID)
	}
	if f := recv(t, fc.in, "second ping"); f.ID != "c2" {
		t.Errorf("automatic id %q, want c2 (c1 is taken)", f.ID)
	}
	fc.send(map[string]any{"type": protocol.TypePong, "id": "c2"})
	fc.send(map[string]any{"type": protocol.TypePong, "id": "c1"})
	for _, want := range []string{"c2", "c1"} {
		if a := recv(t, called, "pong "+want); a.ID != want || a.Status != StatusPong {
			t.Errorf("answer %+v, want pong for %s", a, want)
		}
	}
}

func TestRequestWaitsEndWithTheirContext(t *testing.T) {
	s := newFakeServer(t)
	c := dial(t, s, "alice", nil)
	fc := recv(t, s.conns, "connection")

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.Join(ctx, "lobby"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Join without an answer returned %v, want the context's deadline", err)
	}
	// The late ok still counts: the server did record the join.
	late := recv(t, fc.in, "join frame")
	fc.ack(late.ID, protocol.StatusOK)
	go func() {
		f := <-fc.in
		fc.send(map[string]any{"type": protocol.TypePong, "id": f.ID})
	}()
	if err := c.Ping(testCtx(t)); err != nil {
		t.Fatalf("Ping after a late answer: %v", err)
	}
	c.mu.Lock()
	_, remembered := c.rooms["lobby"]
	c.mu.Unlock()
	if !remembered {
		t.Error("a join acknowledged after its caller gave up is not remembered for a reconnect")
	}
}

func TestPendingRequestsGetErrClosedWhenTheServerDrops(t *testing.T) {
	s := newFakeServer(t)
	var states chan State
	c := dial(t, s, "alice", func(o *Options) { states = stateLog(o) })
	fc := recv(t, s.conns, "connection")
	ctx := testCtx(t)

	var asyncCalls atomic.Int32
	asyncErr := make(chan error, 2)
	if err := c.SendAsync(Frame{Type: protocol.TypeSend, To: "bob", Body: "x"}, func(_ Ack, err error) {
		asyncCalls.Add(1)
		asyncErr <- err
	}); err != nil {
		t.Fatalf("SendAsync: %v", err)
	}
	syncErr := make(chan error, 1)
	go func() { _, err := c.Send(ctx, "bob", "y"); syncErr <- err }()
	recv(t, fc.in, "async frame")
	recv(t, fc.in, "sync frame")

	fc.ws.NetConn().Close() // a dead node sends no close frame

	if err := recv(t, syncErr, "Send's answer"); !errors.Is(err, ErrClosed) {
		t.Errorf("Send returned %v, want ErrClosed", err)
	}
	if err := recv(t, asyncErr, "SendAsync's answer"); !errors.Is(err, ErrClosed) {
		t.Errorf("SendAsync's done got %v, want ErrClosed", err)
	}
	d := nextState[Disconnected](t, states)
	if d.CloseCode != websocket.CloseAbnormalClosure {
		t.Errorf("Disconnected = %+v, want close code 1006", d)
	}
	waitClosed(t, c.Done(), "Done without Reconnect")
	if _, ok := <-c.Messages(); ok {
		t.Error("Messages() still open after the client stopped")
	}
	if n := asyncCalls.Load(); n != 1 {
		t.Errorf("SendAsync's done called %d times, want once", n)
	}
	if got, ok := c.LastDisconnect(); !ok || got.CloseCode != websocket.CloseAbnormalClosure {
		t.Errorf("LastDisconnect() = %+v, %v", got, ok)
	}
	if _, err := c.Send(ctx, "bob", "z"); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after the end returned %v, want ErrClosed", err)
	}
	if err := c.SendAsync(Frame{Type: protocol.TypePing}, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("SendAsync after the end returned %v, want ErrClosed", err)
	}
}

func TestReconnectsAfterServiceRestartAndRejoinsRooms(t *testing.T) {
	s := newFakeServer(t)
	s.set(func(s *fakeServer) { s.auto = true })
	var states chan State
	c := dial(t, s, "alice", func(o *Options) {
		states = stateLog(o)
		o.Reconnect = true
		o.BackoffMin, o.BackoffMax = time.Millisecond, 10*time.Millisecond
	})
	nextState[Connected](t, states)
	fc1 := recv(t, s.conns, "first connection")
	ctx := testCtx(t)
	for _, room := range []string{"lobby", "dev", "tmp"} {
		if err := c.Join(ctx, room); err != nil {
			t.Fatalf("Join %s: %v", room, err)
		}
	}
	if err := c.Leave(ctx, "tmp"); err != nil {
		t.Fatalf("Leave tmp: %v", err)
	}

	// The node drains: it refuses new upgrades and closes with 1012.
	s.set(func(s *fakeServer) {
		s.refuse = &refusal{http.StatusServiceUnavailable, protocol.CodeUnavailable, "draining"}
		s.node = "n2"
	})
	fc1.closeWith(websocket.CloseServiceRestart, "service restart")

	d := nextState[Disconnected](t, states)
	if d.CloseCode != websocket.CloseServiceRestart || d.CloseText != "service restart" {
		t.Errorf("Disconnected = %+v, want 1012 service restart", d)
	}
	if got, _ := c.LastDisconnect(); got.CloseCode != websocket.CloseServiceRestart {
		t.Errorf("LastDisconnect().CloseCode = %d, want 1012", got.CloseCode)
	}
	// It keeps trying through refusals until a node takes it.
	for {
		r := nextState[Reconnecting](t, states)
		var he *HandshakeError
		if errors.As(r.Err, &he) {
			if he.Status != http.StatusServiceUnavailable || he.Code != protocol.CodeUnavailable {
				t.Errorf("refusal reported as %+v", he)
			}
			break
		}
	}
	s.set(func(s *fakeServer) { s.refuse = nil })

	fc2 := recv(t, s.conns, "second connection")
	conn := nextState[Connected](t, states)
	// Connected comes only after every room was joined again.
	if got := fc2.joined(); !slices.Equal(got, []string{"dev", "lobby"}) {
		t.Errorf("rooms joined again before Connected: %v, want [dev lobby] (tmp was left)", got)
	}
	if conn.Welcome.Node != "n2" || c.Welcome().Node != "n2" {
		t.Errorf("welcome after reconnect: state %+v, Welcome() %+v; want node n2", conn.Welcome, c.Welcome())
	}
	if a, err := c.SendRoom(ctx, "lobby", "back"); err != nil || a.Status != protocol.StatusSent {
		t.Errorf("SendRoom on the new connection: %+v, %v", a, err)
	}
}

// A send whose connection ends before its answer may or may not have been
// stored. With a store, Send sends it again with the same key on the next
// connection (the server answers it like the first and stores it once);
// without one a resend could arrive twice, a close caused by the frame
// itself (1009) would come again, and a next node that takes smaller frames
// would refuse it: the caller hears ErrClosed, not that nothing was sent.
func TestSendLostWithItsConnectionIsResentWithItsKeyOnlyWithAStore(t *testing.T) {
	for _, tc := range []struct {
		name   string
		store  bool
		close  int // 0: the node dies without a close frame
		limit  int // the next node's welcome.max_frame; 0 says none
		resend bool
	}{
		{"store, node died", true, 0, 0, true},
		{"store, node drained", true, websocket.CloseServiceRestart, 0, true},
		{"no store", false, 0, 0, false},
		{"store, frame too big", true, websocket.CloseMessageTooBig, 0, false},
		{"store, next node takes smaller frames", true, websocket.CloseServiceRestart, 64, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newFakeServer(t)
			s.set(func(s *fakeServer) { s.store = tc.store })
			c, fc1, sent, answer := startSend(t, s, func(c *Client) (Ack, error) {
				return c.SendRoom(testCtx(t), "lobby", "hello")
			})
			if sent.Key == "" {
				t.Fatal("the send carries no key")
			}
			s.set(func(s *fakeServer) { s.auto, s.maxFrame = true, tc.limit })
			if tc.close == 0 {
				fc1.ws.NetConn().Close()
			} else {
				fc1.closeWith(tc.close, "")
			}

			fc2 := recv(t, s.conns, "second connection")
			if !tc.resend {
				r := recv(t, answer, "SendRoom's answer")
				if !errors.Is(r.err, ErrClosed) {
					t.Fatalf("SendRoom: %+v, %v; want ErrClosed", r.ack, r.err)
				}
				if err := c.Ping(testCtx(t)); err != nil {
					t.Fatal(err)
				}
				if f := recv(t, fc2.in, "a frame"); f.Type != protocol.TypePing {
					t.Fatalf("the new connection got %+v before the ping: a resend", f)
				}
				return
			}
			again := recv(t, fc2.in, "the resend")
			if again.Type != protocol.TypeSend || again.Key != sent.Key || again.Room != "lobby" || again.Body != "hello" {
				t.Fatalf("resent %+v, want the send %+v with its key", again, sent)
			}
			if r := recv(t, answer, "SendRoom's answer"); r.err != nil || r.ack.Status != protocol.StatusSent {
				t.Fatalf("SendRoom: %+v, %v; want sent", r.ack, r.err)
			}
		})
	}
}

// startSend dials alice, reconnecting at once, and runs send on her in the
// background: it returns the first connection, the frame it got, and where
// send's answer will arrive.
func startSend(t *testing.T, s *fakeServer, send func(*Client) (Ack, error)) (*Client, *fakeConn, Frame, chan result) {
	t.Helper()
	c := dial(t, s, "alice", func(o *Options) {
		o.Reconnect = true
		o.BackoffMin, o.BackoffMax = time.Millisecond, 10*time.Millisecond
	})
	fc1 := recv(t, s.conns, "first connection")
	answer := make(chan result, 1)
	go func() {
		a, err := send(c)
		answer <- result{a, err}
	}()
	return c, fc1, recv(t, fc1.in, "the send"), answer
}

// A resend refused by the new node (rate_limited here) says nothing of the
// first attempt, which may have been stored: the caller hears ErrClosed, not
// an error that reads "not processed", after which a new Send would store
// the message twice.
func TestRefusedResendAnswersClosed(t *testing.T) {
	s := newFakeServer(t)
	s.set(func(s *fakeServer) { s.store = true })
	_, fc1, sent, answer := startSend(t, s, func(c *Client) (Ack, error) {
		return c.Send(testCtx(t), "bob", "hello")
	})
	fc1.closeWith(websocket.CloseServiceRestart, "")
	fc2 := recv(t, s.conns, "second connection")
	again := recv(t, fc2.in, "the resend")
	if again.Key != sent.Key {
		t.Fatalf("resent with key %q, want %q", again.Key, sent.Key)
	}
	fc2.send(map[string]any{"type": protocol.TypeError, "id": again.ID, "code": protocol.CodeRateLimited, "message": "slow down"})
	r := recv(t, answer, "Send's answer")
	if !errors.Is(r.err, ErrClosed) {
		t.Fatalf("Send after a refused resend: %+v, %v; want ErrClosed", r.ack, r.err)
	}
}

func TestRefusedUpgradeReportsStatusAndCode(t *testing.T) {
	s := newFakeServer(t)
	for _, r := range []refusal{
		{http.StatusServiceUnavailable, protocol.CodeUnavailable, "node is draining"},
		{http.StatusUnauthorized, protocol.CodeUnauthorized, "bad token"},
		{http.StatusBadRequest, protocol.CodeBadRequest, "user must be 1 to 64 characters"},
	} {
		s.set(func(s *fakeServer) { s.refuse = &r })
		c, err := Dial(testCtx(t), Options{URL: s.url(), User: "alice"})
		if err == nil {
			c.Close()
			t.Fatalf("Dial succeeded against a %d refusal", r.status)
		}
		var he *HandshakeError
		if !errors.As(err, &he) {
			t.Fatalf("Dial error %v (%T), want *HandshakeError", err, err)
		}
		if he.Status != r.status || he.Code != r.code || he.Message != r.message {
			t.Errorf("refusal = %+v, want %+v", he, r)
		}
		if !strings.Contains(err.Error(), fmt.Sprint(r.status)) || !strings.Contains(err.Error(), r.code) {
			t.Errorf("error text %q lacks the status or the code", err)
		}
	}
}

func TestCloseIsIdempotentAndStopsEveryGoroutine(t *testing.T) {
	base := runtime.NumGoroutine()
	s := newFakeServer(t)
	ctx := testCtx(t)

	// An idle client.
	idle := dial(t, s, "idle", nil)
	idleConn := recv(t, s.conns, "idle connection")

	// A client with a request the server never answers.
	waiting := dial(t, s, "waiting", nil)
	waitingConn := recv(t, s.conns, "waiting connection")
	sendErr := make(chan error, 1)
	go func() { _, err := waiting.Send(ctx, "bob", "hi"); sendErr <- err }()
	recv(t, waitingConn.in, "unanswered frame")

	// A client that reads no messages: its reader is stuck on a full buffer.
	stuck := dial(t, s, "stuck", func(o *Options) { o.MessageBuffer = 1 })
	stuckConn := recv(t, s.conns, "stuck connection")
	for i := range 3 {
		stuckConn.send(map[string]any{"type": protocol.TypeMsg, "mid": fmt.Sprint(i), "from": "x", "to": "stuck", "body": "b", "ts": 1})
	}
	// A client reconnecting to a server that refuses it.
	var states chan State
	retrying := dial(t, s, "retrying", func(o *Options) {
		states = stateLog(o)
		o.Reconnect = true
		o.BackoffMin, o.BackoffMax = time.Millisecond, 5*time.Millisecond
	})
	retryingConn := recv(t, s.conns, "retrying connection")
	s.set(func(s *fakeServer) {
		s.refuse = &refusal{http.StatusServiceUnavailable, protocol.CodeUnavailable, "draining"}
	})
	retryingConn.ws.NetConn().Close()
	for nextState[Reconnecting](t, states).Err == nil {
	}

	for _, c := range []*Client{idle, waiting, stuck, retrying} {
		closed := make(chan error, 2)
		go func() { closed <- c.Close() }()
		go func() { closed <- c.Close() }()
		for range 2 {
			if err := recv(t, closed, "Close"); err != nil {
				t.Errorf("Close: %v", err)
			}
		}
		if err := c.Close(); err != nil {
			t.Errorf("third Close: %v", err)
		}
		waitClosed(t, c.Done(), "Done after Close")
	}
	if err := recv(t, sendErr, "pending Send"); !errors.Is(err, ErrClosed) {
		t.Errorf("Send pending at Close returned %v, want ErrClosed", err)
	}
	var ce *websocket.CloseError
	if err := recv(t, idleConn.ended, "idle close"); !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure {
		t.Errorf("server saw the idle client end with %v, want close 1000", err)
	}
	if got, _ := idle.LastDisconnect(); !errors.Is(got.Err, ErrClosed) || got.CloseCode != websocket.CloseNormalClosure {
		t.Errorf("LastDisconnect after Close = %+v", got)
	}
	if _, err := idle.Send(ctx, "bob", "late"); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close returned %v, want ErrClosed", err)
	}

	s.close()
	wait.For(t, testTimeout, 10*time.Millisecond, func() error {
		if n := runtime.NumGoroutine(); n > base {
			buf := make([]byte, 1<<16)
			return fmt.Errorf("%d goroutines, %d before the test:\n%s", n, base, buf[:runtime.Stack(buf, true)])
		}
		return nil
	})
}

func TestBackoffIsFullJitterUpToMax(t *testing.T) {
	c := &Client{opts: Options{BackoffMin: 100 * time.Millisecond, BackoffMax: time.Second}}
	for n, ceil := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		ceil *= time.Millisecond
		var top time.Duration
		for range 1000 {
			d := c.backoff(n)
			if d < 0 || d > ceil {
				t.Fatalf("backoff(%d) = %v, outside [0, %v]", n, d, ceil)
			}
			top = max(top, d)
		}
		if top < ceil/2 {
			t.Errorf("backoff(%d) never above %v in 1000 draws: not spread up to %v", n, top, ceil)
		}
	}
	if d := c.backoff(1000); d > time.Second {
		t.Errorf("backoff(1000) = %v, above BackoffMax", d)
	}
}

// BenchmarkSendAsync measures pipelined requests over loopback against the
// fake server, as the load generator sends them. Allocations include the
// fake server's, which runs in the same process.
func BenchmarkSendAsync(b *testing.B) {
	s := &fakeServer{conns: make(chan *fakeConn, 16), node: "n1", auto: true}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	defer s.close()
	c, err := Dial(context.Background(), Options{URL: s.url(), User: "alice"})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	fc := <-s.conns
	go func() {
		for range fc.in {
		}
	}()
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		wg.Add(1)
		err := c.SendAsync(Frame{Type: protocol.TypeSend, To: "bob", Body: "hello"}, func(_ Ack, err error) {
			if err != nil {
				b.Error(err)
			}
			wg.Done()
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
}

// Disconnected says when the server's close frame arrived: no later than
// the server hears this client's answer to it, after which the server may
// forget the connection.
func TestDisconnectedSaysWhenTheServersCloseArrived(t *testing.T) {
	s := newFakeServer(t)
	var states chan State
	dial(t, s, "alice", func(o *Options) { states = stateLog(o) })
	nextState[Connected](t, states)
	fc := recv(t, s.conns, "connection")
	before := time.Now()
	fc.closeWith(websocket.CloseServiceRestart, "service restart")
	recv(t, fc.ended, "the client's answer to the close")
	answered := time.Now()
	d := nextState[Disconnected](t, states)
	if d.At.Before(before) || d.At.After(answered) {
		t.Fatalf("Disconnected.At = %v, want between the close (%v) and the server hearing the answer (%v)",
			d.At.Format(time.StampMicro), before.Format(time.StampMicro), answered.Format(time.StampMicro))
	}
}

func TestPresenceAndTypingArriveOnTheirOwnChannels(t *testing.T) {
	s := newFakeServer(t)
	s.set(func(s *fakeServer) { s.auto = true })
	c := dial(t, s, "carol", func(o *Options) { o.MessageBuffer = 2 })
	fc := recv(t, s.conns, "connection")
	ctx := testCtx(t)
	if err := c.Watch(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if f := recv(t, fc.in, "watch frame"); f.Type != protocol.TypeWatch || !slices.Equal(f.Users, []string{"bob"}) {
		t.Fatalf("the server got %+v, want a watch of bob", f)
	}
	fc.send(map[string]any{"type": protocol.TypePresence, "user": "bob", "online": false, "last_seen": 1732450000123})
	if p := recv(t, c.Presence(), "presence"); p.User != "bob" || p.Online || p.LastSeen != 1732450000123 || p.Received.IsZero() {
		t.Fatalf("presence %+v", p)
	}
	if err := c.Typing(ctx, "bob"); err != nil {
		t.Fatalf("Typing: %v", err)
	}
	if f := recv(t, fc.in, "typing frame"); f.Type != protocol.TypeTyping || f.To != "bob" {
		t.Fatalf("the server got %+v, want typing to bob", f)
	}
	// Typing events nobody reads are dropped past the buffer: they hold up
	// nothing, not even the answers after them.
	for range 5 {
		fc.send(map[string]any{"type": protocol.TypeTyping, "from": "bob", "to": "carol"})
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("a ping behind unread typing events: %v", err)
	}
	if ev := recv(t, c.TypingEvents(), "typing"); ev.From != "bob" || ev.To != "carol" {
		t.Fatalf("typing %+v", ev)
	}
	if n := len(c.TypingEvents()); n != 1 {
		t.Fatalf("%d more typing events buffered, want 1 (a buffer of 2, the rest dropped)", n)
	}
	c.Close()
	if _, ok := <-c.Presence(); ok {
		t.Fatal("Presence is not closed after Close")
	}
}

func TestWatchSplitsLongListsAndWatchesAgainAfterAReconnect(t *testing.T) {
	s := newFakeServer(t)
	s.set(func(s *fakeServer) { s.auto = true; s.maxFrame = 1024 })
	var states chan State
	c := dial(t, s, "carol", func(o *Options) {
		states = stateLog(o)
		o.Reconnect = true
		o.BackoffMin, o.BackoffMax = time.Millisecond, 10*time.Millisecond
	})
	nextState[Connected](t, states)
	fc1 := recv(t, s.conns, "first connection")
	users := make([]string, 150)
	for i := range users {
		users[i] = fmt.Sprintf("contact%03d", i) // 13 bytes each in the frame: about 75 fit 1 KiB
	}
	ctx := testCtx(t)
	if err := c.Watch(ctx, users...); err != nil {
		t.Fatal(err)
	}
	if err := c.Unwatch(ctx, users[:10]...); err != nil {
		t.Fatal(err)
	}
	got, frames := fc1.watching()
	if !slices.Equal(got, users[10:]) || len(frames) < 2 {
		t.Fatalf("watched %d users in frames of %v; want the 140 left, in more than one frame of at most 1 KiB", len(got), frames)
	}
	fc1.closeWith(websocket.CloseServiceRestart, "service restart")
	fc2 := recv(t, s.conns, "second connection")
	nextState[Connected](t, states)
	// Connected comes only after every user was watched again.
	if got, _ := fc2.watching(); !slices.Equal(got, users[10:]) {
		t.Fatalf("watched again before Connected: %d users, want the 140 still watched", len(got))
	}
}

// A frame larger than the client's read limit ends the connection with
// 1009 instead of being read whole into memory: by default, six times the
// welcome's max_frame (a body of max_frame bytes escaped) and at least
// 1 MiB; Options.ReadLimit sets another.
func TestAFrameOverTheReadLimitEndsTheConnection(t *testing.T) {
	s := newFakeServer(t)
	s.set(func(s *fakeServer) { s.maxFrame = 1024 })
	huge := map[string]any{"type": protocol.TypeMsg, "mid": "m1", "from": "mallory", "to": "bob", "body": strings.Repeat("x", 2<<20), "ts": 1}

	c := dial(t, s, "bob", nil)
	fc := recv(t, s.conns, "connection")
	fc.send(huge)
	select {
	case m, ok := <-c.Messages(): // closed once the client stops
		if ok {
			t.Fatalf("the client read a frame of %d bytes whole", len(m.Body))
		}
	case <-time.After(testTimeout):
		t.Fatal("the connection outlived a frame over its read limit")
	}
	if err := recv(t, fc.ended, "the end of the connection"); !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
		t.Fatalf("the client ended the connection with %v, want close 1009", err)
	}

	c = dial(t, s, "bob", func(o *Options) { o.ReadLimit = 4 << 20 })
	fc = recv(t, s.conns, "connection")
	fc.send(huge)
	if m := recv(t, c.Messages(), "a frame under Options.ReadLimit"); len(m.Body) != 2<<20 {
		t.Fatalf("got a body of %d bytes", len(m.Body))
	}
}

// A token never travels in the clear to another host: a ws:// URL or
// fallback that is not loopback is refused before anything is dialled,
// unless Options.AllowInsecureToken says so.
func TestTokenIsNeverSentInTheClearToAnotherHost(t *testing.T) {
	s := newFakeServer(t)
	for _, tc := range []struct {
		url       string
		fallbacks []string
		allow     bool
		ok        bool
	}{
		{s.url(), nil, false, true}, // ws:// to 127.0.0.1
		{"ws://localhost:1/ws", nil, false, true},
		{"ws://[::1]:1/ws", nil, false, true},
		{"wss://chat.example/ws", nil, false, true},
		{"ws://chat.example/ws", nil, false, false},
		{s.url(), []string{"wss://chat.example/ws", "ws://chat.example:8080/ws"}, false, false},
		{"ws://10.0.0.7:8080/ws", nil, false, false},
		{s.url(), []string{"ws://chat.example:8080/ws"}, true, true},
	} {
		o := Options{URL: tc.url, Fallbacks: tc.fallbacks, Token: "secret.jwt.value", AllowInsecureToken: tc.allow}
		_, err := o.endpoints()
		if tc.ok && err != nil {
			t.Errorf("%s %v (allow %v): %v, want the endpoints", tc.url, tc.fallbacks, tc.allow, err)
		}
		if !tc.ok && (err == nil || !errors.Is(err, ErrInsecureToken)) {
			t.Errorf("%s %v: %v, want ErrInsecureToken", tc.url, tc.fallbacks, err)
		}
	}
	// Dial says so at once, having sent nothing.
	if _, err := Dial(testCtx(t), Options{URL: s.url(), Fallbacks: []string{"ws://chat.example/ws"}, Token: "secret.jwt.value"}); !errors.Is(err, ErrInsecureToken) {
		t.Fatalf("Dial with a ws:// fallback to another host: %v, want ErrInsecureToken", err)
	}
	select {
	case fc := <-s.conns:
		t.Fatalf("the token was sent: %v", fc.query)
	default:
	}
	// Without a token nothing is secret: User travels over ws:// anywhere.
	if _, err := (Options{URL: "ws://chat.example/ws", User: "alice"}).endpoints(); err != nil {
		t.Fatalf("a user id over ws://: %v", err)
	}
}
