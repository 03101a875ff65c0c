package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/internal/shardproc"
	"github.com/shardchat/shard/internal/testcluster"
	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/store/pgtest"
)

// storeOutcome is one send of the store-fault tests and its answer.
type storeOutcome struct {
	to, body string
	status   string // the ack's, or "" with err
	seq      int64
	err      error
	at       time.Time // when the answer came
}

// storeTraffic is sendersPerNode senders on each node, each sending to the
// recipient on the next node as fast as its answers come back (paced to
// 2 ms at most), so that appends are in flight on every node when the
// database goes; it keeps every answer, by node.
type storeTraffic struct {
	mu   sync.Mutex
	sent [][]storeOutcome // by sender
	stop chan struct{}
	wg   sync.WaitGroup
}

const sendersPerNode = 3

func startStoreTraffic(t *testing.T, ctx context.Context, procs []*shardproc.Process, recipients []string) *storeTraffic {
	st := &storeTraffic{sent: make([][]storeOutcome, len(procs)), stop: make(chan struct{})}
	for k := range len(procs) * sendersPerNode {
		i := k % len(procs)
		p := procs[i]
		cl, err := client.Dial(ctx, client.Options{URL: "ws://" + p.HTTP + "/ws", User: fmt.Sprintf("sender%d", k+1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		st.wg.Add(1)
		go func() {
			defer st.wg.Done()
			pace := time.NewTicker(2 * time.Millisecond)
			defer pace.Stop()
			to := recipients[(i+1)%len(recipients)]
			for n := 0; ; n++ {
				select {
				case <-st.stop:
					return
				case <-pace.C:
				}
				body := fmt.Sprintf("from %d #%d", k+1, n)
				sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
				ack, err := cl.Send(sctx, to, body)
				cancel()
				st.mu.Lock()
				st.sent[i] = append(st.sent[i], storeOutcome{to: to, body: body, status: ack.Status, seq: ack.Seq, err: err, at: time.Now()})
				st.mu.Unlock()
			}
		}()
	}
	return st
}

// count is how many answers sender i got since since that match.
func (st *storeTraffic) count(i int, since time.Time, match func(storeOutcome) bool) int {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := 0
	for _, o := range st.sent[i] {
		if o.at.After(since) && match(o) {
			n++
		}
	}
	return n
}

func acked(o storeOutcome) bool { return o.err == nil && o.seq > 0 }

func refusedUnavailable(o storeOutcome) bool {
	var ce *client.Error
	return errors.As(o.err, &ce) && ce.Code == protocol.CodeUnavailable
}

// waitStoreState waits until every node's /api/cluster says the store is
// state.
func waitStoreState(t *testing.T, within time.Duration, state string, procs []*shardproc.Process) {
	t.Helper()
	wait.For(t, within, 20*time.Millisecond, func() error {
		for _, p := range procs {
			v, err := p.Cluster()
			if err != nil {
				return err
			}
			if v.StoreState != state {
				return fmt.Errorf("%s's /api/cluster says store_state %q (%s), want %q", p.Name, v.StoreState, v.StoreError, state)
			}
		}
		return nil
	})
}

// TestPostgresStoppedAndKilledUnderTrafficLosesNothingAcked runs three
// processes on one PostgreSQL while a sender on each node sends to a
// recipient on the next, and takes the database away twice: a fast
// shutdown (pg_ctl stop -m fast), then SIGKILL of the server and all its
// backends, each followed by a start. Every send is answered (acked, or
// `unavailable` while it could not be stored), /api/cluster says the store
// is down meanwhile, every node stores again within 5 s of the database's
// return, and every acked message is in the database and in its
// recipient's sync afterwards.
func TestPostgresStoppedAndKilledUnderTrafficLosesNothingAcked(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level store fault test")
	}
	srv, err := pgtest.StartServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop() })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := srv.CreateDatabase(ctx, "shard"); err != nil {
		t.Fatal(err)
	}
	procs := testcluster.StartProcesses(t, 3, "--store", srv.URL("shard"))
	recipients := []string{"recipient1", "recipient2", "recipient3"}
	var dials []*client.Client
	for i, p := range procs {
		cl, err := client.Dial(ctx, client.Options{URL: "ws://" + p.HTTP + "/ws", User: recipients[i]})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		dials = append(dials, cl)
	}
	// The recipients read what comes live and forget it: their sync at the
	// end is what is checked.
	stopReading := make(chan struct{})
	var reading sync.WaitGroup
	for _, cl := range dials {
		reading.Add(1)
		go func() {
			defer reading.Done()
			for {
				select {
				case <-cl.Messages():
				case <-stopReading:
					return
				}
			}
		}()
	}
	traffic := startStoreTraffic(t, ctx, procs, recipients)

	for _, fault := range []struct {
		name  string
		apply func()
	}{
		{"stopped (fast shutdown)", srv.Down},
		{"killed (SIGKILL of the server and its backends)", srv.Crash},
	} {
		flowing := time.Now()
		wait.For(t, 20*time.Second, 10*time.Millisecond, func() error {
			for i := range procs {
				if n := traffic.count(i, flowing, acked); n < 50 {
					return fmt.Errorf("before the database is %s: %d sends acked through n%d", fault.name, n, i+1)
				}
			}
			return nil
		})
		down := time.Now()
		fault.apply()
		waitStoreState(t, 3*time.Second, "down", procs)
		// The outage lasts until every node has answered sends unavailable.
		wait.For(t, 10*time.Second, 10*time.Millisecond, func() error {
			for i := range procs {
				if n := traffic.count(i, down, refusedUnavailable); n < 20 {
					return fmt.Errorf("database %s: n%d answered %d sends unavailable", fault.name, i+1, n)
				}
			}
			return nil
		})
		if err := srv.Up(); err != nil {
			t.Fatal(err)
		}
		back := time.Now()
		wait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
			for i := range procs {
				if traffic.count(i, back, acked) == 0 {
					return fmt.Errorf("database back after being %s: n%d has stored nothing since", fault.name, i+1)
				}
			}
			return nil
		})
		t.Logf("database %s: every node stored again %s after its return", fault.name, time.Since(back).Round(time.Millisecond))
		waitStoreState(t, 5*time.Second, "ok", procs)
	}
	close(traffic.stop)
	traffic.wg.Wait()
	close(stopReading)
	reading.Wait()

	// Every send was answered: acked, or refused unavailable.
	byRecipient := map[string]map[int64]string{}
	total, refused := 0, 0
	for i, sent := range traffic.sent {
		for _, o := range sent {
			total++
			switch {
			case acked(o):
				if o.status != protocol.StatusDelivered && o.status != protocol.StatusStored {
					t.Errorf("n%d: %q acked %s, want delivered or stored", i+1, o.body, o.status)
				}
				if byRecipient[o.to] == nil {
					byRecipient[o.to] = map[int64]string{}
				}
				byRecipient[o.to][o.seq] = o.body
			case refusedUnavailable(o):
				refused++
			default:
				t.Errorf("n%d: %q was answered %+v / %v: neither an ack with an offset nor unavailable", i+1, o.body, o.status, o.err)
			}
		}
	}
	// Every acked offset holds its message, in the database and in the
	// recipient's sync.
	conn, err := pgx.Connect(ctx, srv.URL("shard"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for i := range dials {
		want := byRecipient[recipients[i]]
		inDB := map[int64]string{}
		rows, err := conn.Query(ctx, `SELECT seq, body FROM shard_messages WHERE kind = 0 AND name = $1`, recipients[i])
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var seq int64
			var body string
			if err := rows.Scan(&seq, &body); err != nil {
				t.Fatal(err)
			}
			inDB[seq] = body
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		// A connection of its own for the sync: the reader's channel may
		// still hold live messages, whose offsets would skip a page.
		cl, err := client.Dial(ctx, client.Options{URL: "ws://" + procs[i].HTTP + "/ws", User: recipients[i]})
		if err != nil {
			t.Fatal(err)
		}
		synced := map[int64]string{}
		for _, m := range syncAll(t, ctx, cl, 0) {
			synced[m.Seq] = m.Body
		}
		cl.Close()
		for seq, body := range want {
			if inDB[seq] != body {
				t.Errorf("%q was acked with offset %d of %s's inbox, which holds %q in the database", body, seq, recipients[i], inDB[seq])
			}
			if synced[seq] != body {
				t.Errorf("%q was acked with offset %d of %s's inbox, which %s's sync gives as %q", body, seq, recipients[i], recipients[i], synced[seq])
			}
		}
	}
	t.Logf("%d sends: %d acked, %d answered unavailable while the database was away", total, total-refused, refused)
}
