package link

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// The node-to-node frame: a 4-byte big-endian length, then the body:
//
//	kind (1 byte) | request id (uvarint) | payload
//
// A reply carries the id of its request. The link reserves two kinds for
// itself; every other kind is the caller's, and the link carries it as is.

// Kind says what a frame is. KindHello and KindReply are the link's own;
// callers number their requests from FirstRequestKind up.
type Kind byte

const (
	// KindHello is the first frame each way on a new link: who is dialing,
	// and the proof that both ends hold the cluster key.
	KindHello Kind = 1
	// KindReply is the answer to a request; its id is the request's.
	KindReply Kind = 2
	// FirstRequestKind is the lowest kind a caller may use for a request.
	FirstRequestKind Kind = 3
)

// Version is checked in the hello; a peer speaking another is refused.
// Version 2 added the X25519 keys to the hello and sealed frames.
const Version = 2

// MaxFrame bounds one node-to-node frame: a chat message is bounded by the
// client's --max-frame (64 KiB by default) and a register batch by the
// router's batch size (1000 keys), both far below.
const MaxFrame = 4 << 20

// ErrMalformed says a peer sent bytes that are not a well-formed frame or
// payload; the link that carried them is closed.
var ErrMalformed = errors.New("malformed node-to-node frame")

// maxHeader is the longest frame header: length, kind and a request id.
const maxHeader = 4 + 1 + binary.MaxVarintLen64

// appendFrame appends one frame to b.
func appendFrame(b []byte, k Kind, id uint64, payload []byte) []byte {
	start := len(b)
	b = slices.Grow(b, maxHeader+len(payload))
	b = append(b, 0, 0, 0, 0, byte(k))
	b = binary.AppendUvarint(b, id)
	b = append(b, payload...)
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	return b
}

// WriteFrame writes one frame to w in a single Write.
func WriteFrame(w io.Writer, k Kind, id uint64, payload []byte) error {
	_, err := w.Write(appendFrame(nil, k, id, payload))
	return err
}

// ReadFrame reads one frame of at most limit bytes into a fresh buffer: the
// payload may be kept by the caller (a forwarded message is queued as is to
// client connections).
func ReadFrame(br *bufio.Reader, limit int) (Kind, uint64, []byte, error) {
	return readFrame(br, limit, nil)
}

// readFrame reads one frame, sealed by c when c is not nil: then limit bounds
// what is inside the seal.
func readFrame(br *bufio.Reader, limit int, c *frameCipher) (Kind, uint64, []byte, error) {
	var lenBuf [4]byte
	if _, err := io.ReadFull(br, lenBuf[:]); err != nil {
		return 0, 0, nil, err
	}
	n := binary.BigEndian.Uint32(lenBuf[:])
	min, max := uint32(2), uint32(limit)
	if c != nil {
		min, max = min+sealOverhead, max+sealOverhead
	}
	if n < min || n > max {
		return 0, 0, nil, fmt.Errorf("%w: length %d", ErrMalformed, n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		return 0, 0, nil, err
	}
	if c != nil {
		var err error
		if body, err = c.open(body, lenBuf[:]); err != nil {
			return 0, 0, nil, err
		}
	}
	id, m := binary.Uvarint(body[1:])
	if m <= 0 {
		return 0, 0, nil, ErrMalformed
	}
	return Kind(body[0]), id, body[1+m:], nil
}
