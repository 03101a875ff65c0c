package store

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// A data directory written before groups (message and key records of
// version 1, no conversation records) opens as it is: its messages read
// as before, its keys answer resends, and conversations count from the
// first message after the upgrade.
func TestEmbeddedOpensVersion1Records(t *testing.T) {
	dir := t.TempDir()
	db, err := pebble.Open(dir, &pebble.Options{Logger: quietPebble{}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	v1Message := func(ts int64, mid, from, to, body string) []byte {
		b := binary.AppendVarint([]byte{1}, ts)
		for _, s := range []string{mid, from, to, "", body} {
			b = appendStr(b, s)
		}
		return b
	}
	v1Key := binary.AppendVarint(binary.AppendVarint(binary.AppendVarint(binary.AppendVarint([]byte{1}, now), 2), 2), 2)
	v1Key = binary.AppendVarint(appendStr(appendStr(v1Key, "m2"), "delivered"), 1)
	for k, v := range map[string][]byte{
		string(counterKey(nil, Inbox("bob"))):      binary.BigEndian.AppendUint64(nil, 2),
		string(msgKey(nil, Inbox("bob"), 1)):       v1Message(1, "m1", "alice", "bob", "one"),
		string(msgKey(nil, Inbox("bob"), 2)):       v1Message(2, "m2", "alice", "bob", "two"),
		string(keyKey(nil, "alice", "k1")):         v1Key,
		string(expiryKey(nil, now, "alice", "k1")): nil,
	} {
		if err := db.Set([]byte(k), v, pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := Open(ctx, "file:"+dir, Options{TrimInterval: -1})
	if err != nil {
		t.Fatalf("opening a version 1 directory: %v", err)
	}
	defer st.Close()
	msgs, last, _, err := st.Read(ctx, Inbox("bob"), 0, 10)
	if err != nil || last != 2 || len(msgs) != 2 || msgs[1].Body != "two" || msgs[1].From != "alice" || msgs[1].TS != 2 {
		t.Fatalf("bob's inbox of version 1: %+v, last %d, %v; want its two messages", msgs, last, err)
	}
	dup, err := st.Append(ctx, Append{Mid: "again", From: "alice", To: "bob", Body: "two", TS: now, Key: "k1"})
	if err != nil || !dup.Duplicate || dup.Seq != 2 || dup.Answer == nil || *dup.Answer != (Answer{"delivered", 1}) {
		t.Fatalf("a resend of a version 1 key: %+v, %v; want its first answer", dup, err)
	}
	if _, err := st.Append(ctx, Append{Mid: "m3", From: "carol", To: "bob", Body: "new", TS: now}); err != nil {
		t.Fatal(err)
	}
	list, err := st.Conversations(ctx, "bob")
	if err != nil || len(list) != 1 || list[0].With != "carol" || list[0].Last != 3 || list[0].Unread != 1 {
		t.Fatalf("bob's conversations: %+v, %v; want carol's, one unread (history before the upgrade is not counted)", list, err)
	}
}
