package client

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/gorilla/websocket"
)

// Defaults and bounds of a Client.
const (
	// DefaultHandshakeTimeout bounds the upgrade when Options.Dialer is nil.
	DefaultHandshakeTimeout = 5 * time.Second
	// DefaultBackoffMin and DefaultBackoffMax bound the reconnect backoff:
	// the first retry comes within 100 ms (a drained node's clients spread
	// over that), a dead cluster is asked at most every 5 s.
	DefaultBackoffMin = 100 * time.Millisecond
	DefaultBackoffMax = 5 * time.Second
	// DefaultMessageBuffer is the default Options.MessageBuffer: 1024 msg
	// frames, the server's default --send-queue, so that the client holds as
	// much as the server would have queued for it.
	DefaultMessageBuffer = 1024

	// welcomeReadLimit bounds the first frame: a welcome is about 100
	// bytes.
	welcomeReadLimit = 64 << 10
	// minReadLimit is the least DefaultReadLimit gives: a conversations
	// answer lists up to 2,000 conversations of about 200 bytes
	// (docs/protocol.md §8).
	minReadLimit = 1 << 20

	// writeTimeout bounds one frame write. A write that stalls this long
	// means the server has stopped reading: the connection is given up.
	writeTimeout = 10 * time.Second
	// closeTimeout is how long Close waits for the server to answer its close
	// frame before it drops the TCP connection.
	closeTimeout = time.Second
	// rejoinTimeout bounds the answer to one join or watch sent while
	// reconnecting; docs/protocol.md §6.1 promises one, so silence means the
	// new connection is broken.
	rejoinTimeout = 10 * time.Second
	// resendWindow bounds how long after its first attempt Send resends a
	// message: the server recognises a key for 5 minutes.
	resendWindow = 4 * time.Minute
	// maxResends bounds the resends of one message: a node drained while
	// it held the message, then maybe the next one too.
	maxResends = 3
)

// Options configures a Client. Only URL is required.
type Options struct {
	// URL is the WebSocket endpoint of a node or of a load balancer in front
	// of the nodes, e.g. "ws://127.0.0.1:8080/ws". The user or token is added
	// to its query; other query parameters are kept. Required.
	URL string

	// Fallbacks are further endpoints, like URL, that reconnects try in
	// turn after URL: the nodes of a cluster without a load balancer in
	// front. Default none: every attempt goes to URL.
	Fallbacks []string

	// User is the user id for a server in development mode (no
	// --auth-secret), sent as ?user=. Ignored when Token is set. Default
	// empty.
	User string

	// Token is a JWT (HS256, sub = user id) sent as ?token=. Wins over User.
	// Default empty.
	Token string

	// AllowInsecureToken lets Token travel over ws:// to a host that is not
	// loopback, where anyone on the path can read it and connect as its
	// user (a private network one trusts, a proxy on the same host). Default
	// false: Dial refuses such a URL or fallback with ErrInsecureToken.
	AllowInsecureToken bool

	// ReadLimit is the largest frame, in bytes, the client reads from the
	// server; a larger one ends the connection with 1009, rather than being
	// held whole in memory. Default: DefaultReadLimit for the node's
	// max_frame (Welcome.MaxFrame).
	ReadLimit int64

	// Dialer opens every connection, reconnects included. Set its NetDial or
	// NetDialContext to bind a LocalAddr, e.g. to spread many clients over
	// source addresses. Default: a Dialer with a 5 s handshake timeout that
	// honours the proxy environment variables.
	Dialer *websocket.Dialer

	// Reconnect makes the client reconnect after every close it did not ask
	// for (1012 from a draining node, a dead node, a 1008 slow-consumer cut,
	// a network error), retrying with backoff until Close, and join its rooms
	// again before it reports Connected. Default false: the first disconnect
	// ends the client (Done and Messages close). The first Dial is never
	// retried: its error is returned.
	Reconnect bool

	// BackoffMin and BackoffMax shape the reconnect backoff, full jitter:
	// before retry n (counted from 0) the client waits a uniformly random
	// time in [0, min(BackoffMax, BackoffMin*2^n)]. Defaults 100 ms and 5 s.
	BackoffMin, BackoffMax time.Duration

	// MessageBuffer is how many incoming msg frames wait for Messages(),
	// and, each on their own, presence frames for Presence() and typing
	// frames for TypingEvents(). Default 1024.
	//
	// Typing frames past it are dropped: they are ephemeral, and an
	// application need not read them. Presence frames, like messages, wait.
	//
	// When it is full the client stops reading its socket until the
	// application receives again: nothing is dropped, but answers (acks,
	// pongs, errors) wait behind the unread messages, and the server, whose
	// bounded send queue to this connection then fills, closes the
	// connection as a slow consumer (1008). An application that does not
	// want messages must still drain Messages(), and one that watches users
	// Presence().
	MessageBuffer int

	// OnState, if set, is told every change of the connection: Connected
	// (after Dial, and after each reconnect once the rooms are joined
	// again), Disconnected (with the close code), Reconnecting (before each
	// attempt). Calls are serial and come from the client's own goroutines:
	// it must return quickly and must not call Close (Close waits for those
	// goroutines). Default nil.
	OnState func(State)
}

// withDefaults checks o and fills in the defaults.
func (o Options) withDefaults() (Options, error) {
	if o.URL == "" {
		return o, fmt.Errorf("client: Options.URL is empty")
	}
	if o.Dialer == nil {
		o.Dialer = &websocket.Dialer{
			Proxy:            http.ProxyFromEnvironment,
			HandshakeTimeout: DefaultHandshakeTimeout,
		}
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = DefaultBackoffMin
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = DefaultBackoffMax
	}
	if o.BackoffMax < o.BackoffMin {
		o.BackoffMax = o.BackoffMin
	}
	if o.MessageBuffer <= 0 {
		o.MessageBuffer = DefaultMessageBuffer
	}
	return o, nil
}

// DefaultReadLimit is the read limit of a connection to a node whose
// max_frame is maxFrame: a msg frame carries a body of at most maxFrame
// bytes, which JSON escaping makes at most six times as long (`<` is sent as
// `\u003c`), and its other fields in well under 4 KiB; and at least 1 MiB.
func DefaultReadLimit(maxFrame int) int64 {
	return max(6*int64(maxFrame)+4<<10, minReadLimit)
}

// readLimit is the read limit of a connection welcomed with w.
func (o Options) readLimit(w Welcome) int64 {
	if o.ReadLimit > 0 {
		return o.ReadLimit
	}
	return DefaultReadLimit(w.MaxFrame)
}

// endpoints are URL and the Fallbacks, each with the user or the token in
// its query.
func (o Options) endpoints() ([]string, error) {
	var out []string
	for _, raw := range append([]string{o.URL}, o.Fallbacks...) {
		e, err := o.endpoint(raw)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func (o Options) endpoint(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("client: endpoint %q: %w", raw, err)
	}
	q := u.Query()
	if o.Token != "" {
		if u.Scheme != "wss" && !o.AllowInsecureToken && !loopback(u.Hostname()) {
			return "", fmt.Errorf("%w: endpoint %q is not wss:// and not loopback", ErrInsecureToken, raw)
		}
		q.Set("token", o.Token)
		q.Del("user")
	} else if o.User != "" {
		q.Set("user", o.User)
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// loopback reports whether host never leaves this machine.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
