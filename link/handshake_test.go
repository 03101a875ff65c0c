package link

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// fuzzConn is a connection whose far end sent exactly what it reads, and
// that swallows what is written to it.
type fuzzConn struct {
	net.Conn
	r io.Reader
}

func (c fuzzConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c fuzzConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c fuzzConn) Close() error                     { return nil }
func (c fuzzConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (c fuzzConn) SetDeadline(time.Time) error      { return nil }
func (c fuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (c fuzzConn) SetWriteDeadline(time.Time) error { return nil }

func frameBytes(k Kind, payload []byte) []byte {
	var b bytes.Buffer
	WriteFrame(&b, k, 0, payload)
	return b.Bytes()
}

// FuzzHandshake feeds arbitrary bytes to everything that reads a hello
// before the peer is known, and to the opening of sealed frames: none may
// panic, a declared length past the hello's bound must not allocate it, and
// nothing may pass as authenticated.
func FuzzHandshake(f *testing.F) {
	keyed := hello{version: Version, name: "n", inc: "i", nonce: make([]byte, nonceLen), pub: make([]byte, 32)}
	keyless := keyed
	keyless.pub = nil
	f.Add(append(frameBytes(KindHello, appendHello(nil, keyless)), frameBytes(KindHello, AppendBytes(nil, nil))...))
	f.Add(frameBytes(KindHello, appendHello(nil, keyed)))
	f.Add(frameBytes(KindHello, answer{nonce: make([]byte, nonceLen), pub: make([]byte, 32), mac: make([]byte, 32)}.head()))
	f.Add(binary.BigEndian.AppendUint32(nil, MaxFrame))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))

	ln := listen(f, "127.0.0.1")
	links := map[bool]*Links{
		false: New(Config{Self: "s", DialTimeout: time.Nanosecond}, ln),
		true:  New(Config{Self: "s", Key: []byte("k"), DialTimeout: time.Nanosecond}, ln),
	}
	links[false].SetPeers(map[string]Member{"n": {Addr: "127.0.0.1:1", Inc: "i"}})
	f.Cleanup(func() { links[false].Close(); links[true].Close() })
	sealer, opener, err := frameKeys(make([]byte, 32), []byte("k"), nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sealer.appendFrame(nil, FirstRequestKind, 1, []byte("sealed")))

	f.Fuzz(func(t *testing.T, p []byte) {
		for k, l := range links {
			parseHello(p, k)
			parseAnswer(p, k)
			lc := newConn(l, "n", "127.0.0.1:1")
			lc.nc = fuzzConn{r: bytes.NewReader(p)}
			if _, _, err := lc.serverHandshake(bufio.NewReader(lc.nc)); err == nil && k {
				t.Fatal("fuzzed bytes passed a keyed hello as an acceptor")
			}
			lc.nc = fuzzConn{r: bytes.NewReader(p)}
			if err := lc.clientHandshake(bufio.NewReader(lc.nc)); err == nil && k {
				t.Fatal("fuzzed bytes passed a keyed hello as a dialer")
			}
		}
		parseProof(p)
		if _, _, _, err := readFrame(bufio.NewReader(bytes.NewReader(p)), MaxFrame, opener); err == nil {
			t.Fatal("fuzzed bytes opened as a sealed frame")
		}
	})
}
