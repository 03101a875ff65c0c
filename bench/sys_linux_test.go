//go:build linux

package main

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// The counts a run reports per message come from /proc: a hundred writes
// show as a hundred write system calls, and a thread that sleeps and is
// woken shows as a wake-up.
func TestProcCountsSeeWhatTheProcessDid(t *testing.T) {
	f, err := os.Create(t.TempDir() + "/w")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	before, err := procIO(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	_, _, woken := procSched(0)
	for range 100 {
		if _, err := f.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Millisecond)
	after, err := procIO(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	_, _, wokenAfter := procSched(0)
	if n := after.WriteCalls - before.WriteCalls; n < 100 {
		t.Errorf("100 writes counted as %d write system calls", n)
	}
	if n := after.Written - before.Written; n < 100 {
		t.Errorf("100 bytes written counted as %d", n)
	}
	if wokenAfter <= woken {
		t.Errorf("a sleep and a wake-up counted as %d wake-ups", wokenAfter-woken)
	}
}

// A process's anonymous RSS is part of its RSS, and grows by what it
// touches: what bench counts a connection's memory by.
func TestProcMemorySeesAnonymousPages(t *testing.T) {
	rss, anon, err := procMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if anon <= 0 || anon > rss {
		t.Fatalf("RSS %d, anonymous %d: want 0 < anonymous <= RSS", rss, anon)
	}
	b := make([]byte, 64<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	_, after, err := procMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if grew := after - anon; grew < 60<<20 {
		t.Errorf("64 MiB touched grew the anonymous RSS by %d bytes", grew)
	}
	runtime.KeepAlive(b)
}
