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

	"github.com/gorilla/websocket"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/internal/testcluster"
	"github.com/shardchat/shard/node"
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
		last = ack.SenderSeq // her own copy's offset, which the receipt names
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
	// A device of alice's that was away learns it from her list.
	if convs, err := alice.Conversations(ctx); err != nil || len(convs) != 1 || convs[0].PeerRead != last {
		t.Fatalf("alice's conversations: %+v %v, want bob's read up to her offset %d (peer_read)", convs, err, last)
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

// A direct send's ack says where the sender's own copy sits in its inbox,
// which is the offset the recipient's receipt names: the sending device
// can tell which of its messages were read. Alice's inbox holds carol's
// messages first, so that her offsets and bob's differ.
func TestDirectAckNamesTheSendersCopyThatTheReceiptNames(t *testing.T) {
	c := withData(t)
	ctx := ctxFor(t)
	alice, alicePhone, bob, carol := c.Dial(0, "alice"), c.Dial(0, "alice"), c.Dial(0, "bob"), c.Dial(0, "carol")
	for i := 0; i < 2; i++ {
		if _, err := carol.Send(ctx, "alice", fmt.Sprint("from carol ", i)); err != nil {
			t.Fatal(err)
		}
		recvMsg(t, alice, "alice")
		recvMsg(t, alicePhone, "alice's phone")
	}
	ack, err := alice.Send(ctx, "bob", "read me")
	if err != nil {
		t.Fatal(err)
	}
	if ack.Seq != 1 || ack.SenderSeq != 3 {
		t.Fatalf("alice's ack: %+v, want offset 1 in bob's inbox and 3 in hers", ack)
	}
	if m := recvMsg(t, alicePhone, "alice's phone"); m.Body != "read me" || m.Seq != ack.SenderSeq {
		t.Fatalf("alice's phone got %+v, want her copy at the ack's sender_seq %d", m, ack.SenderSeq)
	}
	m := recvMsg(t, bob, "bob")
	if err := bob.Read(ctx, "alice", m.Seq); err != nil {
		t.Fatal(err)
	}
	if r := recvReceipt(t, alice, "alice"); r.By != "bob" || r.Seq != ack.SenderSeq {
		t.Fatalf("alice got %+v, want bob read up to her copy at %d", r, ack.SenderSeq)
	}
}

// A member asks who is in the group and who its admins are (the page's
// member list); anyone else cannot tell the group from none.
func TestGroupMembersAreShownToMembersOnly(t *testing.T) {
	c := withData(t)
	ctx := ctxFor(t)
	alice, bob, carol := c.Dial(0, "alice"), c.Dial(0, "bob"), c.Dial(0, "carol")
	if _, err := alice.CreateGroup(ctx, "team", "bob"); err != nil {
		t.Fatal(err)
	}
	members, err := bob.GroupMembers(ctx, "team")
	if err != nil || len(members) != 2 || members[0].User != "alice" || !members[0].Admin ||
		members[1].User != "bob" || members[1].Admin || members[1].Since == 0 {
		t.Fatalf("bob asks the members: %+v %v, want alice (admin) and bob", members, err)
	}
	var e *client.Error
	for _, group := range []string{"team", "no-such-group"} {
		if _, err := carol.GroupMembers(ctx, group); !errors.As(err, &e) || e.Code != protocol.CodeNotMember {
			t.Fatalf("carol asks the members of %s: %v, want not_member", group, err)
		}
	}
	if _, err := alice.LeaveGroup(ctx, "team"); err != nil {
		t.Fatal(err)
	}
	if members, err := bob.GroupMembers(ctx, "team"); err != nil || len(members) != 1 || !members[0].Admin {
		t.Fatalf("after alice left: %+v %v, want bob alone, admin", members, err)
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
	return testcluster.NextMsg(t, cl, who+" (in "+group+")", 5*time.Second, func(m client.Msg) bool { return m.Group == group })
}

// expectEvent checks that cl's next message of group is the event at seq.
func expectEvent(t *testing.T, cl *client.Client, who, group string, seq int64, event, user, admin string) {
	t.Helper()
	m := nextInGroup(t, cl, who, group)
	if m.Seq != seq || m.Event != event || m.User != user || m.Admin != admin {
		t.Fatalf("%s got %+v, want event %s of %s at %d (admin %q)", who, m, event, user, seq, admin)
	}
}

func conversationOf(convs []client.Conversation, with, group string) (client.Conversation, bool) {
	for _, cv := range convs {
		if cv.With == with && cv.Group == group {
			return cv, true
		}
	}
	return client.Conversation{}, false
}

// When the last admin leaves, the longest-standing member (the one added
// first, not the first by name) becomes admin, and says so on the `left`
// event; when the last member leaves the group is gone, and its name can be
// taken again without showing the old group's messages.
func TestLeavingHandsAdminToTheLongestStandingAndTheLastEndsTheGroup(t *testing.T) {
	c := withData(t)
	ctx := ctxFor(t)
	alice, carol, bob, aaron := c.Dial(0, "alice"), c.Dial(0, "carol"), c.Dial(0, "bob"), c.Dial(0, "aaron")
	var e *client.Error
	step := func(what string, ack client.Ack, err error, seq int64) {
		t.Helper()
		if err != nil || ack.Status != protocol.StatusOK || ack.Seq != seq {
			t.Fatalf("%s: %+v %v, want ok at offset %d", what, ack, err, seq)
		}
	}
	ack, err := alice.CreateGroup(ctx, "team", "carol")
	step("create", ack, err, 1)
	ack, err = alice.AddMember(ctx, "team", "bob")
	step("add bob", ack, err, 2)
	ack, err = alice.AddMember(ctx, "team", "aaron")
	step("add aaron", ack, err, 3)
	expectEvent(t, carol, "carol", "team", 1, protocol.EventCreated, "", "")
	expectEvent(t, carol, "carol", "team", 2, protocol.EventAdded, "bob", "")
	expectEvent(t, carol, "carol", "team", 3, protocol.EventAdded, "aaron", "")
	expectEvent(t, bob, "bob", "team", 2, protocol.EventAdded, "bob", "")
	expectEvent(t, bob, "bob", "team", 3, protocol.EventAdded, "aaron", "")
	expectEvent(t, aaron, "aaron", "team", 3, protocol.EventAdded, "aaron", "")

	// alice, the only admin, leaves: carol was there first.
	ack, err = alice.LeaveGroup(ctx, "team")
	step("alice leaves", ack, err, 4)
	for _, who := range []struct {
		c    *client.Client
		name string
	}{{carol, "carol"}, {bob, "bob"}, {aaron, "aaron"}} {
		expectEvent(t, who.c, who.name, "team", 4, protocol.EventLeft, "alice", "carol")
	}
	if convs, err := alice.Conversations(ctx); err != nil || len(convs) != 0 {
		t.Fatalf("alice's conversations after she left: %+v %v, want none", convs, err)
	}
	if convs, err := carol.Conversations(ctx); err != nil || len(convs) != 1 || !convs[0].Admin {
		t.Fatalf("carol's conversations: %+v %v, want team as its admin", convs, err)
	}
	if _, err := bob.AddMember(ctx, "team", "dave"); !errors.As(err, &e) || e.Code != protocol.CodeForbidden {
		t.Fatalf("bob, not an admin, adds: %v, want forbidden", err)
	}
	if _, err := alice.SendGroup(ctx, "team", "still here?"); !errors.As(err, &e) || e.Code != protocol.CodeNotMember {
		t.Fatalf("alice sends after leaving: %v, want not_member", err)
	}

	// carol leaves: bob was added before aaron, whose name comes first.
	ack, err = carol.LeaveGroup(ctx, "team")
	step("carol leaves", ack, err, 5)
	expectEvent(t, bob, "bob", "team", 5, protocol.EventLeft, "carol", "bob")
	expectEvent(t, aaron, "aaron", "team", 5, protocol.EventLeft, "carol", "bob")
	// bob leaves: aaron is the last member, and its admin.
	ack, err = bob.LeaveGroup(ctx, "team")
	step("bob leaves", ack, err, 6)
	expectEvent(t, aaron, "aaron", "team", 6, protocol.EventLeft, "bob", "aaron")
	if ack, err := aaron.SendGroup(ctx, "team", "alone"); err != nil || ack.Status != protocol.StatusSent || ack.Seq != 7 || ack.Recipients != 0 {
		t.Fatalf("aaron, alone: %+v %v, want sent at 7 to no one", ack, err)
	}
	ack, err = aaron.LeaveGroup(ctx, "team")
	step("the last member leaves", ack, err, 8)

	// The group is gone.
	if _, err := aaron.SyncGroup(ctx, "team", 0); !errors.As(err, &e) || e.Code != protocol.CodeNotMember {
		t.Fatalf("sync of a gone group: %v, want not_member", err)
	}
	if status, v := api(t, c, "GET", "/api/groups/team", ""); status != 404 || errorCode(v) != protocol.CodeNotFound {
		t.Fatalf("GET a gone group: %d %v, want 404 not_found", status, v)
	}
	for _, who := range []*client.Client{alice, carol, bob, aaron} {
		if convs, err := who.Conversations(ctx); err != nil || len(convs) != 0 {
			t.Fatalf("conversations after the group ended: %+v %v, want none", convs, err)
		}
	}

	// Its name is free again; the new group's stream goes on from the old
	// one's offsets, and no member sees the old messages.
	ack, err = bob.CreateGroup(ctx, "team", "carol")
	step("created again", ack, err, 9)
	expectEvent(t, carol, "carol", "team", 9, protocol.EventCreated, "", "")
	ack, err = carol.SyncGroup(ctx, "team", 0)
	if err != nil || ack.Last != 9 || ack.More {
		t.Fatalf("carol syncs the new group: %+v %v, want last 9", ack, err)
	}
	expectEvent(t, carol, "carol", "team", 9, protocol.EventCreated, "", "")
	if err := carol.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	noMsg(t, carol, "carol, after syncing the new group")
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

// Unread counts right after a mix of direct and group traffic, with reads
// from two devices of one user: both devices and the HTTP API say the same,
// sending is reading, a lower read changes nothing, and every read tells
// the peer (in its own inbox's offsets), the group and the other device.
func TestUnreadCountsAfterDirectAndGroupTrafficAndReadsFromTwoDevices(t *testing.T) {
	unreadAfterMixedTraffic(t, withData(t), [4]int{0, 0, 0, 0})
}

// unreadAfterMixedTraffic is the test above on cluster c, with alice's
// two devices, bob and carol on the nodes of at.
func unreadAfterMixedTraffic(t *testing.T, c *testcluster.Cluster, at [4]int) {
	ctx := ctxFor(t)
	pc, phone := c.Dial(at[0], "alice"), c.Dial(at[1], "alice")
	bob, carol := c.Dial(at[2], "bob"), c.Dial(at[3], "carol")
	must := func(ack client.Ack, err error) client.Ack {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return ack
	}
	must(pc.CreateGroup(ctx, "team", "bob", "carol"))
	for i := 0; i < 3; i++ {
		must(bob.Send(ctx, "alice", fmt.Sprint("bob ", i)))
	}
	carolFirst := must(carol.Send(ctx, "alice", "carol 0")) // offset 4 in alice's inbox
	must(carol.Send(ctx, "alice", "carol 1"))
	must(bob.SendGroup(ctx, "team", "bob in team 0"))
	must(bob.SendGroup(ctx, "team", "bob in team 1"))
	must(carol.SendGroup(ctx, "team", "carol in team"))
	must(phone.Send(ctx, "bob", "answer")) // sending is reading: bob's 3 are read
	must(bob.Send(ctx, "alice", "bob again"))
	if carolFirst.Seq != 4 {
		t.Fatalf("carol's first message is at %d in alice's inbox, want 4", carolFirst.Seq)
	}

	type want struct {
		last, read, unread int64
		admin              bool
	}
	check := func(when string, expect map[string]want) {
		t.Helper()
		fromPC, err := pc.Conversations(ctx)
		if err != nil {
			t.Fatal(err)
		}
		fromPhone, err := phone.Conversations(ctx)
		if err != nil {
			t.Fatal(err)
		}
		fromAPI := apiConversations(t, c, "alice")
		if !reflect.DeepEqual(fromPC, fromPhone) || !reflect.DeepEqual(fromPC, fromAPI) {
			t.Fatalf("%s: the devices and the API disagree:\npc    %+v\nphone %+v\napi   %+v", when, fromPC, fromPhone, fromAPI)
		}
		if len(fromPC) != len(expect) {
			t.Fatalf("%s: %d conversations %+v, want %d", when, len(fromPC), fromPC, len(expect))
		}
		for i, cv := range fromPC {
			name := cv.With + cv.Group
			w, ok := expect[name]
			if !ok || cv.Last != w.last || cv.Read != w.read || cv.Unread != w.unread || cv.Admin != w.admin {
				t.Errorf("%s: %s is %+v, want %+v", when, name, cv, w)
			}
			if i > 0 && cv.TS > fromPC[i-1].TS {
				t.Errorf("%s: %s (ts %d) listed after an older one (ts %d)", when, name, cv.TS, fromPC[i-1].TS)
			}
		}
	}
	check("after the traffic", map[string]want{
		"bob":   {last: 7, read: 6, unread: 1},
		"carol": {last: 5, read: 0, unread: 2},
		"team":  {last: 4, read: 1, unread: 3, admin: true},
	})

	// The phone reads carol's first message: carol hears where that is in
	// her own inbox, the pc where alice stands in hers.
	if err := phone.Read(ctx, "carol", 4); err != nil {
		t.Fatal(err)
	}
	if r := recvReceipt(t, carol, "carol"); r.By != "alice" || r.With != "alice" || r.Seq != 1 {
		t.Fatalf("carol got %+v, want alice read up to carol's inbox offset 1", r)
	}
	if r := recvReceipt(t, pc, "alice's pc"); r.By != "alice" || r.With != "carol" || r.Seq != 4 {
		t.Fatalf("alice's pc got %+v, want alice read carol up to 4", r)
	}
	// The pc reads the group up to bob's second message.
	if err := pc.ReadGroup(ctx, "team", 3); err != nil {
		t.Fatal(err)
	}
	for _, who := range []struct {
		c    *client.Client
		name string
	}{{phone, "alice's phone"}, {bob, "bob"}, {carol, "carol"}} {
		if r := recvReceipt(t, who.c, who.name); r.By != "alice" || r.Group != "team" || r.Seq != 3 {
			t.Fatalf("%s got %+v, want alice read team up to 3", who.name, r)
		}
	}
	// A lower read is acked and changes nothing.
	if err := pc.Read(ctx, "carol", 2); err != nil {
		t.Fatal(err)
	}
	check("after the reads", map[string]want{
		"bob":   {last: 7, read: 6, unread: 1},
		"carol": {last: 5, read: 4, unread: 1},
		"team":  {last: 4, read: 3, unread: 1, admin: true},
	})
	for _, who := range []*client.Client{phone, carol} {
		if err := who.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-who.Receipts():
			t.Fatalf("a read that moved nothing sent %+v", r)
		default:
		}
	}

	// The others: each one's own messages are read by sending them.
	bobs, err := bob.Conversations(ctx)
	if err != nil || len(bobs) != 2 {
		t.Fatalf("bob's conversations: %+v %v", bobs, err)
	}
	if cv, _ := conversationOf(bobs, "alice", ""); cv.Last != 5 || cv.Read != 5 || cv.Unread != 0 {
		t.Errorf("bob's conversation with alice: %+v, want last 5, read 5 (his own), none unread", cv)
	}
	if cv, _ := conversationOf(bobs, "", "team"); cv.Last != 4 || cv.Read != 3 || cv.Unread != 1 || cv.Admin {
		t.Errorf("bob's team: %+v, want carol's message unread", cv)
	}
	if got := apiConversations(t, c, "bob"); !reflect.DeepEqual(got, bobs) {
		t.Errorf("bob's conversations: API %+v, frame %+v", got, bobs)
	}
}

// Bad group frames get the code SPEC 8 gives them, change nothing, and
// disturb no one: the connection keeps working and other users' traffic
// goes on.
func TestBadGroupInputGetsItsCodeAndDisturbsNothing(t *testing.T) {
	dir := t.TempDir()
	c := testcluster.Start(t, 1, func(_ int, cfg *node.Config) {
		cfg.Data, cfg.APIKey, cfg.MaxGroupMembers = dir, "k", 3
	})
	ctx := ctxFor(t)
	alice, bob := c.Dial(0, "alice"), c.Dial(0, "bob")
	mallory := dialRaw(t, c, 0, "mallory")
	if _, err := alice.CreateGroup(ctx, "team", "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.CreateGroup(ctx, "crew", "mallory"); err != nil {
		t.Fatal(err)
	}
	if f := mallory.read(); f["type"] != protocol.TypeMsg || f["event"] != protocol.EventCreated || f["group"] != "crew" {
		t.Fatalf("mallory got %v, want crew's created event", f)
	}
	many := make([]string, protocol.MaxListLen+1)
	for i := range many {
		many[i] = fmt.Sprintf("%q", fmt.Sprint("u", i))
	}
	cases := []struct {
		name, frame, code string
	}{
		{"send to an unknown group", `{"type":"send","id":"u1","group":"nope","body":"x"}`, protocol.CodeNotMember},
		{"sync of an unknown group", `{"type":"sync","id":"u2","group":"nope"}`, protocol.CodeNotMember},
		{"read of an unknown group", `{"type":"read","id":"u3","group":"nope","seq":1}`, protocol.CodeNotMember},
		{"add to an unknown group", `{"type":"group_add","id":"u4","group":"nope","user":"bob"}`, protocol.CodeNotMember},
		{"remove from an unknown group", `{"type":"group_remove","id":"u5","group":"nope","user":"bob"}`, protocol.CodeNotMember},
		{"leave an unknown group", `{"type":"group_leave","id":"u6","group":"nope"}`, protocol.CodeNotMember},
		{"send by a non-member", `{"type":"send","id":"n1","group":"team","body":"x"}`, protocol.CodeNotMember},
		{"sync by a non-member", `{"type":"sync","id":"n2","group":"team","after":0}`, protocol.CodeNotMember},
		{"read by a non-member", `{"type":"read","id":"n3","group":"team","seq":1}`, protocol.CodeNotMember},
		{"add by a non-member", `{"type":"group_add","id":"n4","group":"team","user":"mallory"}`, protocol.CodeNotMember},
		{"leave by a non-member", `{"type":"group_leave","id":"n5","group":"team"}`, protocol.CodeNotMember},
		{"add by a non-admin", `{"type":"group_add","id":"a1","group":"crew","user":"eve"}`, protocol.CodeForbidden},
		{"remove by a non-admin", `{"type":"group_remove","id":"a2","group":"crew","user":"alice"}`, protocol.CodeForbidden},
		{"create an existing group", `{"type":"group_create","id":"x1","group":"team","members":[]}`, protocol.CodeConflict},
		{"create past --max-group-members", `{"type":"group_create","id":"b1","group":"big","members":["a","b","c"]}`, protocol.CodeBadRequest},
		{"create naming too many", `{"type":"group_create","id":"b2","group":"huge","members":[` + strings.Join(many, ",") + `]}`, protocol.CodeBadRequest},
		{"remove oneself", `{"type":"group_remove","id":"b3","group":"crew","user":"mallory"}`, protocol.CodeBadRequest},
		{"malformed group in a send", `{"type":"send","id":"m1","group":"b d","body":"x"}`, protocol.CodeBadRequest},
		{"group too long", `{"type":"send","id":"m2","group":"` + strings.Repeat("g", 65) + `","body":"x"}`, protocol.CodeBadRequest},
		{"group not a string", `{"type":"sync","id":"m3","group":7}`, protocol.CodeBadRequest},
		{"create without a group", `{"type":"group_create","id":"m4","members":[]}`, protocol.CodeBadRequest},
		{"members not a list", `{"type":"group_create","id":"m5","group":"g","members":"bob"}`, protocol.CodeBadRequest},
		{"a malformed member", `{"type":"group_create","id":"m6","group":"g","members":["ok","b d"]}`, protocol.CodeBadRequest},
		{"add without a user", `{"type":"group_add","id":"m7","group":"crew"}`, protocol.CodeBadRequest},
		{"add of a malformed user", `{"type":"group_add","id":"m8","group":"crew","user":"#eve"}`, protocol.CodeBadRequest},
		{"send with to and group", `{"type":"send","id":"m9","to":"bob","group":"crew","body":"x"}`, protocol.CodeBadRequest},
		{"read without seq", `{"type":"read","id":"r1","group":"crew"}`, protocol.CodeBadRequest},
		{"read with with and group", `{"type":"read","id":"r2","group":"crew","with":"bob","seq":1}`, protocol.CodeBadRequest},
		{"read with neither", `{"type":"read","id":"r3","seq":1}`, protocol.CodeBadRequest},
		{"read of a negative offset", `{"type":"read","id":"r4","group":"crew","seq":-1}`, protocol.CodeBadRequest},
	}
	for _, tc := range cases {
		mallory.write(websocket.TextMessage, tc.frame)
		f := mallory.read()
		id := strings.SplitN(strings.SplitN(tc.frame, `"id":"`, 2)[1], `"`, 2)[0]
		if f["type"] != protocol.TypeError || f["code"] != tc.code || f["id"] != id {
			t.Errorf("%s: answer %v, want error %s with id %s", tc.name, f, tc.code, id)
		}
		if msg, _ := f["message"].(string); msg == "" {
			t.Errorf("%s: error without a message", tc.name)
		}
	}
	// The admin's own refusals.
	var e *client.Error
	if _, err := alice.RemoveMember(ctx, "team", "zed"); !errors.As(err, &e) || e.Code != protocol.CodeNotMember {
		t.Fatalf("removing a non-member: %v, want not_member", err)
	}
	if _, err := alice.AddMember(ctx, "crew", "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.AddMember(ctx, "crew", "eve"); !errors.As(err, &e) || e.Code != protocol.CodeBadRequest {
		t.Fatalf("a 4th member with --max-group-members 3: %v, want bad_request", err)
	}

	// mallory's connection works, and nothing refused was stored or sent.
	if f := mallory.read(); f["type"] != protocol.TypeMsg || f["event"] != protocol.EventAdded || f["user"] != "bob" || f["seq"] != 2.0 {
		t.Fatalf("mallory got %v, want bob's joining crew at 2", f)
	}
	mallory.write(websocket.TextMessage, `{"type":"send","id":"ok1","group":"crew","body":"hello crew"}`)
	if f := mallory.read(); f["type"] != protocol.TypeAck || f["status"] != protocol.StatusSent || f["seq"] != 3.0 || f["recipients"] != 2.0 {
		t.Fatalf("mallory's send to crew: %v, want sent at 3 to alice and bob", f)
	}
	if ack, err := alice.SendGroup(ctx, "team", "hello team"); err != nil || ack.Seq != 2 || ack.Recipients != 1 {
		t.Fatalf("alice's send to team: %+v %v, want offset 2 (nothing refused took one), to bob", ack, err)
	}
	sendOK(t, alice, "bob", "direct", protocol.StatusDelivered)
	for _, want := range []struct{ group, what string }{
		{"team", protocol.EventCreated}, {"crew", protocol.EventAdded}, {"crew", "hello crew"}, {"team", "hello team"}, {"", "direct"},
	} {
		m := recvMsg(t, bob, "bob")
		if m.Group != want.group || (m.Event != want.what && m.Body != want.what) {
			t.Fatalf("bob got %+v, want %s in %q", m, want.what, want.group)
		}
	}
	if err := bob.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	noMsg(t, bob, "bob")
	for _, g := range []string{"big", "huge", "g"} {
		if status, v := api(t, c, "GET", "/api/groups/"+g, ""); status != 404 {
			t.Errorf("a refused create made %s: %d %v", g, status, v)
		}
	}
}

// Without a store there are no groups nor read state: every frame and
// endpoint of them is bad_request, saying so, and the node goes on serving.
func TestGroupsWithoutAStoreAreBadRequests(t *testing.T) {
	c := testcluster.Start(t, 1, func(_ int, cfg *node.Config) { cfg.APIKey = "k" })
	rc := dialRaw(t, c, 0, "alice")
	for _, frame := range []string{
		`{"type":"group_create","id":"f1","group":"team","members":["bob"]}`,
		`{"type":"group_add","id":"f2","group":"team","user":"bob"}`,
		`{"type":"group_remove","id":"f3","group":"team","user":"bob"}`,
		`{"type":"group_leave","id":"f4","group":"team"}`,
		`{"type":"send","id":"f5","group":"team","body":"hi"}`,
		`{"type":"sync","id":"f6","group":"team"}`,
		`{"type":"read","id":"f7","group":"team","seq":1}`,
		`{"type":"read","id":"f8","with":"bob","seq":1}`,
		`{"type":"conversations","id":"f9"}`,
	} {
		rc.write(websocket.TextMessage, frame)
		if f := rc.read(); f["type"] != protocol.TypeError || f["code"] != protocol.CodeBadRequest ||
			!strings.Contains(fmt.Sprint(f["message"]), "message store") {
			t.Errorf("%s: %v, want bad_request saying it needs a message store", frame, f)
		}
	}
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/api/groups", `{"group":"team","admin":"alice"}`},
		{"GET", "/api/groups/team", ""},
		{"POST", "/api/groups/team/members", `{"user":"bob"}`},
		{"DELETE", "/api/groups/team/members/bob", ""},
		{"GET", "/api/groups/team/messages", ""},
		{"GET", "/api/users/alice/conversations", ""},
		{"POST", "/api/send", `{"from":"alice","group":"team","body":"hi"}`},
	} {
		status, v := api(t, c, tc.method, tc.path, tc.body)
		if e, _ := v["error"].(map[string]any); status != 400 || e["code"] != protocol.CodeBadRequest ||
			!strings.Contains(fmt.Sprint(e["message"]), "message store") {
			t.Errorf("%s %s: %d %v, want 400 bad_request saying it needs a message store", tc.method, tc.path, status, v)
		}
	}
	rc.write(websocket.TextMessage, `{"type":"ping","id":"p"}`)
	if f := rc.read(); f["type"] != protocol.TypePong {
		t.Fatalf("ping: %v", f)
	}
}
