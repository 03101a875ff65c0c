package node_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/shardchat/shard/client"
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
