package node_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/internal/testcluster"
	"github.com/shardchat/shard/protocol"
)

// One node with the embedded store: a group outlives its members'
// connections, its messages reach every connection of every member but the
// sending one, an offline member syncs them, and reads clear the unread
// count on every device of the reader.
func TestGroupOnOneNodeWithTheEmbeddedStore(t *testing.T) {
	c := withData(t)
	ctx := ctxFor(t)
	alice, alicePhone := c.Dial(0, "alice"), c.Dial(0, "alice")
	bob := c.Dial(0, "bob")
	if ack, err := alice.CreateGroup(ctx, "team", "bob", "carol"); err != nil || ack.Status != protocol.StatusOK || ack.Seq != 1 {
		t.Fatalf("create: %+v %v, want ok at offset 1", ack, err)
	}
	for _, who := range []struct {
		c    *client.Client
		name string
	}{{bob, "bob"}, {alicePhone, "alice's phone"}} {
		if m := recvMsg(t, who.c, who.name); m.Group != "team" || m.Event != protocol.EventCreated || m.From != "alice" || m.Seq != 1 {
			t.Fatalf("%s got %+v, want the created event", who.name, m)
		}
	}
	if err := alice.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	noMsg(t, alice, "alice's sending connection")

	ack, err := alice.SendGroup(ctx, "team", "hello team")
	if err != nil || ack.Status != protocol.StatusSent || ack.Seq != 2 || ack.Recipients != 2 {
		t.Fatalf("group send: %+v %v, want sent at 2 to bob and alice's phone", ack, err)
	}
	for _, who := range []struct {
		c    *client.Client
		name string
	}{{bob, "bob"}, {alicePhone, "alice's phone"}} {
		if m := recvMsg(t, who.c, who.name); m.Group != "team" || m.Body != "hello team" || m.Seq != 2 {
			t.Fatalf("%s got %+v", who.name, m)
		}
	}
	noMsg(t, alice, "alice's sending connection")

	// carol, offline so far, syncs the group from the event that added her.
	carol := c.Dial(0, "carol")
	ack, err = carol.SyncGroup(ctx, "team", 0)
	if err != nil || ack.Last != 2 || ack.More {
		t.Fatalf("carol's sync: %+v %v, want last 2", ack, err)
	}
	for want := int64(1); want <= 2; want++ {
		if m := recvMsg(t, carol, "carol"); m.Seq != want || m.Group != "team" {
			t.Fatalf("carol synced %+v, want offset %d", m, want)
		}
	}
	convs, err := carol.Conversations(ctx)
	if err != nil || len(convs) != 1 || convs[0].Group != "team" || convs[0].Unread != 2 || convs[0].Last != 2 || convs[0].Admin {
		t.Fatalf("carol's conversations: %+v %v, want team with 2 unread", convs, err)
	}

	// carol reads on one device: the members hear of it, and her other
	// device's count is the same.
	carolPhone := c.Dial(0, "carol")
	if err := carol.ReadGroup(ctx, "team", 2); err != nil {
		t.Fatal(err)
	}
	for _, who := range []struct {
		c    *client.Client
		name string
	}{{alice, "alice"}, {bob, "bob"}, {carolPhone, "carol's phone"}} {
		if r := recvReceipt(t, who.c, who.name); r.By != "carol" || r.Group != "team" || r.Seq != 2 {
			t.Fatalf("%s got receipt %+v", who.name, r)
		}
	}
	if convs, err := carolPhone.Conversations(ctx); err != nil || convs[0].Unread != 0 || convs[0].Read != 2 {
		t.Fatalf("carol's phone's conversations after her read: %+v %v", convs, err)
	}

	// Admin rights, and a removed member hears nothing after the removal.
	var e *client.Error
	if _, err := bob.RemoveMember(ctx, "team", "carol"); !errors.As(err, &e) || e.Code != protocol.CodeForbidden {
		t.Fatalf("a non-admin's removal: %v, want forbidden", err)
	}
	if ack, err := alice.RemoveMember(ctx, "team", "carol"); err != nil || ack.Seq != 3 {
		t.Fatalf("removal: %+v %v, want ok at offset 3 (a read takes no offset)", ack, err)
	}
	for _, who := range []*client.Client{carol, carolPhone} {
		if m := recvMsg(t, who, "carol"); m.Event != protocol.EventRemoved || m.User != "carol" {
			t.Fatalf("carol got %+v, want her removal", m)
		}
	}
	for _, who := range []*client.Client{bob, alicePhone} {
		if m := recvMsg(t, who, "a member"); m.Event != protocol.EventRemoved || m.User != "carol" {
			t.Fatalf("a member got %+v, want carol's removal", m)
		}
	}
	if _, err := alice.SendGroup(ctx, "team", "after carol"); err != nil {
		t.Fatal(err)
	}
	if err := carol.Ping(ctx); err != nil { // what was written to her before the pong is read
		t.Fatal(err)
	}
	noMsg(t, carol, "carol after her removal")
	if _, err := carol.SendGroup(ctx, "team", "let me back"); !errors.As(err, &e) || e.Code != protocol.CodeNotMember {
		t.Fatalf("a removed member's send: %v, want not_member", err)
	}
}

// A direct read tells the peer where it stands in its own inbox, and the
// reader's other devices where the reader stands in its own.
func TestDirectReadIsAReceiptToThePeerAndTheReadersDevices(t *testing.T) {
	c := withData(t)
	ctx := ctxFor(t)
	alice, bob, bobPhone := c.Dial(0, "alice"), c.Dial(0, "bob"), c.Dial(0, "bob")
	var last int64
	for i := 0; i < 3; i++ {
		ack, err := alice.Send(ctx, "bob", fmt.Sprint("m", i))
		if err != nil {
			t.Fatal(err)
		}
		last = ack.Seq
	}
	var bobSeq int64
	for i := 0; i < 3; i++ {
		bobSeq = recvMsg(t, bob, "bob").Seq
		recvMsg(t, bobPhone, "bob's phone")
	}
	convs, err := bob.Conversations(ctx)
	if err != nil || len(convs) != 1 || convs[0].With != "alice" || convs[0].Unread != 3 {
		t.Fatalf("bob's conversations: %+v %v, want alice with 3 unread", convs, err)
	}
	if err := bob.Read(ctx, "alice", bobSeq); err != nil {
		t.Fatal(err)
	}
	if r := recvReceipt(t, alice, "alice"); r.By != "bob" || r.With != "bob" || r.Seq != last {
		t.Fatalf("alice got %+v, want bob read up to her inbox offset %d", r, last)
	}
	if r := recvReceipt(t, bobPhone, "bob's phone"); r.By != "bob" || r.With != "alice" || r.Seq != bobSeq {
		t.Fatalf("bob's phone got %+v, want bob read alice up to %d", r, bobSeq)
	}
	if convs, err := bobPhone.Conversations(ctx); err != nil || convs[0].Unread != 0 {
		t.Fatalf("bob's phone's conversations: %+v %v, want none unread", convs, err)
	}
	// A read at or below the last one changes nothing and tells no one.
	if err := bob.Read(ctx, "alice", 1); err != nil {
		t.Fatal(err)
	}
	if err := alice.Ping(ctx); err != nil { // what was written to her before the pong is read
		t.Fatal(err)
	}
	select {
	case r := <-alice.Receipts():
		t.Fatalf("a read that moved nothing sent %+v", r)
	default:
	}
}

func recvReceipt(t *testing.T, c *client.Client, who string) client.Receipt {
	t.Helper()
	select {
	case r := <-c.Receipts():
		return r
	case <-time.After(5 * time.Second):
		t.Fatalf("%s got no receipt", who)
		return client.Receipt{}
	}
}

// nextInGroup waits for the next message or event of group on cl, skipping
// anything else (direct messages, other groups).
func nextInGroup(t *testing.T, cl *client.Client, who, group string) client.Msg {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case m := <-cl.Messages():
			if m.Group == group {
				return m
			}
		case <-deadline:
			t.Fatalf("%s got nothing of group %s within 5s", who, group)
			return client.Msg{}
		}
	}
}

// expectEvent checks that cl's next message of group is the event at seq.
func expectEvent(t *testing.T, cl *client.Client, who, group string, seq int64, event, user, admin string) {
	t.Helper()
	m := nextInGroup(t, cl, who, group)
	if m.Seq != seq || m.Event != event || m.User != user || m.Admin != admin {
		t.Fatalf("%s got %+v, want event %s of %s at %d (admin %q)", who, m, event, user, seq, admin)
	}
}

// api calls node 0's HTTP API with the test key ("k", see withData) and
// returns the status and the JSON answer.
func api(t *testing.T, c *testcluster.Cluster, method, path, body string) (int, map[string]any) {
	t.Helper()
	return apiAs(t, c, "k", method, path, body)
}

func apiAs(t *testing.T, c *testcluster.Cluster, key, method, path, body string) (int, map[string]any) {
	t.Helper()
	return request(t, method, c.HTTP(0)+path, key, body)
}

func errorCode(v map[string]any) string {
	e, _ := v["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

// apiConversations is GET /api/users/{user}/conversations.
func apiConversations(t *testing.T, c *testcluster.Cluster, user string) []client.Conversation {
	t.Helper()
	req, _ := http.NewRequest("GET", c.HTTP(0)+"/api/users/"+user+"/conversations", nil)
	req.Header.Set("Authorization", "Bearer k")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		User          string
		Conversations []client.Conversation
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != 200 || v.User != user {
		t.Fatalf("GET conversations of %s: %d %+v %v", user, resp.StatusCode, v, err)
	}
	return v.Conversations
}

// The HTTP API of groups: create, look at, add and remove members (as the
// admin named in `by`, or as the longest-standing admin), send, read the
// stream and the conversations; each change reaches the members' sockets
// as a client's would.
func TestGroupHTTPAPI(t *testing.T) {
	c := withData(t)
	ctx := ctxFor(t)
	alice, bob, carol := c.Dial(0, "alice"), c.Dial(0, "bob"), c.Dial(0, "carol")

	if status, v := apiAs(t, c, "", "POST", "/api/groups", `{"group":"ops","admin":"alice","members":["bob"]}`); status != 401 || errorCode(v) != protocol.CodeUnauthorized {
		t.Fatalf("create without the key: %d %v, want 401", status, v)
	}
	if status, v := api(t, c, "POST", "/api/groups", `{"group":"ops","admin":"alice","members":["bob"]}`); status != 200 || v["group"] != "ops" || v["seq"] != 1.0 {
		t.Fatalf("create: %d %v, want 200 at offset 1", status, v)
	}
	for _, who := range []struct {
		c    *client.Client
		name string
	}{{alice, "alice"}, {bob, "bob"}} {
		if m := nextInGroup(t, who.c, who.name, "ops"); m.Event != protocol.EventCreated || m.From != "alice" || m.Seq != 1 {
			t.Fatalf("%s got %+v, want the created event from alice", who.name, m)
		}
	}
	if status, v := api(t, c, "POST", "/api/groups", `{"group":"ops","admin":"carol"}`); status != 409 || errorCode(v) != protocol.CodeConflict {
		t.Fatalf("create again: %d %v, want 409 conflict", status, v)
	}

	var info struct {
		Group   string
		Members []struct {
			User  string
			Admin bool
			Since int64
		}
		Last int64
	}
	status, v := api(t, c, "GET", "/api/groups/ops", "")
	if b, _ := json.Marshal(v); status != 200 || json.Unmarshal(b, &info) != nil {
		t.Fatalf("GET the group: %d %v", status, v)
	}
	if len(info.Members) != 2 || info.Members[0].User != "alice" || !info.Members[0].Admin || info.Members[1].User != "bob" ||
		info.Members[1].Admin || info.Members[0].Since == 0 || info.Last != 1 {
		t.Fatalf("GET the group: %+v, want alice (admin) and bob, last 1", info)
	}

	// Without `by`, the API acts as the longest-standing admin.
	if status, v := api(t, c, "POST", "/api/groups/ops/members", `{"user":"carol"}`); status != 200 || v["seq"] != 2.0 {
		t.Fatalf("add carol: %d %v, want 200 at offset 2", status, v)
	}
	if m := nextInGroup(t, carol, "carol", "ops"); m.Event != protocol.EventAdded || m.From != "alice" || m.User != "carol" || m.Seq != 2 {
		t.Fatalf("carol got %+v, want alice adding her", m)
	}
	if status, v := api(t, c, "POST", "/api/groups/ops/members", `{"user":"dave","by":"bob"}`); status != 403 || errorCode(v) != protocol.CodeForbidden {
		t.Fatalf("bob adds through the API: %d %v, want 403 forbidden", status, v)
	}
	if status, v := api(t, c, "DELETE", "/api/groups/ops/members/carol?by=bob", ""); status != 403 || errorCode(v) != protocol.CodeForbidden {
		t.Fatalf("bob removes through the API: %d %v, want 403 forbidden", status, v)
	}
	if status, v := api(t, c, "DELETE", "/api/groups/ops/members/carol?by=alice", ""); status != 200 || v["seq"] != 3.0 {
		t.Fatalf("remove carol: %d %v, want 200 at offset 3", status, v)
	}
	if m := nextInGroup(t, carol, "carol", "ops"); m.Event != protocol.EventRemoved || m.User != "carol" || m.Seq != 3 {
		t.Fatalf("carol got %+v, want her removal", m)
	}

	// POST /api/send with group: from must be a member; every connection
	// of every member gets it, the sender's own included (the API is not
	// one of them).
	if status, v := api(t, c, "POST", "/api/send", `{"from":"bob","group":"ops","body":"from the api"}`); status != 200 ||
		v["status"] != protocol.StatusSent || v["seq"] != 4.0 || v["recipients"] != 2.0 {
		t.Fatalf("send to the group: %d %v, want sent at 4 to alice and bob", status, v)
	}
	for _, who := range []struct {
		c    *client.Client
		name string
	}{{alice, "alice"}, {bob, "bob"}} {
		expectEvent(t, who.c, who.name, "ops", 2, protocol.EventAdded, "carol", "")
		expectEvent(t, who.c, who.name, "ops", 3, protocol.EventRemoved, "carol", "")
		if m := nextInGroup(t, who.c, who.name, "ops"); m.Body != "from the api" || m.From != "bob" || m.Seq != 4 {
			t.Fatalf("%s got %+v, want the API's message", who.name, m)
		}
	}
	if status, v := api(t, c, "POST", "/api/send", `{"from":"carol","group":"ops","body":"x"}`); status != 403 || errorCode(v) != protocol.CodeNotMember {
		t.Fatalf("send as a removed member: %d %v, want 403 not_member", status, v)
	}
	if err := carol.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	noMsg(t, carol, "carol after her removal")

	// The stream, whole, events included.
	var page struct {
		Messages []client.Msg
		Last     int64
		More     bool
	}
	status, v = api(t, c, "GET", "/api/groups/ops/messages?after=1", "")
	if b, _ := json.Marshal(v); status != 200 || json.Unmarshal(b, &page) != nil || len(page.Messages) != 3 || page.Last != 4 || page.More {
		t.Fatalf("GET the group's messages after 1: %d %v", status, v)
	}
	if m := page.Messages[1]; m.Seq != 3 || m.Event != protocol.EventRemoved || m.User != "carol" {
		t.Fatalf("the stream's offset 3 is %+v, want carol's removal", m)
	}

	// The conversations endpoint says what the conversations frame says.
	for _, who := range []struct {
		c    *client.Client
		name string
	}{{alice, "alice"}, {bob, "bob"}} {
		frame, err := who.c.Conversations(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := apiConversations(t, c, who.name); !reflect.DeepEqual(got, frame) || len(got) != 1 {
			t.Fatalf("%s's conversations: API %+v, frame %+v", who.name, got, frame)
		}
	}
	// Sending is reading, through the API too; alice has bob's message to read.
	if convs := apiConversations(t, c, "alice"); convs[0].Unread != 1 || convs[0].Read != 3 || !convs[0].Admin {
		t.Fatalf("alice's conversations: %+v, want ops with 1 unread after her read offset 3, admin", convs)
	}

	// Bad requests.
	for _, tc := range []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"GET", "/api/groups/nope", "", 404, protocol.CodeNotFound},
		{"POST", "/api/groups/nope/members", `{"user":"bob"}`, 404, protocol.CodeNotFound},
		{"DELETE", "/api/groups/ops/members/zed", "", 403, protocol.CodeNotMember},
		{"DELETE", "/api/groups/ops/members/alice?by=alice", "", 400, protocol.CodeBadRequest},
		{"GET", "/api/groups/b%20d", "", 400, protocol.CodeBadRequest},
		{"GET", "/api/groups/" + strings.Repeat("g", 65), "", 400, protocol.CodeBadRequest},
		{"POST", "/api/groups", `{"group":"#ops","admin":"alice"}`, 400, protocol.CodeBadRequest},
		{"POST", "/api/groups", `{"group":"ops2","admin":""}`, 400, protocol.CodeBadRequest},
		{"POST", "/api/groups", `{"group":"ops2","admin":"alice","members":["b b"]}`, 400, protocol.CodeBadRequest},
		{"POST", "/api/groups", `{"group":"ops2"`, 400, protocol.CodeBadRequest},
		{"POST", "/api/groups/ops/members", `{"user":"b b"}`, 400, protocol.CodeBadRequest},
		{"PUT", "/api/groups/ops", "", 405, protocol.CodeMethodNotAllowed},
		{"GET", "/api/users/b%20d/conversations", "", 400, protocol.CodeBadRequest},
	} {
		if status, v := api(t, c, tc.method, tc.path, tc.body); status != tc.status || errorCode(v) != tc.code {
			t.Errorf("%s %s %s: %d %v, want %d %s", tc.method, tc.path, tc.body, status, v, tc.status, tc.code)
		}
	}
}
