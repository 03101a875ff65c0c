package rawsys

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// loopbackPair is a connected TCP pair on 127.0.0.1: the server's side read
// through a Reader, the client's to write with.
func loopbackPair(t *testing.T) (*Reader, net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	raw, err := server.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return NewReader(raw), server, client
}

// A read waits for bytes that come later, returns what came, and says EOF
// once the peer closed; written bytes come back as they were.
func TestReaderWaitsForBytesAndSaysEOF(t *testing.T) {
	r, _, client := loopbackPair(t)
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, 64)
		n, err := io.ReadFull(r, b[:11])
		if err != nil {
			t.Errorf("read: %v", err)
		}
		got <- b[:n]
	}()
	if _, err := client.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Write([]byte(", world")); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if string(b) != "hello, worl" {
			t.Fatalf("read %q, want %q", b, "hello, worl")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the reader did not wake for bytes written after it began to wait")
	}
	client.Close()
	b := make([]byte, 8)
	n, err := r.Read(b)
	if n != 1 || b[0] != 'd' || err != nil {
		t.Fatalf("read after close: %d %q %v, want the last byte", n, b[:n], err)
	}
	if n, err := r.Read(b); n != 0 || err != io.EOF {
		t.Fatalf("read after the last byte: %d, %v, want io.EOF", n, err)
	}
}

// The socket's read deadline holds for a Reader as for net.Conn.
func TestReaderKeepsTheDeadline(t *testing.T) {
	r, server, _ := loopbackPair(t)
	if err := server.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := r.Read(make([]byte, 8))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read past the deadline: %v, want os.ErrDeadlineExceeded", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a read past its deadline did not return")
	}
}

// Write writes on a descriptor, and Read of an empty buffer is no call.
func TestWriteThenRead(t *testing.T) {
	r, _, client := loopbackPair(t)
	raw, err := client.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var werr error
	if err := raw.Write(func(fd uintptr) bool {
		n, werr = Write(fd, []byte("abc"))
		return werr != syscall.EAGAIN
	}); err != nil || werr != nil || n != 3 {
		t.Fatalf("write: %d %v %v", n, err, werr)
	}
	if n, err := r.Read(nil); n != 0 || err != nil {
		t.Fatalf("read of nothing: %d %v", n, err)
	}
	b := make([]byte, 3)
	if _, err := io.ReadFull(r, b); err != nil || string(b) != "abc" {
		t.Fatalf("read %q %v, want abc", b, err)
	}
}
