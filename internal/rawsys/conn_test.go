package rawsys

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// A Conn writes more than the socket takes at once, waiting for room as
// the peer reads, and reads what the peer writes, byte for byte.
func TestConnWritesAllAndReadsBack(t *testing.T) {
	_, server, client := loopbackPair(t)
	c := Wrap(client)
	if _, ok := c.(*Conn); !ok {
		t.Fatalf("Wrap of a TCP conn gave %T, want *Conn", c)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB: far past a socket's buffers
	wrote := make(chan error, 1)
	go func() {
		n, err := c.Write(big)
		if err == nil && n != len(big) {
			err = io.ErrShortWrite
		}
		wrote <- err
	}()
	got := make([]byte, len(big))
	if err := server.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(server, got); err != nil {
		t.Fatalf("the peer read: %v", err)
	}
	if err := <-wrote; err != nil {
		t.Fatalf("write of 4 MiB: %v", err)
	}
	if !bytes.Equal(got, big) {
		t.Fatal("the peer read other bytes than were written")
	}
	if _, err := server.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if err := c.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "pong" {
		t.Fatalf("read %q %v, want pong", b, err)
	}
	server.Close()
	if n, err := c.Read(b); n != 0 || err != io.EOF {
		t.Fatalf("read once the peer closed: %d %v, want io.EOF", n, err)
	}
}

// A read that waits ends when another goroutine moves the deadline into
// the past, as pgx does to cancel a query, with an error that says timeout.
func TestConnReadEndsWhenTheDeadlineMoves(t *testing.T) {
	_, _, client := loopbackPair(t)
	c := Wrap(client)
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 8))
		done <- err
	}()
	// The read may not have begun to wait yet: a deadline already past
	// ends it either way.
	if err := c.SetDeadline(time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		var ne net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("read past the deadline: %v, want a timeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a read did not end when its deadline moved into the past")
	}
}

// A write to a peer that is gone fails rather than waits; once the Conn is
// closed its calls say so.
func TestConnWriteToAGonePeerFails(t *testing.T) {
	_, server, client := loopbackPair(t)
	c := Wrap(client)
	server.Close()
	deadline := time.Now().Add(10 * time.Second)
	if err := c.SetWriteDeadline(deadline); err != nil {
		t.Fatal(err)
	}
	var err error
	for err == nil && time.Now().Before(deadline) { // the first writes may land before the reset comes back
		_, err = c.Write([]byte("hello"))
	}
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("writes to a closed peer: %v, want a broken pipe or a reset", err)
	}
	c.Close()
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v, want net.ErrClosed", err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after Close: %v, want net.ErrClosed", err)
	}
}

// What is not a socket is left as it is.
func TestWrapLeavesAPipe(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if c := Wrap(a); c != a {
		t.Fatalf("Wrap of a pipe gave %T, want the pipe", c)
	}
}
