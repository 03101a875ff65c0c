package node_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/internal/testcluster"
	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/node"
	"github.com/shardchat/shard/protocol"
)

func token(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestTokensAreVerifiedBeforeTheUpgrade(t *testing.T) {
	secret := []byte("correct horse battery staple")
	c := testcluster.Start(t, 1, func(_ int, cfg *node.Config) { cfg.AuthSecret = string(secret) })
	future := time.Now().Add(time.Hour).Unix()
	good := token(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice", "exp": future})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, client.Options{URL: c.URL(0), Token: good})
	if err != nil {
		t.Fatalf("a valid token was refused: %v", err)
	}
	if cl.Welcome().User != "alice" {
		t.Fatalf("welcome for %q, want the token's sub alice", cl.Welcome().User)
	}
	cl.Close()

	for name, q := range map[string]string{
		"no token":        "?user=alice",
		"bad signature":   "?token=" + token(t, jwt.SigningMethodHS256, []byte("wrong"), jwt.MapClaims{"sub": "alice", "exp": future}),
		"expired":         "?token=" + token(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Minute).Unix()}),
		"no expiry":       "?token=" + token(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice"}),
		"no subject":      "?token=" + token(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"exp": future}),
		"malformed sub":   "?token=" + token(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "al ice", "exp": future}),
		"alg none":        "?token=" + token(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "alice", "exp": future}),
		"other HMAC alg":  "?token=" + token(t, jwt.SigningMethodHS512, secret, jwt.MapClaims{"sub": "alice", "exp": future}),
		"not a token":     "?token=" + url.QueryEscape("hello.world.x"),
		"token and empty": "?token=",
	} {
		_, resp, err := websocket.DefaultDialer.Dial(c.URL(0)+q, nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: %v, want 401", name, err)
			continue
		}
		assertErrorBody(t, resp, protocol.CodeUnauthorized)
	}
}

// A token that would let its holder in for longer than --max-token-age is
// refused, whether its exp is that far from now or from its iat; and with
// --token-aud and --token-iss, its aud and iss must say so.
func TestTokenLifetimeAudienceAndIssuerAreChecked(t *testing.T) {
	secret := []byte("correct horse battery staple")
	c := testcluster.Start(t, 1, func(_ int, cfg *node.Config) {
		cfg.AuthSecret = string(secret)
		cfg.MaxTokenAge = time.Hour
		cfg.TokenAudience = "chat.example"
		cfg.TokenIssuer = "auth.example"
	})
	now := time.Now()
	claims := func(edit func(jwt.MapClaims)) string {
		cl := jwt.MapClaims{"sub": "alice", "exp": now.Add(30 * time.Minute).Unix(), "aud": "chat.example", "iss": "auth.example"}
		edit(cl)
		return token(t, jwt.SigningMethodHS256, secret, cl)
	}
	for _, tc := range []struct {
		name string
		tok  string
		ok   bool
	}{
		{"within the cap", claims(func(jwt.MapClaims) {}), true},
		{"issued a while ago, within the cap", claims(func(c jwt.MapClaims) { c["iat"] = now.Add(-20 * time.Minute).Unix() }), true},
		{"valid until the year 3000", claims(func(c jwt.MapClaims) { c["exp"] = time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC).Unix() }), false},
		{"exp 2 h from now", claims(func(c jwt.MapClaims) { c["exp"] = now.Add(2 * time.Hour).Unix() }), false},
		{"issued for 90 min", claims(func(c jwt.MapClaims) { c["iat"] = now.Add(-time.Hour).Unix() }), false},
		{"issued in the future", claims(func(c jwt.MapClaims) { c["iat"] = now.Add(10 * time.Minute).Unix() }), false},
		{"no aud", claims(func(c jwt.MapClaims) { delete(c, "aud") }), false},
		{"another aud", claims(func(c jwt.MapClaims) { c["aud"] = "other.example" }), false},
		{"aud in a list", claims(func(c jwt.MapClaims) { c["aud"] = []string{"other.example", "chat.example"} }), true},
		{"no iss", claims(func(c jwt.MapClaims) { delete(c, "iss") }), false},
		{"another iss", claims(func(c jwt.MapClaims) { c["iss"] = "evil.example" }), false},
	} {
		ws, resp, err := websocket.DefaultDialer.Dial(c.URL(0)+"?token="+tc.tok, nil)
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s: refused (%v), want accepted", tc.name, err)
		case tc.ok:
			ws.Close()
		case err == nil:
			ws.Close()
			t.Errorf("%s: accepted, want 401", tc.name)
		case resp == nil || resp.StatusCode != http.StatusUnauthorized:
			t.Errorf("%s: %v, want 401", tc.name, err)
		default:
			assertErrorBody(t, resp, protocol.CodeUnauthorized)
		}
	}
}

// An HTTP connection kept alive after its request is closed once it has
// been idle for --handshake-timeout: idle connections hold no slot for long.
func TestIdleKeepAliveConnectionIsClosedAfterTheHandshakeTimeout(t *testing.T) {
	c := testcluster.Start(t, 1, func(_ int, cfg *node.Config) { cfg.HandshakeTimeout = time.Second })
	conn, err := net.Dial("tcp", c.Nodes[0].HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	start := time.Now()
	conn.SetReadDeadline(start.Add(10 * time.Second))
	_, err = br.ReadByte()
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("an idle keep-alive connection was still open 10 s after its request, with a handshake timeout of 1 s")
	}
	t.Logf("idle keep-alive connection closed after %s (%v)", time.Since(start).Round(10*time.Millisecond), err)
}

func TestOriginsAreChecked(t *testing.T) {
	c := testcluster.Start(t, 2, func(i int, cfg *node.Config) {
		if i == 1 {
			cfg.Origins = []string{"https://chat.example.org"}
		}
	})
	try := func(i int, origin string) int {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		ws, resp, err := websocket.DefaultDialer.Dial(c.URL(i)+"?user=alice", h)
		if err == nil {
			ws.Close()
			return http.StatusSwitchingProtocols
		}
		if resp == nil {
			t.Fatalf("dial: %v", err)
		}
		return resp.StatusCode
	}
	self := "http://" + c.Nodes[0].HTTPAddr()
	for _, tc := range []struct {
		node         int
		origin       string
		wantUpgraded bool
	}{
		{0, "", true},                                 // not a browser
		{0, self, true},                               // same origin
		{0, "https://evil.example", false},            // another site's page
		{1, "https://chat.example.org", true},         // listed
		{1, "http://" + c.Nodes[1].HTTPAddr(), false}, // same origin, but a list was given
	} {
		got := try(tc.node, tc.origin)
		if (got == http.StatusSwitchingProtocols) != tc.wantUpgraded {
			t.Errorf("node %d, Origin %q: status %d, upgraded want %v", tc.node, tc.origin, got, tc.wantUpgraded)
		}
		if !tc.wantUpgraded && got != http.StatusForbidden {
			t.Errorf("node %d, Origin %q: status %d, want 403", tc.node, tc.origin, got)
		}
	}
}

// With --public-url, a browser's Origin must be that URL's origin, scheme
// and port included (or one of --origins): a page on another name that
// resolves to the node (DNS rebinding: Host and Origin both evil.example)
// gets 403.
func TestPublicURLPinsTheOrigin(t *testing.T) {
	c := testcluster.Start(t, 2, func(i int, cfg *node.Config) {
		cfg.PublicURL = "https://chat.example.org/"
		if i == 1 {
			cfg.Origins = []string{"https://app.example.org"}
		}
	})
	for _, tc := range []struct {
		node         int
		host, origin string
		wantUpgraded bool
	}{
		{0, "", "", true}, // not a browser
		{0, "chat.example.org", "https://chat.example.org", true},
		{0, "10.0.0.7:8080", "https://CHAT.example.org", true}, // behind a proxy that rewrites Host
		{0, "chat.example.org", "https://chat.example.org:443", true},
		{0, "evil.example", "http://evil.example", false}, // same host, another site
		{0, "chat.example.org", "http://chat.example.org", false},
		{0, "chat.example.org", "https://chat.example.org:8443", false},
		{0, "chat.example.org", "null", false},
		{0, "", "http://" + c.Nodes[0].HTTPAddr(), false}, // the node's own address is not its public one
		{1, "chat.example.org", "https://chat.example.org", true},
		{1, "app.example.org", "https://app.example.org", true},
		{1, "evil.example", "http://evil.example", false},
	} {
		h := http.Header{}
		if tc.host != "" {
			h.Set("Host", tc.host)
		}
		if tc.origin != "" {
			h.Set("Origin", tc.origin)
		}
		ws, resp, err := websocket.DefaultDialer.Dial(c.URL(tc.node)+"?user=alice", h)
		if err == nil {
			ws.Close()
		}
		switch {
		case tc.wantUpgraded && err != nil:
			t.Errorf("node %d, Host %q, Origin %q: %v, want upgraded", tc.node, tc.host, tc.origin, err)
		case !tc.wantUpgraded && err == nil:
			t.Errorf("node %d, Host %q, Origin %q: upgraded, want 403", tc.node, tc.host, tc.origin)
		case !tc.wantUpgraded && (resp == nil || resp.StatusCode != http.StatusForbidden):
			t.Errorf("node %d, Host %q, Origin %q: %v, want 403", tc.node, tc.host, tc.origin, err)
		}
	}
}

func TestConnectionCapRefusesWith503(t *testing.T) {
	c := testcluster.Start(t, 1, func(_ int, cfg *node.Config) { cfg.MaxConns = 2 })
	a := c.Dial(0, "a")
	c.Dial(0, "b")
	_, resp, err := websocket.DefaultDialer.Dial(c.URL(0)+"?user=c", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third connection over a cap of 2: %v, want 503", err)
	}
	assertErrorBody(t, resp, protocol.CodeUnavailable)
	a.Close()
	wait.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		ws, _, err := websocket.DefaultDialer.Dial(c.URL(0)+"?user=c", nil)
		if err != nil {
			return err
		}
		ws.Close()
		return nil
	})
}

// dialFrom opens a WebSocket to node i of c as user, from the local
// address src (any of 127.0.0.0/8 reaches a loopback listener), with
// X-Forwarded-For set when xff is: it returns the connection or the
// refusal's status.
func dialFrom(t *testing.T, c *testcluster.Cluster, i int, src, xff, user string) (*websocket.Conn, int) {
	t.Helper()
	d := websocket.Dialer{NetDial: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).Dial}
	h := http.Header{}
	if xff != "" {
		h.Set("X-Forwarded-For", xff)
	}
	ws, resp, err := d.Dial(c.URL(i)+"?user="+user, h)
	if err == nil {
		t.Cleanup(func() { ws.Close() })
		return ws, http.StatusSwitchingProtocols
	}
	if resp == nil {
		t.Fatalf("dial from %s as %s: %v", src, user, err)
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		assertErrorBody(t, resp, protocol.CodeTooManyConns)
	}
	return nil, resp.StatusCode
}

// One user, or one client address, cannot take a node's every connection:
// past --max-conns-per-user or --max-conns-per-ip the upgrade gets 429, and
// X-Forwarded-For names the client only when a trusted proxy sent it.
func TestConnectionsPerUserAndPerAddressAreCapped(t *testing.T) {
	c := testcluster.Start(t, 1, func(_ int, cfg *node.Config) {
		cfg.MaxConnsPerUser = 2
		cfg.MaxConnsPerIP = 3
		cfg.TrustedProxies = []string{"127.0.0.2/32"}
	})
	for _, tc := range []struct {
		src, xff, user string
		want           int
	}{
		{"127.0.0.1", "", "alice", http.StatusSwitchingProtocols},
		{"127.0.0.1", "", "alice", http.StatusSwitchingProtocols},
		{"127.0.0.1", "", "alice", http.StatusTooManyRequests}, // a third of one user
		{"127.0.0.3", "", "alice", http.StatusTooManyRequests}, // from anywhere
		{"127.0.0.1", "", "bob", http.StatusSwitchingProtocols},
		{"127.0.0.1", "", "carol", http.StatusTooManyRequests},                      // a fourth from one address
		{"127.0.0.1", "10.9.9.9", "carol", http.StatusTooManyRequests},              // not a trusted proxy: its header is ignored
		{"127.0.0.3", "", "carol", http.StatusSwitchingProtocols},                   // another address
		{"127.0.0.2", "10.1.1.1", "dave", http.StatusSwitchingProtocols},            // the trusted proxy, for 10.1.1.1
		{"127.0.0.2", "10.1.1.1", "erin", http.StatusSwitchingProtocols},            //
		{"127.0.0.2", "10.1.1.1", "frank", http.StatusSwitchingProtocols},           //
		{"127.0.0.2", "10.1.1.1", "grace", http.StatusTooManyRequests},              // a fourth from 10.1.1.1
		{"127.0.0.2", "10.1.1.1, 10.1.1.2", "grace", http.StatusSwitchingProtocols}, // the proxy saw 10.1.1.2; the rest is the client's word
		{"127.0.0.2", "", "heidi", http.StatusSwitchingProtocols},                   // the proxy itself
	} {
		if _, got := dialFrom(t, c, 0, tc.src, tc.xff, tc.user); got != tc.want {
			t.Errorf("%s from %s (X-Forwarded-For %q): %d, want %d", tc.user, tc.src, tc.xff, got, tc.want)
		}
	}
	// A closed connection gives its slot back.
	ws, _ := dialFrom(t, c, 0, "127.0.0.4", "", "ivan")
	ws.Close()
	wait.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		for i := 0; i < 2; i++ {
			ws, got := dialFrom(t, c, 0, "127.0.0.4", "", "ivan")
			if got != http.StatusSwitchingProtocols {
				return fmt.Errorf("ivan's connection %d of 2, after his first closed: %d", i+1, got)
			}
			defer ws.Close()
		}
		return nil
	})
}

func TestRoomsPerConnectionAreCapped(t *testing.T) {
	c := testcluster.Start(t, 1, func(_ int, cfg *node.Config) { cfg.MaxRooms = 2 })
	cl := c.Dial(0, "joiner")
	ctx := ctxFor(t)
	for _, room := range []string{"r1", "r2", "r1"} {
		if err := cl.Join(ctx, room); err != nil {
			t.Fatalf("join %s: %v", room, err)
		}
	}
	var e *client.Error
	if err := cl.Join(ctx, "r3"); !errors.As(err, &e) || e.Code != protocol.CodeBadRequest {
		t.Fatalf("a third room over a cap of 2: %v, want bad_request", err)
	}
	if err := cl.Leave(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	if err := cl.Join(ctx, "r3"); err != nil {
		t.Fatalf("join after a leave made room: %v", err)
	}
}
