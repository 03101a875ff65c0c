package rawsys

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// A Conn writes more than the socket takes at once, waiting for room as
// the peer reads, and reads what the peer writes, byte for byte.
func TestConnWritesAllAndReadsBack(t *testing.T) {
	_, server, client := loopbackPair(t)
	// A small send buffer, so that the socket is full long before the
	// write is done (the peer's receive buffer starts at 128 KiB): the
	// write must wait for the peer to read.
	if err := client.(*net.TCPConn).SetWriteBuffer(4 << 10); err != nil {
		t.Fatal(err)
	}
	c := Wrap(client)
	if _, ok := c.(*Conn); !ok {
		t.Fatalf("Wrap of a TCP conn gave %T, want *Conn", c)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	wrote := make(chan error, 1)
	go func() {
		n, err := c.Write(big)
		if err == nil && n != len(big) {
			err = io.ErrShortWrite
		}
		wrote <- err
	}()
	first := make([]byte, 1)
	if _, err := io.ReadFull(server, first); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-wrote:
		t.Fatalf("1 MiB went into the sockets' buffers before the peer read it (%v)", err)
	default:
	}
	got := append(first, make([]byte, len(big)-1)...)
	if err := server.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(server, got[1:]); err != nil {
		t.Fatalf("the peer read: %v", err)
	}
	if err := <-wrote; err != nil {
		t.Fatalf("write of 1 MiB: %v", err)
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
// the past, as pgx does to cancel a query, with an error that says timeout;
// with the deadline cleared, the Conn reads again.
func TestConnReadEndsWhenTheDeadlineMoves(t *testing.T) {
	_, server, client := loopbackPair(t)
	c := Wrap(client)
	done := make(chan error, 1)
	started := time.Now()
	go func() {
		_, err := c.Read(make([]byte, 8))
		done <- err
	}()
	moved := time.AfterFunc(100*time.Millisecond, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer moved.Stop()
	select {
	case err := <-done:
		var ne net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("read past the deadline: %v, want a timeout", err)
		}
		if waited := time.Since(started); waited < 90*time.Millisecond {
			t.Fatalf("the read ended after %v, before its deadline moved: it never waited", waited)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a read did not end when its deadline moved into the past")
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Write([]byte("again")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 5)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "again" {
		t.Fatalf("read once the deadline was cleared: %q %v, want again", b, err)
	}
}

// A write that cannot finish by its deadline says how much it wrote, which
// pgx needs to know whether the query may be sent again.
func TestConnWriteTellsWhatItWroteByTheDeadline(t *testing.T) {
	_, _, client := loopbackPair(t) // the peer never reads
	c := Wrap(client)
	if err := c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 64<<20)
	n, err := c.Write(big)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a write the peer does not read: %v, want the deadline", err)
	}
	if n <= 0 || n >= len(big) {
		t.Fatalf("wrote %d of %d bytes by the deadline, want a part", n, len(big))
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
	var op *net.OpError
	if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) || !errors.As(err, &op) || op.Addr == nil {
		t.Fatalf("writes to a closed peer: %v, want a broken pipe or a reset, with the addresses", err)
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
