package store_test

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

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

func BenchmarkPostgresAppend(b *testing.B) {
	storetest.BenchAppend(b, pg.FreshSchema)
}

func BenchmarkPostgresRead(b *testing.B) {
	storetest.BenchRead(b, pg.FreshSchema)
}
