package store_test

import (
	"context"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardchat/shard/store"
	"github.com/shardchat/shard/store/pgtest"
	"github.com/shardchat/shard/store/storetest"
)

// pg is one PostgreSQL server for the package's tests, started by the
// first test that needs it.
var pg pgtest.Once

func TestMain(m *testing.M) {
	code := m.Run()
	if err := pg.Stop(); err != nil {
		println("pgtest stop:", err.Error())
	}
	os.Exit(code)
}

func TestPostgresConformance(t *testing.T) {
	storetest.Run(t, storetest.Engine{Fresh: pg.FreshSchema, Shared: true})
}

// The pool's sockets to the server are rawsys's, whose reads and writes do
// not wake the runtime's monitor thread: a stored message costs about a
// third more node CPU without them (README, Performance).
func TestPostgresSocketsAreRaw(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := store.Open(ctx, pg.FreshSchema(t), store.Options{TrimInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := store.PostgresSocket(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if got != "*rawsys.Conn" {
		t.Fatalf("the pool talks to PostgreSQL through a %s, want a *rawsys.Conn", got)
	}
}

// Three nodes starting at once on an empty database all come up, and the
// schema is made once.
func TestPostgresNodesMigrateTogether(t *testing.T) {
	url := pg.FreshSchema(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	stores := make([]store.Store, 3)
	errs := make([]error, 3)
	for i := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = store.Open(ctx, url, store.Options{TrimInterval: -1})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d of 3 starting together: %v", i, err)
		}
		defer stores[i].Close()
	}
	res, err := stores[2].Append(ctx, store.Append{Mid: "m1", From: "alice", To: "bob", Body: "hi", TS: 1})
	if err != nil || res.Seq != 1 {
		t.Fatalf("append after a concurrent start: %+v, %v", res, err)
	}
	msgs, _, _, err := stores[0].Read(ctx, store.Inbox("bob"), 0, 10)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("another node reads %d messages (%v), want the one appended", len(msgs), err)
	}
}

// A database of schema version 1 (before groups) opens and is migrated:
// its messages read as before, its keys still answer resends, offsets go
// on, and conversations count from the first message after the upgrade.
func TestPostgresMigratesVersion1(t *testing.T) {
	url := pg.FreshSchema(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	for _, sql := range []string{
		`CREATE TABLE shard_schema (version integer NOT NULL); INSERT INTO shard_schema VALUES (1)`,
		store.SchemaMigrations[0],
		`INSERT INTO shard_streams VALUES (false, 'bob', 2), (false, 'alice', 2), (true, 'lobby', 1)`,
		`INSERT INTO shard_messages VALUES
			(false, 'bob', 1, 'm1', 'alice', 'bob', '', 'one', 1), (false, 'alice', 1, 'm1', 'alice', 'bob', '', 'one', 1),
			(false, 'bob', 2, 'm2', 'alice', 'bob', '', 'two', 2), (false, 'alice', 2, 'm2', 'alice', 'bob', '', 'two', 2),
			(true, 'lobby', 1, 'm3', 'alice', '', 'lobby', 'room', 3)`,
		`INSERT INTO shard_keys VALUES ('alice', 'k1', ` + strconv.FormatInt(now, 10) + `, 'm2', 2, 2, 2, 'delivered', 1)`,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("building a version 1 database: %v", err)
		}
	}
	conn.Close(ctx)
	st, err := store.Open(ctx, url, store.Options{TrimInterval: -1})
	if err != nil {
		t.Fatalf("opening a version 1 database: %v", err)
	}
	defer st.Close()
	msgs, last, _, err := st.Read(ctx, store.Inbox("bob"), 0, 10)
	if err != nil || last != 2 || len(msgs) != 2 || msgs[1].Body != "two" || msgs[1].To != "bob" {
		t.Fatalf("bob's inbox after the migration: %+v, last %d, %v; want its two messages", msgs, last, err)
	}
	if msgs, _, _, err := st.Read(ctx, store.RoomStream("lobby"), 0, 10); err != nil || len(msgs) != 1 || msgs[0].Room != "lobby" {
		t.Fatalf("lobby after the migration: %+v, %v", msgs, err)
	}
	dup, err := st.Append(ctx, store.Append{Mid: "again", From: "alice", To: "bob", Body: "two", TS: now, Key: "k1"})
	if err != nil || !dup.Duplicate || dup.Seq != 2 || dup.Answer == nil || dup.Answer.Status != "delivered" {
		t.Fatalf("a resend of a key stored before the migration: %+v, %v; want the first answer", dup, err)
	}
	res, err := st.Append(ctx, store.Append{Mid: "m4", From: "carol", To: "bob", Body: "new", TS: now})
	if err != nil || res.Seq != 3 {
		t.Fatalf("an append after the migration: %+v, %v; want bob's offset 3", res, err)
	}
	list, err := st.Conversations(ctx, "bob")
	if err != nil || len(list) != 1 || list[0].With != "carol" || list[0].Last != 3 || list[0].Unread != 1 {
		t.Fatalf("bob's conversations: %+v, %v; want carol's, one unread (history before the upgrade is not counted)", list, err)
	}
}

func BenchmarkPostgresAppend(b *testing.B) {
	storetest.BenchAppend(b, pg.FreshSchema)
}

func BenchmarkPostgresRead(b *testing.B) {
	storetest.BenchRead(b, pg.FreshSchema)
}

func BenchmarkPostgresGroupAppend(b *testing.B) {
	storetest.BenchGroupAppend(b, pg.FreshSchema)
}

func BenchmarkPostgresConversations(b *testing.B) {
	storetest.BenchConversations(b, pg.FreshSchema)
}

// Retention never waits for a key row another transaction holds (an
// answer being recorded, a resend's lookup): it skips the row until a
// later pass. Waiting there, in whatever order the rows come, is what let
// a retention pass and a batch of answers deadlock.
func TestPostgresRetentionSkipsKeysInUse(t *testing.T) {
	url := pg.FreshSchema(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var now atomic.Int64 // the store's clock, read by its committers
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	st, err := store.Open(ctx, url, store.Options{TrimInterval: -1, KeyWindow: time.Minute, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, key := range []string{"held", "free"} {
		if _, err := st.Append(ctx, store.Append{Mid: "m-" + key, From: "alice", To: "bob", Body: "hi", TS: clock().UnixMilli(), Key: key}); err != nil {
			t.Fatal(err)
		}
	}
	now.Add(int64(2 * time.Minute)) // both keys are past their window

	holder, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(ctx)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM shard_keys WHERE key = 'held' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	trimCtx, trimCancel := context.WithTimeout(ctx, 5*time.Second)
	removed, err := st.Trim(trimCtx)
	trimCancel()
	if err != nil || removed != 1 {
		t.Fatalf("retention while a key row is held: removed %d, %v; want the free key removed without waiting", removed, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if removed, err := st.Trim(ctx); err != nil || removed != 1 {
		t.Fatalf("retention once the row is free: removed %d, %v; want the held key", removed, err)
	}
}
