package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shardchat/shard/internal/tmpfs"
	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/store"
)

// The full-disk tests mount a tmpfs (as root; they skip otherwise, saying
// so) and fill it with a file, as another program on the node's disk
// would. Without the disk guard, Pebble ends the process at the first
// append on a full disk ("pebble: fatal commit error: ... no space left on
// device").

// appendAll appends n 1 KiB messages from alice to bob and returns the
// offsets acked and the errors.
func appendAll(ctx context.Context, st store.Store, tag string, n int) (acked map[int64]string, errs []error) {
	acked = map[int64]string{}
	body := string(make([]byte, 1000))
	for i := range n {
		mid := fmt.Sprintf("%s-%d", tag, i)
		res, err := st.Append(ctx, store.Append{Mid: mid, From: "alice", To: "bob", Body: body, TS: 1})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		acked[res.Seq] = mid
	}
	return acked, errs
}

// checkInbox fails t unless every acked offset of bob's inbox holds its
// message.
func checkInbox(t *testing.T, ctx context.Context, st store.Store, acked map[int64]string) {
	t.Helper()
	have := map[int64]string{}
	for after := int64(0); ; {
		msgs, _, more, err := st.Read(ctx, store.Inbox("bob"), after, store.MaxReadLimit)
		if err != nil {
			t.Fatalf("read bob's inbox after %d: %v", after, err)
		}
		for _, m := range msgs {
			have[m.Seq] = m.Mid
			after = m.Seq
		}
		if !more {
			break
		}
	}
	for seq, mid := range acked {
		if have[seq] != mid {
			t.Errorf("offset %d was acked for %s but holds %q", seq, mid, have[seq])
		}
	}
}

func TestEmbeddedOnAFullDiskRefusesWritesAndResumesWhenSpaceReturns(t *testing.T) {
	disk := tmpfs.Mount(t, "160m")
	dir := filepath.Join(disk, "db")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, dir, store.Options{TrimInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { st.Close() }()
	acked, errs := appendAll(ctx, st, "before", 200)
	if len(errs) > 0 {
		t.Fatalf("appends on a disk with room: %v", errs[0])
	}

	filler := filepath.Join(disk, "filler")
	tmpfs.Fill(t, filler)
	// An append within the guard's 10 ms between two statfs may still land,
	// on the ballast's room; the others are refused.
	more, errs := appendAll(ctx, st, "full", 50)
	if len(errs) < 45 {
		t.Fatalf("on a full disk %d of 50 appends were acked, want them refused", len(more))
	}
	for _, err := range errs {
		if !errors.Is(err, store.ErrFull) || !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("an append on a full disk failed with %v, want ErrFull", err)
		}
	}
	for seq, mid := range more {
		acked[seq] = mid
	}
	if h := st.Health(); h.OK || h.Cause == "" {
		t.Fatalf("health on a full disk: %+v, want down with its cause", h)
	}
	checkInbox(t, ctx, st, acked) // reads go on

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	// The next append resumes at once; health turns within a probe.
	after, errs := appendAll(ctx, st, "after", 200)
	if len(errs) > 0 {
		t.Fatalf("appends once the space is back: %v", errs[0])
	}
	wait.For(t, 3*time.Second, 20*time.Millisecond, func() error {
		if h := st.Health(); !h.OK {
			return fmt.Errorf("health once the space is back: %+v", h)
		}
		return nil
	})
	for seq, mid := range after {
		acked[seq] = mid
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if st, err = store.Open(ctx, dir, store.Options{TrimInterval: -1}); err != nil {
		t.Fatalf("reopen after the full disk: %v", err)
	}
	checkInbox(t, ctx, st, acked)
}

// With no reserve to refuse writes early, a write meets ENOSPC inside
// Pebble: the ballast goes, the write is retried and lands, and the
// writes after it are refused until space returns; the process lives.
func TestEmbeddedSurvivesADiskThatFillsUnderPebble(t *testing.T) {
	disk := tmpfs.Mount(t, "64m")
	dir := filepath.Join(disk, "db")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opts := store.WithBallast(store.Options{TrimInterval: -1, DiskReserve: -1}, 8<<20)
	st, err := store.Open(ctx, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { st.Close() }()
	if _, err := os.Stat(filepath.Join(dir, "shard-ballast")); err != nil {
		t.Fatalf("no ballast: %v", err)
	}
	filler := filepath.Join(disk, "filler")
	tmpfs.Fill(t, filler)
	// Each append now writes to a full disk until one meets ENOSPC.
	acked, errs := appendAll(ctx, st, "full", 20000)
	if len(errs) == 0 || !errors.Is(errs[0], store.ErrFull) {
		t.Fatalf("20000 appends to a full disk: %d acked, first error %v; want ErrFull once the disk was met full", len(acked), errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "shard-ballast")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the ballast is still there (%v): the disk never filled under Pebble", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	after, errs := appendAll(ctx, st, "after", 100)
	if len(errs) > 0 {
		t.Fatalf("appends once the space is back: %v", errs[0])
	}
	if _, err := os.Stat(filepath.Join(dir, "shard-ballast")); err != nil {
		t.Fatalf("the ballast was not made again: %v", err)
	}
	for seq, mid := range after {
		acked[seq] = mid
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if st, err = store.Open(ctx, dir, opts); err != nil {
		t.Fatalf("reopen after the full disk: %v", err)
	}
	checkInbox(t, ctx, st, acked)
}
