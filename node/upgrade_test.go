package node_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shardchat/shard/internal/testcluster"
	"github.com/shardchat/shard/protocol"
)

// rawRequest sends one HTTP request written by hand to addr and returns the
// answer: what a client that does not follow RFC 6455 sends.
func rawRequest(t *testing.T, addr, request string) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte(request)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no HTTP answer to %q: %v", request, err)
	}
	return resp
}

// upgradeRequest is a WebSocket upgrade for user with the headers given,
// one "Name: value" a line.
func upgradeRequest(method, user string, headers ...string) string {
	return fmt.Sprintf("%s /ws?user=%s HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n", method, user, strings.Join(headers, "\r\n"))
}

// A request that the WebSocket upgrade would refuse is refused before the
// connection is registered with its owner: it costs the cluster no
// node-to-node message.
func TestMalformedUpgradeIsRefusedBeforeAnythingIsRegistered(t *testing.T) {
	c := testcluster.Start(t, 2, nil)
	const (
		conn    = "Connection: Upgrade"
		upgrade = "Upgrade: websocket"
		version = "Sec-WebSocket-Version: 13"
		key     = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
	)
	for _, tc := range []struct {
		name   string
		method string
		hdrs   []string
		status int
	}{
		{"no Sec-WebSocket-Key", "GET", []string{conn, upgrade, version}, http.StatusBadRequest},
		{"a key that is not 16 bytes", "GET", []string{conn, upgrade, version, "Sec-WebSocket-Key: c2hvcnQ="}, http.StatusBadRequest},
		{"no version", "GET", []string{conn, upgrade, key}, http.StatusUpgradeRequired},
		{"version 8", "GET", []string{conn, upgrade, key, "Sec-WebSocket-Version: 8"}, http.StatusUpgradeRequired},
		{"no Connection: Upgrade", "GET", []string{"Connection: keep-alive", upgrade, version, key}, http.StatusBadRequest},
		{"POST", "POST", []string{conn, upgrade, version, key, "Content-Length: 0"}, http.StatusMethodNotAllowed},
	} {
		before := c.Counter(0, "shard_peer_messages_sent_total", "kind=register")
		const n = 100 // users spread over both owners
		for i := 0; i < n; i++ {
			resp := rawRequest(t, c.Nodes[0].HTTPAddr(), upgradeRequest(tc.method, fmt.Sprintf("u%d", i), tc.hdrs...))
			if resp.StatusCode != tc.status {
				t.Fatalf("%s: %s, want %d", tc.name, resp.Status, tc.status)
			}
			if tc.status == http.StatusUpgradeRequired && resp.Header.Get("Sec-WebSocket-Version") != "13" {
				t.Fatalf("%s: the refusal does not say which version to use: %v", tc.name, resp.Header)
			}
			assertErrorBody(t, resp, protocol.CodeBadRequest)
		}
		if regs := c.Counter(0, "shard_peer_messages_sent_total", "kind=register") - before; regs != 0 {
			t.Errorf("%s: %d malformed upgrades cost %v registrations at the owners, want 0", tc.name, n, regs)
		}
	}
	// The well-formed upgrade still gets in.
	resp := rawRequest(t, c.Nodes[0].HTTPAddr(), upgradeRequest("GET", "alice", conn, upgrade, version, key))
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("a well-formed upgrade: %s", resp.Status)
	}
}

// A client that sends its first frame in the same write as its upgrade
// request, without waiting for the answer, has it acted on: the bytes the
// HTTP server read past the request are the connection's first.
func TestFrameSentWithTheUpgradeRequestIsAnswered(t *testing.T) {
	c := testcluster.Start(t, 1, nil)
	conn, err := net.Dial("tcp", c.Nodes[0].HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	request := upgradeRequest("GET", "eager", "Connection: Upgrade", "Upgrade: websocket",
		"Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")
	ping := `{"type":"ping","id":"p1"}`
	frame := []byte{0x81, 0x80 | byte(len(ping)), 0, 0, 0, 0} // masked with a zero key
	if _, err := conn.Write(append([]byte(request), append(frame, ping...)...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v, %v", resp, err)
	}
	for _, want := range []string{protocol.TypeWelcome, protocol.TypePong} {
		var header [2]byte // a server's frames are unmasked; these are short
		if _, err := io.ReadFull(br, header[:]); err != nil {
			t.Fatalf("waiting for %s: %v", want, err)
		}
		p := make([]byte, header[1]&0x7f)
		if _, err := io.ReadFull(br, p); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(p), `"type":"`+want+`"`) {
			t.Fatalf("got %s, want a %s", p, want)
		}
	}
}
