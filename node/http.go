package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/router"
	"github.com/shardchat/shard/session"
	"github.com/shardchat/shard/store"
	"github.com/shardchat/shard/web"
)

// apiTimeout bounds an API call that asks an owner node.
const apiTimeout = 5 * time.Second

// upgradeTimeout bounds the WebSocket handshake.
const upgradeTimeout = 5 * time.Second

func (n *Node) serveHTTP(ctx *fasthttp.RequestCtx) {
	path := string(ctx.Path())
	switch {
	case path == "/ws":
		n.serveWS(ctx)
	case path == "/healthz":
		ctx.SetContentType("text/plain; charset=utf-8")
		ctx.SetBodyString("ok\n")
	case path == "/readyz":
		ctx.SetContentType("text/plain; charset=utf-8")
		if n.ready.Load() && !n.draining.Load() {
			ctx.SetBodyString("ready\n")
		} else {
			ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
			ctx.SetBodyString("not ready\n")
		}
	case path == "/metrics":
		if n.privateOK(ctx) {
			n.metricsHandler()(ctx)
		}
	case path == "/api/cluster":
		if n.privateOK(ctx) {
			n.serveCluster(ctx)
		}
	case path == "/api/node" || path == "/api/cluster/live":
		n.serveClusterView(ctx, path)
	case strings.HasPrefix(path, "/api/users/"):
		if name, ok := strings.CutSuffix(strings.TrimPrefix(path, "/api/users/"), "/conversations"); ok {
			n.serveConversations(ctx, name)
			return
		}
		n.serveKey(ctx, false, strings.TrimPrefix(path, "/api/users/"))
	case path == "/api/groups" || strings.HasPrefix(path, "/api/groups/"):
		n.serveGroups(ctx, strings.TrimPrefix(strings.TrimPrefix(path, "/api/groups"), "/"))
	case strings.HasPrefix(path, "/api/rooms/"):
		n.serveKey(ctx, true, strings.TrimPrefix(path, "/api/rooms/"))
	case path == "/api/send":
		n.serveSend(ctx)
	default:
		if !web.Serve(ctx) {
			writeError(ctx, fasthttp.StatusNotFound, protocol.CodeNotFound, "no such page")
		}
	}
}

func (n *Node) metricsHandler() fasthttp.RequestHandler {
	return fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{}))
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	b, _ := json.Marshal(v)
	ctx.SetBody(append(b, '\n'))
}

func writeError(ctx *fasthttp.RequestCtx, status int, code, message string) {
	type body struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	writeJSON(ctx, status, map[string]body{"error": {code, message}})
}

var upgrader = websocket.FastHTTPUpgrader{
	HandshakeTimeout: upgradeTimeout,
	// The library only answers the upgrade: session reads and writes the
	// frames itself, and its Conn is dropped at once. The smallest read
	// buffer it takes, and a pool, so that it allocates no write buffer.
	ReadBufferSize:  1,
	WriteBufferPool: &sync.Pool{},
	Error: func(ctx *fasthttp.RequestCtx, status int, reason error) {
		writeError(ctx, status, protocol.CodeBadRequest, reason.Error())
	},
	// serveWS has checked the origin against --origins already.
	CheckOrigin: func(*fasthttp.RequestCtx) bool { return true },
}

// serveWS authenticates, checks the upgrade, registers the connection with
// its owner, queues its welcome, and only then upgrades: a client that
// holds its welcome can be reached from any node, a node that cannot
// register answers 503, and a request the upgrade would refuse registers
// nothing.
func (n *Node) serveWS(ctx *fasthttp.RequestCtx) {
	if !n.ready.Load() || n.draining.Load() {
		writeError(ctx, fasthttp.StatusServiceUnavailable, protocol.CodeUnavailable, "this node is not serving: it is starting or draining")
		return
	}
	user, status, code, msg := n.authenticate(ctx)
	if status != 0 {
		writeError(ctx, status, code, msg)
		return
	}
	if status, reason := upgradeRefusal(ctx); status != 0 {
		writeError(ctx, status, protocol.CodeBadRequest, reason)
		return
	}
	if !n.originAllowed(ctx) {
		writeError(ctx, fasthttp.StatusForbidden, protocol.CodeForbidden, "this page's origin may not open a connection here")
		return
	}
	c := session.New(n.connSeq.Add(1), user, n.cfg.Session)
	c.Send(protocol.AppendWelcome(nil, &protocol.Welcome{User: user, Node: n.name, Store: n.store != nil, MaxFrame: n.cfg.Session.MaxFrame}))
	if no := n.addConn(c, n.clientAddr(ctx)); no.status != 0 {
		writeError(ctx, no.status, no.code, no.message)
		return
	}
	if err := n.router.Attach(c); err != nil {
		n.removeConn(c)
		n.log.Warn("connection not registered", "user", user, "err", err)
		writeError(ctx, fasthttp.StatusServiceUnavailable, protocol.CodeUnavailable, "the cluster cannot register this connection right now; retry")
		return
	}
	raw, _ := ctx.Conn().(*session.CoalescingConn)
	err := upgrader.Upgrade(ctx, func(ws *websocket.Conn) {
		c.Serve(ws.NetConn(), raw, sessionHandler{n})
	})
	if err != nil {
		n.router.Closed(c, session.CloseClientGone.Label)
		n.removeConn(c)
	}
}

// sessionHandler hands what a session reads to the router, which knows the
// connection only as a router.Conn, and forgets the connection once it has
// ended.
type sessionHandler struct{ n *Node }

func (h sessionHandler) HandleFrame(c *session.Conn, f *protocol.Frame) {
	h.n.router.HandleFrame(c, f)
}

func (h sessionHandler) Closed(c *session.Conn, reason session.CloseReason) {
	h.n.router.Closed(c, reason.Label)
}

func (h sessionHandler) Ended(c *session.Conn) { h.n.removeConn(c) }

// authenticate finds the user id of a WebSocket request: from a verified
// token with --auth-secret, else from the query string.
func (n *Node) authenticate(ctx *fasthttp.RequestCtx) (user string, status int, code, msg string) {
	args := ctx.QueryArgs()
	if n.cfg.AuthSecret == "" {
		user = string(args.Peek("user"))
		if !protocol.ValidID(user) {
			return "", fasthttp.StatusBadRequest, protocol.CodeBadRequest, "user must be 1 to 64 characters of A-Z a-z 0-9 _ . @ -"
		}
		return user, 0, "", ""
	}
	token := string(args.Peek("token"))
	if token == "" {
		return "", fasthttp.StatusUnauthorized, protocol.CodeUnauthorized, "a token query parameter is required"
	}
	user, err := n.verifyToken(token)
	if err != nil {
		return "", fasthttp.StatusUnauthorized, protocol.CodeUnauthorized, err.Error()
	}
	return user, 0, "", ""
}

// verifyToken checks a token as docs/protocol.md §2.3 says and returns its
// user.
func (n *Node) verifyToken(token string) (string, error) {
	claims := jwt.RegisteredClaims{}
	opts := []jwt.ParserOption{jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(), jwt.WithIssuedAt()}
	if n.cfg.TokenAudience != "" {
		opts = append(opts, jwt.WithAudience(n.cfg.TokenAudience))
	}
	if n.cfg.TokenIssuer != "" {
		opts = append(opts, jwt.WithIssuer(n.cfg.TokenIssuer))
	}
	_, err := jwt.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) {
		return []byte(n.cfg.AuthSecret), nil
	}, opts...)
	if err != nil {
		return "", fmt.Errorf("invalid token: %w", err)
	}
	// A stolen token is worth as much as it lives: none may let its holder
	// in for longer than the cap, whatever its issuer wrote.
	exp, maxAge := claims.ExpiresAt.Time, n.cfg.MaxTokenAge
	if time.Until(exp) > maxAge || claims.IssuedAt != nil && exp.Sub(claims.IssuedAt.Time) > maxAge {
		return "", fmt.Errorf("invalid token: it lives longer than this node's --max-token-age (%s)", maxAge)
	}
	if !protocol.ValidID(claims.Subject) {
		return "", errors.New("invalid token: sub must be a user id of 1 to 64 characters of A-Z a-z 0-9 _ . @ -")
	}
	return claims.Subject, nil
}

func (n *Node) serveCluster(ctx *fasthttp.RequestCtx) {
	ms := n.gossip.Members()
	info := protocol.ClusterInfo{
		Self:    n.name,
		Members: make([]protocol.ClusterMember, 0, len(ms)),
		Routing: n.cfg.Routing.String(),
		Store:   n.storeKind,
	}
	if n.store != nil {
		info.StoreState, info.StoreError = storeState(n.store.Health())
	}
	for _, m := range ms {
		info.Members = append(info.Members, protocol.ClusterMember{Name: m.Name, HTTP: m.Meta.HTTP, State: string(m.State)})
	}
	rg := n.router.Ring()
	info.Ring = protocol.RingInfo{Members: rg.Len(), Version: rg.Version(), Scheme: int(rg.Scheme())}
	writeJSON(ctx, fasthttp.StatusOK, info)
}

func (n *Node) serveLocations(ctx *fasthttp.RequestCtx, room bool, name string) {
	if !ctx.IsGet() {
		writeError(ctx, fasthttp.StatusMethodNotAllowed, protocol.CodeMethodNotAllowed, "use GET")
		return
	}
	what := "user"
	if room {
		what = "room"
	}
	if !protocol.ValidID(name) {
		writeError(ctx, fasthttp.StatusBadRequest, protocol.CodeBadRequest, what+" must be 1 to 64 characters of A-Z a-z 0-9 _ . @ -")
		return
	}
	c, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	locs, err := n.router.Locations(c, router.Key{Room: room, Name: name})
	if err != nil {
		writeError(ctx, fasthttp.StatusServiceUnavailable, protocol.CodeUnavailable, "the owner of this "+what+" cannot be asked right now: "+err.Error())
		return
	}
	total := 0
	for _, l := range locs {
		total += l.Count
	}
	if room {
		nodes := make(map[string]int, len(locs))
		for _, l := range locs {
			nodes[l.Node] = l.Count
		}
		writeJSON(ctx, fasthttp.StatusOK, map[string]any{"room": name, "connections": total, "nodes": nodes})
		return
	}
	nodes := make([]string, 0, len(locs))
	for _, l := range locs {
		nodes = append(nodes, l.Node)
	}
	sort.Strings(nodes)
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"user": name, "online": total > 0, "connections": total, "nodes": nodes})
}

type sendRequest struct {
	From  string `json:"from"`
	To    string `json:"to"`
	Room  string `json:"room"`
	Group string `json:"group"`
	Body  string `json:"body"`
}

// apiKeyOK guards the endpoints behind --api-key: 404 without one (the
// endpoint is off), 405 for another method, 401 for a wrong or missing key.
func (n *Node) apiKeyOK(ctx *fasthttp.RequestCtx, method string) bool {
	if n.cfg.APIKey != "" && string(ctx.Method()) != method {
		writeError(ctx, fasthttp.StatusMethodNotAllowed, protocol.CodeMethodNotAllowed, "use "+method)
		return false
	}
	return n.keyOK(ctx)
}

// privateOK guards the endpoints that --private-api puts behind the api
// key: open without it.
func (n *Node) privateOK(ctx *fasthttp.RequestCtx) bool {
	return !n.cfg.PrivateAPI || n.keyOK(ctx)
}

// keyOK checks the request's api key: 404 on a node without one, 401 for a
// wrong or missing key.
func (n *Node) keyOK(ctx *fasthttp.RequestCtx) bool {
	if n.cfg.APIKey == "" {
		writeError(ctx, fasthttp.StatusNotFound, protocol.CodeNotFound, string(ctx.Path())+" is disabled: the node has no --api-key")
		return false
	}
	if !bearerIs(ctx, n.cfg.APIKey) {
		writeError(ctx, fasthttp.StatusUnauthorized, protocol.CodeUnauthorized, "a valid Authorization: Bearer <api-key> header is required")
		return false
	}
	return true
}

type historyMessage struct {
	Seq   int64  `json:"seq"`
	Mid   string `json:"mid"`
	From  string `json:"from"`
	To    string `json:"to,omitempty"`
	Room  string `json:"room,omitempty"`
	Group string `json:"group,omitempty"`
	Body  string `json:"body,omitempty"`
	Event string `json:"event,omitempty"`
	User  string `json:"user,omitempty"`
	Admin string `json:"admin,omitempty"`
	TS    int64  `json:"ts"`
}

// serveKey answers /api/users/{id} and /api/rooms/{room}, where they are,
// and the same followed by /messages, their history. A user or room may be
// named "messages".
func (n *Node) serveKey(ctx *fasthttp.RequestCtx, room bool, rest string) {
	if name, sub, _ := strings.Cut(rest, "/"); sub == "messages" {
		stream := store.Inbox(name)
		if room {
			stream = store.RoomStream(name)
		}
		if n.apiKeyOK(ctx, fasthttp.MethodGet) {
			n.serveHistory(ctx, stream)
		}
		return
	}
	if n.privateOK(ctx) {
		n.serveLocations(ctx, room, rest) // a name with a slash is malformed: 400
	}
}

// serveHistory answers GET /api/users/{id}/messages,
// /api/rooms/{room}/messages and /api/groups/{group}/messages (behind the
// api key, checked by the caller): a page of the stream after ?after=N, at
// most ?limit=M messages.
func (n *Node) serveHistory(ctx *fasthttp.RequestCtx, stream store.Stream) {
	if n.store == nil {
		writeError(ctx, fasthttp.StatusNotFound, protocol.CodeNotFound, "this cluster keeps no history: it runs without a message store")
		return
	}
	if !protocol.ValidID(stream.Name) {
		writeError(ctx, fasthttp.StatusBadRequest, protocol.CodeBadRequest, "the name must be 1 to 64 characters of A-Z a-z 0-9 _ . @ -")
		return
	}
	args := ctx.QueryArgs()
	after, limit := int64(0), 100
	if v := args.Peek("after"); len(v) > 0 {
		a, ok := protocol.ParseOffset(string(v))
		if !ok {
			writeError(ctx, fasthttp.StatusBadRequest, protocol.CodeBadRequest, "after must be an integer from 0 to 2^53-1")
			return
		}
		after = a
	}
	if v := args.Peek("limit"); len(v) > 0 {
		l, err := strconv.Atoi(string(v))
		if err != nil || l < 1 || l > store.MaxReadLimit {
			writeError(ctx, fasthttp.StatusBadRequest, protocol.CodeBadRequest, fmt.Sprintf("limit must be 1 to %d", store.MaxReadLimit))
			return
		}
		limit = l
	}
	c, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	msgs, last, more, err := n.store.Read(c, stream, after, limit)
	if err != nil {
		writeError(ctx, fasthttp.StatusServiceUnavailable, protocol.CodeUnavailable, "the message store cannot be read right now")
		return
	}
	out := make([]historyMessage, len(msgs))
	for i, m := range msgs {
		out[i] = historyMessage{Seq: m.Seq, Mid: m.Mid, From: m.From, To: m.To, Room: m.Room, Group: m.Group, Body: m.Body,
			Event: m.Event, User: m.User, Admin: m.Admin, TS: m.TS}
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"messages": out, "last": last, "more": more})
}

func (n *Node) serveSend(ctx *fasthttp.RequestCtx) {
	if !n.apiKeyOK(ctx, fasthttp.MethodPost) {
		return
	}
	var req sendRequest
	if err := json.Unmarshal(ctx.PostBody(), &req); err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, protocol.CodeBadRequest, "body must be a JSON object: "+err.Error())
		return
	}
	named := 0
	for _, name := range []string{req.To, req.Room, req.Group} {
		if name != "" {
			named++
		}
	}
	switch {
	case !protocol.ValidID(req.From):
		writeError(ctx, fasthttp.StatusBadRequest, protocol.CodeBadRequest, "from must be 1 to 64 characters of A-Z a-z 0-9 _ . @ -")
		return
	case named != 1:
		writeError(ctx, fasthttp.StatusBadRequest, protocol.CodeBadRequest, "name exactly one of to, room and group")
		return
	case req.To != "" && !protocol.ValidID(req.To), req.Room != "" && !protocol.ValidID(req.Room),
		req.Group != "" && !protocol.ValidID(req.Group):
		writeError(ctx, fasthttp.StatusBadRequest, protocol.CodeBadRequest, "to, room or group must be 1 to 64 characters of A-Z a-z 0-9 _ . @ -")
		return
	case req.Body == "":
		writeError(ctx, fasthttp.StatusBadRequest, protocol.CodeBadRequest, "body must be a non-empty string")
		return
	case len(req.Body) > n.cfg.Session.MaxFrame:
		writeError(ctx, fasthttp.StatusRequestEntityTooLarge, protocol.CodeBadRequest, "body is larger than --max-frame")
		return
	}
	c, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	pub, err := n.router.Publish(c, req.From, req.To, req.Room, req.Group, req.Body)
	if err != nil {
		writeRefusal(ctx, err)
		return
	}
	ack := map[string]any{"type": protocol.TypeAck, "status": pub.Status}
	if req.Room != "" || req.Group != "" {
		ack["recipients"] = pub.Recipients
	}
	if pub.Seq > 0 {
		ack["seq"] = pub.Seq
	}
	writeJSON(ctx, fasthttp.StatusOK, ack)
}
