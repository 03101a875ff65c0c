package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/internal/shardproc"
	"github.com/shardchat/shard/internal/testcluster"
	"github.com/shardchat/shard/internal/tmpfs"
	"github.com/shardchat/shard/internal/wait"
)

// TestFullDiskIsAnsweredUnavailableAndWritesResume runs a node with the
// embedded store on a tmpfs of its own (as root; skipped otherwise) and
// fills the disk while messages flow: the node lives, every send is
// answered (acked, or `unavailable` saying the disk is full), /api/cluster
// says the store is down, writes resume by themselves once the filler is
// deleted, and every acked message is in the recipient's sync, also after
// a restart.
func TestFullDiskIsAnsweredUnavailableAndWritesResume(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level store fault test")
	}
	// 192 MiB: Pebble's files and its 32 MiB ballast, then more than the
	// 64 MiB reserve free.
	disk := tmpfs.Mount(t, "192m")
	spec := shardproc.Spec{Name: "n1", Addrs: testcluster.FreeAddrs(t, "127.0.0.2"),
		Args: []string{"--data", filepath.Join(disk, "db")}, Log: filepath.Join(t.TempDir(), "n1.log")}
	p := testcluster.StartProcess(t, spec)
	testcluster.WaitReady(t, p)
	procs := []*shardproc.Process{p}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	traffic := startStoreTraffic(t, ctx, procs, []string{"bob"})

	flowing := time.Now()
	wait.For(t, 20*time.Second, 10*time.Millisecond, func() error {
		if n := traffic.count(0, flowing, acked); n < 100 {
			return fmt.Errorf("%d sends acked before the disk fills", n)
		}
		return nil
	})
	filler := filepath.Join(disk, "filler")
	full := time.Now()
	filled := tmpfs.Fill(t, filler)
	waitStoreState(t, 3*time.Second, "down", procs)
	wait.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := traffic.count(0, full, refusedUnavailable); n < 20 {
			return fmt.Errorf("disk full: %d sends answered unavailable", n)
		}
		return nil
	})
	if code := p.Wait(0); code != -1 {
		t.Fatalf("the node exited %d on a full disk", code)
	}
	traffic.mu.Lock()
	for _, o := range traffic.sent[0] {
		var ce *client.Error
		if o.at.After(full) && errors.As(o.err, &ce) && !strings.Contains(ce.Message, "disk is full") {
			t.Errorf("a send on a full disk was refused with %q, which does not say the disk is full", ce.Message)
			break
		}
	}
	traffic.mu.Unlock()

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	wait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if traffic.count(0, freed, acked) == 0 {
			return errors.New("nothing stored since the filler was deleted")
		}
		return nil
	})
	t.Logf("a %d MiB filler filled the disk; writes resumed %s after it was deleted",
		filled>>20, time.Since(freed).Round(time.Millisecond))
	waitStoreState(t, 5*time.Second, "ok", procs)
	close(traffic.stop)
	traffic.wg.Wait()

	want := map[int64]string{}
	refused := 0
	for _, o := range traffic.sent[0] {
		switch {
		case acked(o):
			want[o.seq] = o.body
		case refusedUnavailable(o):
			refused++
		default:
			t.Errorf("%q was answered %q / %v: neither an ack with an offset nor unavailable", o.body, o.status, o.err)
		}
	}
	checkSynced := func(when string) {
		t.Helper()
		bob, err := client.Dial(ctx, client.Options{URL: "ws://" + p.HTTP + "/ws", User: "bob"})
		if err != nil {
			t.Fatal(err)
		}
		defer bob.Close()
		synced := map[int64]string{}
		for _, m := range syncAll(t, ctx, bob, 0) {
			synced[m.Seq] = m.Body
		}
		for seq, body := range want {
			if synced[seq] != body {
				t.Errorf("%s: %q was acked with offset %d, which bob's sync gives as %q", when, body, seq, synced[seq])
			}
		}
	}
	checkSynced("after the disk was full")
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(15 * time.Second); code != 0 {
		t.Fatalf("drain exited %d", code)
	}
	p = testcluster.StartProcess(t, spec)
	testcluster.WaitReady(t, p)
	checkSynced("after a restart")
	t.Logf("%d sends: %d acked, %d answered unavailable while the disk was full", len(traffic.sent[0]), len(want), refused)
}
