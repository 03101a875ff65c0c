package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/shardchat/shard/protocol"
)

// errConnGone: the connection died before the request was registered, so
// nothing was sent and the request may go out on the next connection.
var errConnGone = errors.New("client: connection gone")

// aLongTimeAgo is a deadline in the past: setting it aborts a blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// conn is one WebSocket connection of a Client: its reader goroutine, the
// requests awaiting an answer on it, and its single writer.
type conn struct {
	c       *Client
	ws      *websocket.Conn
	welcome Welcome

	// wsem lets one writer at a time at ws (gorilla allows one); a channel
	// rather than a mutex so that waiting for it can end with a context.
	wsem chan struct{}

	mu      sync.Mutex
	pending map[string]func(Ack, error) // by frame id; nil once dead
	next    uint64                      // last automatic id number
	dead    bool                        // the reader has exited or is exiting
	cause   error                       // the write error that broke ws, if one did

	done    chan struct{} // closed once the reader has exited and pending is answered
	disc    Disconnected  // how it ended; set before done closes
	closeAt time.Time     // when the server's close frame arrived; the reader's own
}

// connect dials, waits for the welcome and starts the reader.
func (c *Client) connect(ctx context.Context) (*conn, error) {
	// Each attempt after the first goes to the next endpoint in turn.
	endpoint := c.endpoints[int(c.attempts.Add(1)-1)%len(c.endpoints)]
	ws, resp, err := c.opts.Dialer.DialContext(ctx, endpoint, nil)
	if err != nil {
		if errors.Is(err, websocket.ErrBadHandshake) && resp != nil {
			return nil, handshakeError(resp.StatusCode, resp.Body)
		}
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("client: dial %s: %w", endpoint, err)
	}
	ws.SetReadLimit(welcomeReadLimit)
	w, err := readWelcome(ctx, ws)
	if err != nil {
		ws.Close()
		return nil, fmt.Errorf("client: dial %s: %w", endpoint, err)
	}
	ws.SetReadLimit(c.opts.readLimit(w))
	cn := &conn{
		c:       c,
		ws:      ws,
		welcome: w,
		wsem:    make(chan struct{}, 1),
		pending: make(map[string]func(Ack, error)),
		done:    make(chan struct{}),
	}
	answerClose := ws.CloseHandler()
	ws.SetCloseHandler(func(code int, text string) error {
		cn.closeAt = time.Now()
		return answerClose(code, text)
	})
	c.wg.Add(1)
	go cn.read()
	return cn, nil
}

// readWelcome reads the first frame, which docs/protocol.md §2.6 makes the
// welcome, within ctx.
func readWelcome(ctx context.Context, ws *websocket.Conn) (Welcome, error) {
	// Cut the read when ctx ends (its deadline included), so that the error
	// is ctx's and not a bare timeout.
	stop := context.AfterFunc(ctx, func() { ws.NetConn().SetReadDeadline(aLongTimeAgo) })
	typ, data, err := ws.ReadMessage()
	if !stop() {
		return Welcome{}, fmt.Errorf("waiting for welcome: %w", ctx.Err())
	}
	if err != nil {
		return Welcome{}, fmt.Errorf("waiting for welcome: %w", err)
	}
	var f struct {
		Type string `json:"type"`
		Welcome
	}
	if typ != websocket.TextMessage || json.Unmarshal(data, &f) != nil || f.Type != protocol.TypeWelcome {
		return Welcome{}, fmt.Errorf("first frame is not a welcome: %.100q", data)
	}
	return f.Welcome, nil
}

// handshakeError reads the error body of a refused upgrade (docs/protocol.md
// §2.5; gorilla keeps its first KiB).
func handshakeError(status int, body io.Reader) *HandshakeError {
	e := &HandshakeError{Status: status}
	var b struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if body != nil && json.NewDecoder(body).Decode(&b) == nil {
		e.Code, e.Message = b.Error.Code, b.Error.Message
	}
	return e
}

// read is the connection's reader goroutine: it hands msg frames to
// Messages(), presence to Presence(), typing to TypingEvents() and answers
// to their requests, until the connection ends.
func (cn *conn) read() {
	defer cn.c.wg.Done()
	var err error
	for {
		var typ int
		var data []byte
		typ, data, err = cn.ws.ReadMessage()
		if err != nil {
			break
		}
		if typ != websocket.TextMessage {
			continue // the server sends text frames only (docs/protocol.md §3.1)
		}
		var f inbound
		if json.Unmarshal(data, &f) != nil {
			continue // a server bug; there is nobody to tell
		}
		switch f.Type {
		case protocol.TypeMsg:
			m := Msg{Mid: f.Mid, From: f.From, To: f.To, Room: f.Room, Group: f.Group, Body: f.Body,
				Event: f.Event, User: f.User, Admin: f.Admin, TS: f.TS, Seq: f.Seq, Received: time.Now()}
			// Blocks while Messages() is full: see Options.MessageBuffer.
			select {
			case cn.c.msgs <- m:
			case <-cn.c.ctx.Done(): // closing: nobody is owed more messages
			}
		case protocol.TypePresence:
			p := Presence{User: f.User, Online: f.Online, LastSeen: f.LastSeen, Received: time.Now()}
			// Blocks as msg frames do: a change is never dropped.
			select {
			case cn.c.presence <- p:
			case <-cn.c.ctx.Done():
			}
		case protocol.TypeTyping:
			ev := Typing{From: f.From, To: f.To, Room: f.Room, Group: f.Group, Received: time.Now()}
			select {
			case cn.c.typing <- ev:
			default: // ephemeral: an application that does not read them loses them
			}
		case protocol.TypeAck:
			cn.answer(f.ID, Ack{ID: f.ID, Status: f.Status, Recipients: f.Recipients, Seq: f.Seq, Last: f.Last, More: f.More,
				Conversations: f.Conversations}, nil)
		case protocol.TypeReceipt:
			select { // never held up by an application that does not read them
			case cn.c.receipts <- Receipt{By: f.By, With: f.With, Group: f.Group, Seq: f.Seq}:
			default:
			}
		case protocol.TypePong:
			cn.answer(f.ID, Ack{ID: f.ID, Status: StatusPong}, nil)
		case protocol.TypeError:
			// An error without id answers a frame whose id was malformed,
			// which request never sends: it matches nothing.
			cn.answer(f.ID, Ack{}, &Error{ID: f.ID, Code: f.Code, Message: f.Message})
		}
		// Other types (a second welcome, frames added to the protocol later)
		// are not this client's business.
	}
	cn.finish(err)
}

// answer hands the answer to the request with id, if one awaits it.
func (cn *conn) answer(id string, a Ack, err error) {
	if done := cn.take(id); done != nil {
		done(a, err)
	}
}

// take removes and returns the request awaiting id, nil if none does.
func (cn *conn) take(id string) func(Ack, error) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	done := cn.pending[id]
	delete(cn.pending, id)
	return done
}

// finish ends the connection after its reader has stopped: it stops being the
// client's current connection, and every request still awaiting an answer
// gets ErrClosed.
func (cn *conn) finish(readErr error) {
	at := cn.closeAt
	if at.IsZero() {
		at = time.Now()
	}
	c := cn.c
	c.mu.Lock()
	cn.mu.Lock()
	cn.dead = true
	pending, cause := cn.pending, cn.cause
	cn.pending = nil
	cn.mu.Unlock()
	if c.conn == cn {
		c.conn = nil
		c.signal()
	}
	c.mu.Unlock()

	cn.ws.Close()
	for _, done := range pending {
		done(Ack{}, ErrClosed)
	}
	if cause == nil {
		cause = readErr
	}
	cn.disc = disconnected(cause)
	cn.disc.At = at
	close(cn.done)
}

// isDead reports whether the reader has stopped.
func (cn *conn) isDead() bool {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.dead
}

// request registers done as the answer to f and writes f. After a nil
// return done is called exactly once: with the answer, or with ErrClosed if
// the connection ends first. After an error it is never called.
func (cn *conn) request(ctx context.Context, f Frame, done func(Ack, error)) error {
	if f.ID != "" && !ValidID(f.ID) {
		return fmt.Errorf("client: frame id %q is not 1 to 64 characters of A-Z a-z 0-9 _ . @ -", f.ID)
	}
	cn.mu.Lock()
	if cn.dead {
		cn.mu.Unlock()
		return errConnGone
	}
	if f.ID == "" {
		// Skip numbers that a caller-chosen id has taken.
		for {
			cn.next++
			f.ID = "c" + strconv.FormatUint(cn.next, 10)
			if _, taken := cn.pending[f.ID]; !taken {
				break
			}
		}
	} else if _, taken := cn.pending[f.ID]; taken {
		cn.mu.Unlock()
		return fmt.Errorf("client: frame id %q already awaits an answer", f.ID)
	}
	cn.pending[f.ID] = done
	cn.mu.Unlock()

	data, err := json.Marshal(f) // strings only: cannot fail
	if err != nil {
		cn.take(f.ID)
		return err
	}
	if limit := cn.welcome.MaxFrame; limit > 0 && len(data) > limit {
		if cn.take(f.ID) != nil {
			return fmt.Errorf("%w: %d bytes, %s takes at most %d", ErrFrameTooLarge, len(data), cn.welcome.Node, limit)
		}
		return nil // the end of the connection has answered it
	}
	started, err := cn.write(ctx, data)
	switch {
	case err == nil:
		return nil
	case !started:
		// Nothing went out. Take the request back, unless the end of the
		// connection has already answered it.
		if cn.take(f.ID) != nil {
			return err
		}
		return nil
	default:
		// The frame may be half written, which a WebSocket stream cannot
		// take back: give the connection up; finish answers done.
		cn.fail(err)
		return nil
	}
}

// write sends one text frame. The wait for the writer's turn ends with ctx;
// the write itself with ctx too (which costs the connection, see request),
// and after writeTimeout at the latest. started reports whether the write
// began.
func (cn *conn) write(ctx context.Context, data []byte) (started bool, err error) {
	select {
	case cn.wsem <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	case <-cn.done:
		return false, ErrClosed
	}
	defer func() { <-cn.wsem }()
	if err := ctx.Err(); err != nil {
		return false, err
	}
	cn.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	if ctx.Done() != nil {
		// gorilla sets the socket's deadline before each write, so this
		// cuts a write under way; one that starts just as ctx ends still
		// goes out, within writeTimeout.
		stop := context.AfterFunc(ctx, func() { cn.ws.NetConn().SetWriteDeadline(aLongTimeAgo) })
		defer stop()
	}
	return true, cn.ws.WriteMessage(websocket.TextMessage, data)
}

// fail breaks the connection after a write error; the reader then finishes.
func (cn *conn) fail(err error) {
	cn.mu.Lock()
	if cn.cause == nil {
		cn.cause = err
	}
	cn.mu.Unlock()
	cn.ws.Close()
}

// shutdown closes the connection normally (1000): it sends the close frame,
// waits up to closeTimeout for the server's answer, then drops the socket.
func (cn *conn) shutdown() {
	deadline := time.Now().Add(closeTimeout)
	msg := websocket.FormatCloseMessage(protocol.CloseNormal.Code, protocol.CloseNormal.Text)
	if cn.ws.WriteControl(websocket.CloseMessage, msg, deadline) == nil {
		t := time.NewTimer(time.Until(deadline))
		select {
		case <-cn.done:
		case <-t.C:
		}
		t.Stop()
	}
	cn.ws.Close()
}
