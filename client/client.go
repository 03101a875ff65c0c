// Package client is the Go client of shard: it dials a node, speaks the
// frames of docs/protocol.md §3 and §4, matches every answer to its request
// by id, and can reconnect with jittered backoff, join its rooms again and
// watch its users again.
//
// Of this module it imports only protocol (the frames' vocabulary, which
// imports nothing), so that users can take it alone; and it never leaves a
// request unanswered or answers one twice.
package client

import (
	"context"
	crand "crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardchat/shard/protocol"
)

// ErrClosed answers a request whose connection ended before its answer came
// (the server closed it, the network failed, or Close was called), and any
// call made after the client has stopped. Whether the server acted on such a
// request is unknown.
var ErrClosed = errors.New("client: connection closed")

// ErrNotConnected is returned by SendAsync while the client is between
// connections, reconnecting. Nothing was sent.
var ErrNotConnected = errors.New("client: not connected")

// ErrInsecureToken is returned by Dial, wrapped with the endpoint, when
// Options.Token would travel over ws:// to a host that is not loopback:
// anyone on the path could read it and connect as its user. Nothing was
// sent. Use wss://, or set Options.AllowInsecureToken.
var ErrInsecureToken = errors.New("client: the token would be sent in the clear")

// ErrFrameTooLarge is returned, wrapped with the sizes, for a frame larger
// than the node's limit (Welcome.MaxFrame). Nothing was sent and the
// connection stays.
var ErrFrameTooLarge = errors.New("client: frame too large for the node")

// Client is a connection to the shard cluster, replaced by a new one after a
// disconnect when Options.Reconnect is set. Its methods are safe for
// concurrent use.
type Client struct {
	opts      Options
	endpoints []string     // URL, then Fallbacks, with the user or token in their query
	attempts  atomic.Int64 // connects so far: picks the next endpoint

	msgs chan Msg // see Options.MessageBuffer; closed when the client stops
	// receipts: see Receipts.
	receipts chan Receipt
	presence chan Presence // as msgs
	typing   chan Typing   // as receipts: a full one drops
	done     chan struct{} // closed when the client has stopped for good

	// ctx ends on Close (or when the client stops): it stops dialing,
	// backoff waits and callers waiting for a connection.
	ctx       context.Context
	cancel    context.CancelFunc
	closeOnce sync.Once
	wg        sync.WaitGroup // the supervisor and the readers

	mu      sync.Mutex
	conn    *conn         // the current connection; nil between connections and once stopped
	changed chan struct{} // closed and replaced when conn changes or the client stops
	closing bool          // Close was called
	stopped bool          // no connection will come any more
	welcome Welcome       // of the last connection
	rooms   map[string]struct{}
	watched map[string]struct{} // users watched: watched again after a reconnect
	last    *Disconnected
}

// Dial connects to o.URL and returns once the server's welcome has arrived,
// so that from then on messages sent from any node reach this client. A
// refused upgrade returns a *HandshakeError carrying the HTTP status and the
// error code (docs/protocol.md §2.5). A token that one of the endpoints
// would carry in the clear to another host returns ErrInsecureToken, with
// nothing sent. ctx bounds the dial and the wait for the welcome only.
func Dial(ctx context.Context, o Options) (*Client, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	endpoints, err := o.endpoints()
	if err != nil {
		return nil, err
	}
	c := &Client{
		opts:      o,
		endpoints: endpoints,
		msgs:      make(chan Msg, o.MessageBuffer),
		receipts:  make(chan Receipt, o.MessageBuffer),
		presence:  make(chan Presence, o.MessageBuffer),
		typing:    make(chan Typing, o.MessageBuffer),
		watched:   make(map[string]struct{}),
		done:      make(chan struct{}),
		changed:   make(chan struct{}),
		rooms:     make(map[string]struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	cn, err := c.connect(ctx)
	if err != nil {
		c.cancel()
		return nil, err
	}
	c.welcome = cn.welcome
	if c.publish(cn) == nil {
		c.report(Connected{Welcome: cn.welcome})
	}
	// Should cn already be dead, the supervisor sees it at once.
	c.wg.Add(1)
	go c.supervise(cn)
	return c, nil
}

// Welcome returns the welcome of the current connection (of the last one
// while reconnecting).
func (c *Client) Welcome() Welcome {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.welcome
}

// Messages returns the incoming chat messages, in the order the server sent
// them. The channel is closed when the client stops. It must be drained: see
// Options.MessageBuffer.
func (c *Client) Messages() <-chan Msg { return c.msgs }

// Presence returns the presence of the users this client watches (Watch):
// one state for each at once, then one at every change, in the order the
// server sent them; after a reconnect, each user's state again. The channel
// is closed when the client stops. A client that watches users must drain
// it, as Messages.
func (c *Client) Presence() <-chan Presence { return c.presence }

// TypingEvents returns who is typing to this user, or in its rooms and
// groups. The channel is closed when the client stops; events that find it
// full are dropped (Options.MessageBuffer).
func (c *Client) TypingEvents() <-chan Typing { return c.typing }

// Done is closed when the client has stopped for good: after Close, or after
// a disconnect when Options.Reconnect is off.
func (c *Client) Done() <-chan struct{} { return c.done }

// LastDisconnect returns how the last connection ended, with its close
// code; false if no connection has ended yet.
func (c *Client) LastDisconnect() (Disconnected, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil {
		return Disconnected{}, false
	}
	return *c.last, true
}

// Send sends body to user to and waits for the answer: an Ack with status
// delivered or offline (stored with a message store), or an *Error for an
// error frame. ErrClosed means the connection ended before the answer; with
// Options.Reconnect and a node that keeps messages (Welcome.Store), Send
// instead sends again, with the same key, on the next connection, and the
// message is stored once. While the client is reconnecting, Send waits for
// the new connection; ctx bounds every wait. A frame larger than the node
// takes is not sent: ErrFrameTooLarge.
func (c *Client) Send(ctx context.Context, to, body string) (Ack, error) {
	return c.do(ctx, Frame{Type: protocol.TypeSend, To: to, Body: body, Key: newKey()}, nil)
}

// SendRoom sends body to room, which this client must have joined, and waits
// for the answer: an Ack with status sent and the number of recipients, or
// an *Error (not_member, ...). Otherwise as Send.
func (c *Client) SendRoom(ctx context.Context, room, body string) (Ack, error) {
	return c.do(ctx, Frame{Type: protocol.TypeSend, Room: room, Body: body, Key: newKey()}, nil)
}

// Sync asks for one page of this user's inbox after offset after: the
// messages arrive on Messages, in order, before the Ack, whose Last is the
// newest offset and More whether another page follows (sync again after the
// last Seq received). It needs a cluster with a message store.
func (c *Client) Sync(ctx context.Context, after int64) (Ack, error) {
	return c.do(ctx, Frame{Type: protocol.TypeSync, After: after}, nil)
}

// JoinSince joins room and asks for its messages after offset since first:
// they arrive on Messages before live ones, with no gap and no duplicate
// between the two. Without a store it is Join. A reconnect joins the room
// again without since: call JoinSince again if the gap matters.
func (c *Client) JoinSince(ctx context.Context, room string, since int64) error {
	return c.join(ctx, Frame{Type: protocol.TypeJoin, Room: room, Since: &since})
}

// newKey is a random idempotency key: 16 characters of [0-9a-v].
func newKey() string {
	var b [10]byte
	crand.Read(b[:])
	return base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])
}

// Join joins room and waits for the owner's ok. A joined room is remembered
// and joined again after each reconnect, until Leave. Otherwise as Send.
func (c *Client) Join(ctx context.Context, room string) error {
	return c.join(ctx, Frame{Type: protocol.TypeJoin, Room: room})
}

func (c *Client) join(ctx context.Context, f Frame) error {
	room := f.Room
	_, err := c.do(ctx, f, func(Ack) {
		// Called by the reader before the connection can be seen to end,
		// so that a reconnect right after finds the room.
		c.mu.Lock()
		c.rooms[room] = struct{}{}
		c.mu.Unlock()
	})
	return err
}

// Leave leaves room and waits for the owner's ok. The room is forgotten at
// once, so not joined again by a reconnect, whatever the answer. Otherwise as
// Send.
func (c *Client) Leave(ctx context.Context, room string) error {
	c.mu.Lock()
	delete(c.rooms, room)
	c.mu.Unlock()
	_, err := c.do(ctx, Frame{Type: protocol.TypeLeave, Room: room}, nil)
	return err
}

// Typing tells user to's connections that this user is typing. The server
// forwards at most one per conversation every 2 s and drops the others (the
// answer is ok all the same), so calling it at every keystroke is fine.
// Otherwise as Send, but never sent again.
func (c *Client) Typing(ctx context.Context, to string) error {
	_, err := c.do(ctx, Frame{Type: protocol.TypeTyping, To: to}, nil)
	return err
}

// TypingRoom is Typing to the members of room, which this client must have
// joined.
func (c *Client) TypingRoom(ctx context.Context, room string) error {
	_, err := c.do(ctx, Frame{Type: protocol.TypeTyping, Room: room}, nil)
	return err
}

// TypingGroup is Typing to the members of group.
func (c *Client) TypingGroup(ctx context.Context, group string) error {
	_, err := c.do(ctx, Frame{Type: protocol.TypeTyping, Group: group}, nil)
	return err
}

// Watch asks for the presence of users: once the server's ok has come, each
// user's state arrives on Presence, then every change of it. Watched users
// are remembered and watched again after each reconnect, until Unwatch. A
// long list goes in several frames, each within the node's frame limit and
// protocol.MaxListLen; the node takes at most --max-watch (1000)
// users per connection, past which it answers bad_request. Otherwise as
// Send; an error leaves the users of the frames answered before it
// watched.
func (c *Client) Watch(ctx context.Context, users ...string) error {
	for _, batch := range usersFrames(users, c.Welcome().MaxFrame) {
		_, err := c.do(ctx, Frame{Type: protocol.TypeWatch, Users: batch}, func(Ack) {
			c.mu.Lock()
			for _, u := range batch {
				c.watched[u] = struct{}{}
			}
			c.mu.Unlock()
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Unwatch stops the presence of users. They are forgotten at once, so not
// watched again by a reconnect, whatever the answer. Otherwise as Watch.
func (c *Client) Unwatch(ctx context.Context, users ...string) error {
	c.mu.Lock()
	for _, u := range users {
		delete(c.watched, u)
	}
	c.mu.Unlock()
	for _, batch := range usersFrames(users, c.Welcome().MaxFrame) {
		if _, err := c.do(ctx, Frame{Type: protocol.TypeUnwatch, Users: batch}, nil); err != nil {
			return err
		}
	}
	return nil
}

// usersFrames splits users into the lists of frames that fit the node's
// frame limit (64 KiB when the node does not say) and
// protocol.MaxListLen.
func usersFrames(users []string, limit int) [][]string {
	if limit <= 0 {
		limit = 65536
	}
	const overhead = 64 // {"type":"unwatch","id":"c123456789","users":[]}
	var out [][]string
	var cur []string
	size := overhead
	for _, u := range users {
		n := len(u) + 3 // "u",
		if len(cur) > 0 && (len(cur) == protocol.MaxListLen || size+n > limit) {
			out = append(out, cur)
			cur, size = nil, overhead
		}
		cur = append(cur, u)
		size += n
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// Ping sends an application-level ping and waits for the pong. Otherwise as
// Send.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.do(ctx, Frame{Type: protocol.TypePing}, nil)
	return err
}

// SendAsync writes f on the current connection and returns without waiting
// for the answer: requests pipeline, as the load generator needs. The answer
// goes to done: the Ack (Status "pong" for a ping), an *Error for an error
// frame, or ErrClosed if the connection ends first. SendAsync never sends
// again by itself: to resend a send safely after ErrClosed, give f a Key of
// your own and send f again with it.
//
// If SendAsync returns nil, done is called exactly once; if it returns an
// error, done is never called. Errors: ErrClosed once the client has stopped,
// ErrNotConnected while reconnecting, ErrFrameTooLarge, and an error for an
// invalid f.ID or one that already awaits an answer. done runs on the
// connection's reader goroutine: it must be quick, or it holds up every other
// answer and message. done may be nil.
//
// SendAsync returns at once unless the socket itself pushes back (the server
// reads slower than this client writes); a write stalled that long gives the
// connection up after 10 s.
func (c *Client) SendAsync(f Frame, done func(Ack, error)) error {
	if done == nil {
		done = func(Ack, error) {}
	}
	if f.Type == protocol.TypeSend && f.Key == "" {
		f.Key = newKey()
	}
	c.mu.Lock()
	cn, closed := c.conn, c.closing || c.stopped
	c.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case cn == nil:
		return ErrNotConnected
	}
	err := cn.request(context.Background(), f, done)
	if errors.Is(err, errConnGone) {
		return ErrNotConnected
	}
	return err
}

// Close closes the connection normally (1000), stops reconnecting, answers
// every pending request with ErrClosed, closes Messages and Done, and
// returns once every goroutine of the client has stopped. It may be called
// any number of times; it returns nil.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closing = true
		cn := c.conn
		c.mu.Unlock()
		c.cancel()
		if cn != nil {
			cn.shutdown()
		}
	})
	c.wg.Wait()
	return nil
}

type result struct {
	ack Ack
	err error
}

// do sends f on the current connection, waiting for one if the client is
// reconnecting, and waits for its answer. onAck, if set, runs on the reader
// with a successful answer.
//
// A send whose connection ends before its answer, because its node went
// away or cut the connection (not because of the frame itself, as with
// 1009), goes again with its key on the next connection, if both nodes say
// they keep messages: the server answers a key it has seen like the first
// attempt and stores the message once. Without a store a resend could
// arrive twice, so ErrClosed is the answer then, as it is after maxResends
// or once no connection came within resendWindow of the first attempt.
func (c *Client) do(ctx context.Context, f Frame, onAck func(Ack)) (Ack, error) {
	first := time.Now() // no later than the server first saw the key
	cn, r := c.attempt(ctx, f, onAck, time.Time{})
	resent := false
	for range maxResends {
		if !c.resendable(f, cn, r.err) {
			break
		}
		resent = true
		cn, r = c.attempt(ctx, f, onAck, first.Add(resendWindow))
	}
	if resent && r.err != nil && ctx.Err() == nil && !errors.Is(r.err, ErrClosed) {
		// A resend that could not go or was refused (the window passed,
		// the new node keeps nothing or takes smaller frames, an error
		// answer) leaves the first attempt's fate unknown: it may have been
		// stored, and a new Send would store it again.
		r.err = fmt.Errorf("%w (the resend: %v)", ErrClosed, r.err)
	}
	return r.ack, r.err
}

// resendable reports whether f, sent on cn and answered err, may go again.
func (c *Client) resendable(f Frame, cn *conn, err error) bool {
	if !errors.Is(err, ErrClosed) || cn == nil || !cn.welcome.Store || !c.opts.Reconnect ||
		f.Type != protocol.TypeSend || f.Key == "" {
		return false
	}
	<-cn.done // closed right after the pending requests were answered
	// 1009 is the one close the frame itself causes: it would come again.
	return cn.disc.CloseCode != protocol.CloseTooBig.Code
}

// attempt is one try of do, on one connection, which it returns (nil when
// f went out on none). A resend (by set) waits for a connection only until
// by, and goes only to a node that keeps messages.
func (c *Client) attempt(ctx context.Context, f Frame, onAck func(Ack), by time.Time) (*conn, result) {
	ch := make(chan result, 1)
	done := func(a Ack, err error) {
		if err == nil && onAck != nil {
			onAck(a)
		}
		ch <- result{a, err}
	}
	wait := ctx
	if !by.IsZero() {
		var cancel context.CancelFunc
		wait, cancel = context.WithDeadline(ctx, by)
		defer cancel()
	}
	var cn *conn
	for {
		var err error
		if cn, err = c.current(wait); err != nil {
			return nil, result{err: err}
		}
		if !by.IsZero() && !cn.welcome.Store {
			return nil, result{err: errors.New("the new node keeps no messages")}
		}
		err = cn.request(ctx, f, done)
		if errors.Is(err, errConnGone) {
			continue // it ended before f went out: f may go on the next one
		}
		if err != nil {
			return nil, result{err: err}
		}
		break
	}
	select {
	case r := <-ch:
		return cn, r
	case <-ctx.Done():
		// The request stays registered: its answer, when it comes, is
		// dropped (but a join's ok still makes the room remembered).
		select {
		case r := <-ch:
			return cn, r
		default:
			return cn, result{err: ctx.Err()}
		}
	}
}

// current returns the current connection, waiting for one while the client
// reconnects.
func (c *Client) current(ctx context.Context) (*conn, error) {
	for {
		c.mu.Lock()
		cn, changed, closed := c.conn, c.changed, c.closing || c.stopped
		c.mu.Unlock()
		switch {
		case closed:
			return nil, ErrClosed
		case cn != nil:
			return cn, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.ctx.Done():
			return nil, ErrClosed
		}
	}
}

// signal wakes the callers waiting in current. c.mu must be held.
func (c *Client) signal() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// publish makes cn the current connection, unless Close was called or cn has
// already ended.
func (c *Client) publish(cn *conn) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return ErrClosed
	}
	if cn.isDead() {
		return errConnGone
	}
	c.conn = cn
	c.welcome = cn.welcome
	c.signal()
	return nil
}

func (c *Client) report(s State) {
	if c.opts.OnState != nil {
		c.opts.OnState(s)
	}
}

// supervise owns the client's lifetime: it waits for each connection to end,
// reports it, and reconnects or stops.
func (c *Client) supervise(cn *conn) {
	defer c.wg.Done()
	for cn != nil {
		<-cn.done
		d := cn.disc
		if c.ctx.Err() != nil {
			d = Disconnected{Err: ErrClosed, CloseCode: protocol.CloseNormal.Code, At: d.At}
		}
		c.mu.Lock()
		c.last = &d
		c.mu.Unlock()
		c.report(d)
		if !c.opts.Reconnect || c.ctx.Err() != nil {
			break
		}
		cn = c.reconnect()
	}
	c.mu.Lock()
	c.stopped = true
	c.signal()
	c.mu.Unlock()
	c.cancel()
	close(c.msgs) // every reader has finished: none can send any more
	close(c.presence)
	close(c.typing)
	close(c.done)
}

// reconnect dials until a connection is up and has joined every remembered
// room again, with full-jitter exponential backoff. It returns nil when the
// client is closed first.
func (c *Client) reconnect() *conn {
	var lastErr error
	for attempt := 0; ; attempt++ {
		delay := c.backoff(attempt)
		c.report(Reconnecting{Attempt: attempt + 1, Delay: delay, Err: lastErr})
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-c.ctx.Done():
			t.Stop()
			return nil
		}
		cn, err := c.connect(c.ctx)
		if err != nil {
			if c.ctx.Err() != nil {
				return nil
			}
			lastErr = err
			continue
		}
		err = c.rejoin(cn)
		if err == nil {
			err = c.publish(cn)
		}
		if err != nil {
			cn.shutdown()
			<-cn.done
			if c.ctx.Err() != nil {
				return nil
			}
			lastErr = err
			continue
		}
		c.report(Connected{Welcome: cn.welcome})
		return cn
	}
}

// backoff is the wait before retry n (from 0): full jitter, uniform in
// [0, min(BackoffMax, BackoffMin*2^n)], so that the clients of a drained
// node spread out instead of arriving together.
func (c *Client) backoff(n int) time.Duration {
	ceil := c.opts.BackoffMin
	for i := 0; i < n && ceil < c.opts.BackoffMax; i++ {
		ceil *= 2
	}
	ceil = min(ceil, c.opts.BackoffMax)
	return rand.N(ceil + 1)
}

// rejoin joins, on the new connection cn, every room the client had joined,
// one at a time, each waiting for its ok, then watches its users again.
func (c *Client) rejoin(cn *conn) error {
	c.mu.Lock()
	rooms := make([]string, 0, len(c.rooms))
	for r := range c.rooms {
		rooms = append(rooms, r)
	}
	users := make([]string, 0, len(c.watched))
	for u := range c.watched {
		users = append(users, u)
	}
	c.mu.Unlock()
	for _, room := range rooms {
		err := c.renew(cn, Frame{Type: protocol.TypeJoin, Room: room}, func() { delete(c.rooms, room) })
		if err != nil {
			return err
		}
	}
	for _, batch := range usersFrames(users, cn.welcome.MaxFrame) {
		err := c.renew(cn, Frame{Type: protocol.TypeWatch, Users: batch}, func() {
			for _, u := range batch {
				delete(c.watched, u)
			}
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// renew sends f, a join or a watch the previous connection held, on cn. A
// refusal to retry later (rate_limited, unavailable) is retried on the same
// connection after a backoff; a refusal for good, which docs/protocol.md
// §3.3 and §3.8 do not foresee for what was accepted before, runs forget
// under the client's lock.
func (c *Client) renew(cn *conn, f Frame, forget func()) error {
	wait := c.opts.BackoffMin
	for {
		err := c.requestOn(cn, f)
		var e *Error
		if err == nil {
			return nil
		}
		if !errors.As(err, &e) {
			return err
		}
		if e.Code != protocol.CodeRateLimited && e.Code != protocol.CodeUnavailable {
			c.mu.Lock()
			forget()
			c.mu.Unlock()
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-cn.done:
			t.Stop()
			return ErrClosed
		case <-c.ctx.Done():
			t.Stop()
			return ErrClosed
		}
		wait = min(2*wait, c.opts.BackoffMax)
	}
}

// requestOn sends f on cn, which is not yet the current connection, and
// waits for its answer.
func (c *Client) requestOn(cn *conn, f Frame) error {
	ctx, cancel := context.WithTimeout(c.ctx, rejoinTimeout)
	defer cancel()
	ch := make(chan error, 1)
	err := cn.request(ctx, f, func(_ Ack, err error) { ch <- err })
	if errors.Is(err, errConnGone) {
		return ErrClosed
	}
	if err != nil {
		return err
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
