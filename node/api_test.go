package node_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/shardchat/shard/internal/testcluster"
	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/node"
	"github.com/shardchat/shard/protocol"
)

func getJSON(t *testing.T, url string, wantStatus int, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("GET %s: %d %s, want %d", url, resp.StatusCode, b, wantStatus)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %q is not JSON: %v", url, b, err)
		}
	}
}

type userInfo struct {
	User        string   `json:"user"`
	Online      bool     `json:"online"`
	Connections int      `json:"connections"`
	Nodes       []string `json:"nodes"`
}

func TestClusterAPIShowsMembersAndRing(t *testing.T) {
	c := testcluster.Start(t, 3, nil)
	getJSON(t, c.HTTP(0)+"/healthz", 200, nil)
	getJSON(t, c.HTTP(0)+"/readyz", 200, nil)
	versions := map[string]bool{}
	for i, nd := range c.Nodes {
		var info protocol.ClusterInfo
		getJSON(t, c.HTTP(i)+"/api/cluster", 200, &info)
		if info.Self != nd.Name() || info.Ring.Members != 3 || len(info.Members) != 3 {
			t.Fatalf("node %d cluster view %+v", i, info)
		}
		for j, m := range info.Members {
			if m.State != "alive" || m.HTTP != c.Nodes[j].HTTPAddr() || m.Name != c.Nodes[j].Name() {
				t.Fatalf("node %d lists member %+v, want %s at %s alive", i, m, c.Nodes[j].Name(), c.Nodes[j].HTTPAddr())
			}
		}
		versions[info.Ring.Version] = true
	}
	if len(versions) != 1 {
		t.Fatalf("nodes report %d ring versions, want one", len(versions))
	}
}

func TestUserAndRoomAPIAnswerThroughTheOwner(t *testing.T) {
	c := testcluster.Start(t, 3, nil)
	var u userInfo
	getJSON(t, c.HTTP(0)+"/api/users/bob", 200, &u)
	if want := (userInfo{User: "bob", Nodes: []string{}}); !reflect.DeepEqual(u, want) {
		t.Fatalf("never-seen user: %+v, want %+v", u, want)
	}
	bob1, bob2 := c.Dial(1, "bob"), c.Dial(2, "bob")
	ctx := ctxFor(t)
	if err := bob1.Join(ctx, "lobby"); err != nil {
		t.Fatal(err)
	}
	if err := bob2.Join(ctx, "lobby"); err != nil {
		t.Fatal(err)
	}
	if err := c.Dial(2, "carol").Join(ctx, "lobby"); err != nil {
		t.Fatal(err)
	}
	for i := range c.Nodes {
		getJSON(t, c.HTTP(i)+"/api/users/bob", 200, &u)
		want := userInfo{User: "bob", Online: true, Connections: 2, Nodes: []string{c.Nodes[1].Name(), c.Nodes[2].Name()}}
		if !reflect.DeepEqual(u, want) {
			t.Fatalf("asked at node %d: %+v, want %+v", i, u, want)
		}
		var r struct {
			Room        string         `json:"room"`
			Connections int            `json:"connections"`
			Nodes       map[string]int `json:"nodes"`
		}
		getJSON(t, c.HTTP(i)+"/api/rooms/lobby", 200, &r)
		if r.Room != "lobby" || r.Connections != 3 || r.Nodes[c.Nodes[1].Name()] != 1 || r.Nodes[c.Nodes[2].Name()] != 2 {
			t.Fatalf("room asked at node %d: %+v", i, r)
		}
	}
	getJSON(t, c.HTTP(0)+"/api/users/b%20b", 400, nil)
	getJSON(t, c.HTTP(0)+"/api/rooms/"+strings.Repeat("r", 65), 400, nil)
}

func post(t *testing.T, url, key, body string) (int, map[string]any) {
	t.Helper()
	return request(t, "POST", url, key, body)
}

// request calls the HTTP API with the bearer key (none when empty) and
// returns the status and the JSON answer.
func request(t *testing.T, method, url, key, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s %s answered %d %q, not JSON", method, url, resp.StatusCode, b)
	}
	return resp.StatusCode, v
}

func TestSendAPIRequiresItsKeyAndAnswersLikeAnAck(t *testing.T) {
	c := testcluster.Start(t, 2, func(i int, cfg *node.Config) {
		if i == 0 {
			cfg.APIKey = "s3cret"
		}
	})
	if status, _ := post(t, c.HTTP(1)+"/api/send", "s3cret", `{"from":"system","to":"bob","body":"x"}`); status != 404 {
		t.Fatalf("send API without --api-key: %d, want 404", status)
	}
	for _, key := range []string{"", "wrong", "s3cret2"} {
		if status, v := post(t, c.HTTP(0)+"/api/send", key, `{"from":"system","to":"bob","body":"x"}`); status != 401 {
			t.Fatalf("send API with key %q: %d %v, want 401", key, status, v)
		}
	}
	if status, v := post(t, c.HTTP(0)+"/api/send", "s3cret", `{"from":"system","to":"bob","body":"x"}`); status != 200 || v["status"] != protocol.StatusOffline {
		t.Fatalf("send API to an offline user: %d %v, want 200 offline", status, v)
	}
	bob := c.Dial(1, "bob")
	if err := bob.Join(ctxFor(t), "news"); err != nil {
		t.Fatal(err)
	}
	if status, v := post(t, c.HTTP(0)+"/api/send", "s3cret", `{"from":"system","to":"bob","body":"maintenance at noon"}`); status != 200 || v["status"] != protocol.StatusDelivered {
		t.Fatalf("send API: %d %v, want 200 delivered", status, v)
	}
	if m := recvMsg(t, bob, "bob"); m.From != "system" || m.Body != "maintenance at noon" {
		t.Fatalf("bob got %+v", m)
	}
	if status, v := post(t, c.HTTP(0)+"/api/send", "s3cret", `{"from":"system","room":"news","body":"extra"}`); status != 200 || v["status"] != protocol.StatusSent || v["recipients"] != 1.0 {
		t.Fatalf("send API to a room: %d %v, want sent to 1", status, v)
	}
	if status, _ := post(t, c.HTTP(0)+"/api/send", "s3cret", `{"from":"system","to":"b b","body":"x"}`); status != 400 {
		t.Fatalf("send API with a malformed recipient: %d, want 400", status)
	}
}

func TestMetricsExposeTheSpecCounters(t *testing.T) {
	c := testcluster.Start(t, 2, nil)
	alice, bob := c.Dial(0, "alice"), c.Dial(1, "bob")
	sendOK(t, alice, "bob", "counted", protocol.StatusDelivered)
	recvMsg(t, bob, "bob")
	resp, err := http.Get(c.HTTP(0) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	text := string(b)
	for _, want := range []string{
		"shard_connections 1",
		`shard_chat_messages_total{kind="direct"} 1`,
		`shard_peer_messages_sent_total{kind="forward"} 1`,
		"shard_members 2",
		"go_goroutines",
		"process_resident_memory_bytes",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q: %s", want, grepLines(text, "peer_messages_sent"))
		}
	}
	wait.For(t, 2*time.Second, 10*time.Millisecond, func() error {
		if got := c.Counter(1, "shard_deliveries_total"); got != 1 {
			return fmt.Errorf("node 1 counts %v deliveries, want 1", got)
		}
		if got := c.Counter(1, "shard_peer_replies_sent_total", "kind=forward"); got != 1 {
			return fmt.Errorf("node 1 counts %v forward replies, want 1", got)
		}
		return nil
	})
}

// With --private-api, where users and rooms are, the cluster and the
// metrics answer only to the api key; health and readiness stay open for
// load balancers.
func TestPrivateAPIAnswersOnlyToTheKey(t *testing.T) {
	c := testcluster.Start(t, 1, func(_ int, cfg *node.Config) {
		cfg.APIKey = "s3cret"
		cfg.PrivateAPI = true
	})
	c.Dial(0, "bob")
	get := func(path, key string) int {
		req, _ := http.NewRequest(http.MethodGet, c.HTTP(0)+path, nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusUnauthorized {
			assertErrorBody(t, resp, protocol.CodeUnauthorized)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, path := range []string{"/api/users/bob", "/api/rooms/lobby", "/api/cluster", "/metrics"} {
		for _, key := range []string{"", "wrong"} {
			if got := get(path, key); got != http.StatusUnauthorized {
				t.Errorf("GET %s with key %q: %d, want 401", path, key, got)
			}
		}
		if got := get(path, "s3cret"); got != http.StatusOK {
			t.Errorf("GET %s with the key: %d, want 200", path, got)
		}
	}
	for _, path := range []string{"/healthz", "/readyz", "/"} {
		if got := get(path, ""); got != http.StatusOK {
			t.Errorf("GET %s without a key: %d, want 200", path, got)
		}
	}
}

func decodeJSON(resp *http.Response, v any) error {
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, b)
	}
	return json.Unmarshal(b, v)
}

// A user may be named "messages": /api/users/messages is where that user
// is, not a history.
func TestUserNamedMessagesIsAUser(t *testing.T) {
	c := testcluster.Start(t, 1, nil)
	c.Dial(0, "messages")
	var u struct {
		Online bool `json:"online"`
	}
	getJSON(t, c.HTTP(0)+"/api/users/messages", 200, &u)
	if !u.Online {
		t.Fatal(`/api/users/messages: user "messages" is connected but not online`)
	}
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "; ")
}
