package session

import (
	"encoding/binary"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/shardchat/shard/protocol"
)

// The read side of a connection. No goroutine waits on an idle connection's
// socket: the poller (poll_linux.go) watches every socket, and when one has
// bytes a goroutine reads what is there into a pooled buffer, acts on every
// whole frame, keeps the part of a frame that has not all arrived, and has
// the poller watch the socket again. A goroutine parked in a read per
// connection costs an idle connection 4 KiB of stack, as much as all the
// rest of it (README, Performance). Frames are parsed here rather than by
// the WebSocket library, whose reader blocks until a whole message is in.

// readBufferSize is what one read takes from a socket: a burst of chat
// frames; a larger frame arrives over several reads.
const readBufferSize = 8 << 10

// maxControlPayload is the largest payload of a control frame (RFC 6455 5.5).
const maxControlPayload = 125

// closeProtocolError is the close code for a frame RFC 6455 forbids (7.4.1).
const closeProtocolError = 1002

// The opcodes of RFC 6455 5.2 that a client may send.
const (
	opContinuation = 0
	opText         = 1
	opBinary       = 2
	opClose        = 8
	opPing         = 9
	opPong         = 10
)

// readBuffers holds the buffers of reads (newReadBuffer): an idle
// connection holds none.
var readBuffers = sync.Pool{New: func() any { return newReadBuffer() }}

// readReady reads and acts on what the socket holds, and, for a busy
// client, on what it sends next until it has been quiet for activeLinger
// (readActive), then has the poller watch the socket again; or, when the
// connection has ended, ends the reader. The poller runs it in a goroutine of its own, one
// at a time per connection, so frames are handled in the order they came.
func (c *Conn) readReady() {
	c.mu.Lock()
	if c.readEnded {
		c.mu.Unlock()
		return
	}
	c.reading = true
	c.mu.Unlock()

	rb := readBuffers.Get().(*readBuffer)
	reason, ended := c.readActive(rb)
	readBuffers.Put(rb)
	c.readDone(reason, ended)
}

// readDone ends a read: the poller watches the socket again, or, when the
// connection has ended (ended, or its socket closed meanwhile), the reader
// stops for good. While reading is set, only the reader may stop it.
func (c *Conn) readDone(reason CloseReason, ended bool) {
	c.mu.Lock()
	c.reading = false
	if !ended && c.socketClosed.Load() {
		reason, ended = CloseClientGone, true
	}
	if !ended && c.rearm() != nil {
		reason, ended = CloseClientGone, true
	}
	c.readEnded = ended
	c.mu.Unlock()
	if ended {
		c.endReader(reason)
	}
}

// consume parses p, the bytes just read, after what an earlier read left of
// a frame, and acts on every whole frame in it. What is left of a frame not
// yet whole is kept for the next read.
func (c *Conn) consume(p []byte) (reason CloseReason, ended bool) {
	if len(c.in) > 0 {
		c.in = append(c.in, p...)
		p = c.in
	}
	for len(p) > 0 {
		h, complete, bad := parseClientHeader(p)
		switch {
		case bad != "":
			return c.protocolError(bad), true
		case !complete:
			c.keep(p)
			return CloseReason{}, false
		}
		if bad := c.checkSequence(h); bad != "" {
			return c.protocolError(bad), true
		}
		if h.opcode < 8 && uint64(len(c.msg))+h.length > uint64(c.cfg.MaxFrame) {
			_ = c.raw.WriteFrame(opClose, closePayload(protocol.CloseTooBig.Code, protocol.CloseTooBig.Text), time.Now().Add(closeGrace))
			return CloseTooBig, true
		}
		end := uint64(h.size) + h.length
		if uint64(len(p)) < end {
			c.keep(p)
			return CloseReason{}, false
		}
		payload := p[h.size:end]
		p = p[end:]
		if h.opcode >= 8 {
			unmask(payload, payload, h.mask)
			if reason, ended = c.control(h.opcode, payload); ended {
				return reason, true
			}
			continue
		}
		c.lastFrame.Store(time.Now().UnixNano())
		if h.fin && h.opcode != opContinuation {
			msg := make([]byte, len(payload)) // the handler may keep it: never the pooled buffer
			unmask(msg, payload, h.mask)
			c.message(h.opcode, msg)
			continue
		}
		if h.opcode != opContinuation {
			c.msgKind = h.opcode
		}
		start := len(c.msg)
		c.msg = append(c.msg, payload...)
		unmask(c.msg[start:], payload, h.mask)
		if h.fin {
			msg, kind := c.msg, c.msgKind
			c.msg, c.msgKind = nil, 0
			c.message(kind, msg)
		}
	}
	c.in = nil // between frames: an idle connection holds no buffer
	return CloseReason{}, false
}

// keep holds p, the start of a frame not yet whole, for the next read.
func (c *Conn) keep(p []byte) {
	if len(c.in) > 0 { // p is the tail of c.in
		c.in = c.in[:copy(c.in, p)]
		return
	}
	c.in = append([]byte(nil), p...)
}

// checkSequence checks a frame's place in a message (RFC 6455 5.4): a
// continuation only inside a fragmented message, a new message only outside
// one, control frames anywhere.
func (c *Conn) checkSequence(h frameHeader) string {
	switch {
	case h.opcode >= 8:
		return ""
	case h.opcode == opContinuation && c.msgKind == 0:
		return "continuation frame without a message to continue"
	case h.opcode != opContinuation && c.msgKind != 0:
		return "a new message began before the fragmented one ended"
	}
	return ""
}

// protocolError answers a frame RFC 6455 forbids with a close frame (1002)
// naming it, and ends the connection.
func (c *Conn) protocolError(text string) CloseReason {
	_ = c.raw.WriteFrame(opClose, closePayload(closeProtocolError, text), time.Now().Add(closeGrace))
	return CloseProtocolError
}

// control acts on a ping, a pong or a close. Control frames take tokens
// like messages: a ping over the rate gets no pong, and a flood of pongs
// empties the bucket for the frames after it.
func (c *Conn) control(opcode byte, payload []byte) (reason CloseReason, ended bool) {
	c.lastFrame.Store(time.Now().UnixNano())
	switch opcode {
	case opPing:
		if c.takeToken() {
			_ = c.raw.WriteFrame(opPong, payload, time.Now().Add(closeGrace))
		}
	case opPong:
		c.takeToken()
	case opClose:
		var answer []byte // no code: none in the answer either
		if len(payload) >= 2 {
			code := int(binary.BigEndian.Uint16(payload))
			if !validCloseCode(code) {
				return c.protocolError("bad close code " + strconv.Itoa(code)), true
			}
			if !utf8.Valid(payload[2:]) {
				return c.protocolError("close reason is not valid UTF-8"), true
			}
			answer = closePayload(code, "")
		}
		// Answer the client's close with its own code (RFC 6455 5.5.1).
		_ = c.raw.WriteFrame(opClose, answer, time.Now().Add(closeGrace))
		return CloseByClient, true
	}
	return CloseReason{}, false
}

// validCloseCode reports whether a client may send code (RFC 6455 7.4).
func validCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	default:
		return code >= 3000 && code <= 4999
	}
}

// message acts on one whole data message: a frame for the router, or the
// error that answers it.
func (c *Conn) message(opcode byte, p []byte) {
	if c.closeBegun.Load() {
		// Closing already (a drain, a cut): the frame is not acted on, but a
		// frame with an id is still owed its answer. The reader goes on until
		// the client's close, so the socket ends without a reset.
		switch f, ferr := protocol.DecodeFrame(p); {
		case ferr != nil:
			if ferr.ID != "" {
				c.Send(protocol.AppendError(nil, ferr.ID, ferr.Code, ferr.Message))
			}
		case f.ID == "":
		case f.Type == protocol.TypePing:
			c.Send(protocol.AppendPong(nil, f.ID))
		default:
			c.Send(protocol.AppendError(nil, f.ID, protocol.CodeUnavailable, "this connection is closing; reconnect"))
		}
		return
	}
	if !c.takeToken() {
		id := ""
		if opcode == opText {
			if f, _ := protocol.DecodeFrame(p); protocol.ValidID(f.ID) {
				id = f.ID
			}
		}
		c.Send(protocol.AppendError(nil, id, protocol.CodeRateLimited, "more than the allowed frames per second; slow down"))
		return
	}
	if opcode != opText {
		c.Send(protocol.AppendError(nil, "", protocol.CodeBadRequest, "binary frames are not accepted; send JSON text frames"))
		return
	}
	f, ferr := protocol.DecodeFrame(p)
	if ferr != nil {
		c.Send(protocol.AppendError(nil, ferr.ID, ferr.Code, ferr.Message))
		return
	}
	if f.Type == protocol.TypePing {
		c.Send(protocol.AppendPong(nil, f.ID))
		return
	}
	c.mu.Lock()
	draining := c.draining
	if !draining {
		c.inflight++
	}
	c.mu.Unlock()
	if draining {
		c.Send(protocol.AppendError(nil, f.ID, protocol.CodeUnavailable, "this node is shutting down; reconnect"))
		return
	}
	c.h.HandleFrame(c, &f)
}

// endReader stops the read side for good: the connection closes for reason
// (unless it was closing already) and the handler hears of it.
func (c *Conn) endReader(reason CloseReason) {
	c.in, c.msg = nil, nil
	c.mu.Lock()
	if c.readerStop != nil {
		close(c.readerStop)
	}
	c.mu.Unlock()
	c.Close(reason)
	c.h.Closed(c, c.Reason())
	c.partDone()
}

// frameHeader is what a client frame's header says (RFC 6455 5.2).
type frameHeader struct {
	fin    bool
	opcode byte
	size   int // bytes of the header
	length uint64
	mask   [4]byte
}

// parseClientHeader reads the header of the frame at the start of p. With
// complete false, p does not hold all of it yet; bad names a header that
// RFC 6455 forbids from a client.
func parseClientHeader(p []byte) (h frameHeader, complete bool, bad string) {
	if len(p) < 2 {
		return h, false, ""
	}
	h.fin = p[0]&0x80 != 0
	h.opcode = p[0] & 0x0f
	switch {
	case p[0]&0x70 != 0:
		return h, false, "reserved bits set without an extension"
	case h.opcode > opBinary && h.opcode < opClose || h.opcode > opPong:
		return h, false, "unknown opcode " + strconv.Itoa(int(h.opcode))
	case p[1]&0x80 == 0:
		return h, false, "client frames must be masked"
	}
	h.size = 6
	switch h.length = uint64(p[1] & 0x7f); h.length {
	case 126:
		h.size = 8
	case 127:
		h.size = 14
	}
	if h.opcode >= 8 && (!h.fin || h.length > maxControlPayload) {
		return h, false, "control frames must be whole and at most 125 bytes"
	}
	if len(p) < h.size {
		return h, false, ""
	}
	switch h.size {
	case 8:
		h.length = uint64(binary.BigEndian.Uint16(p[2:]))
	case 14:
		h.length = binary.BigEndian.Uint64(p[2:])
		if h.length>>63 != 0 {
			return h, false, "frame length out of range"
		}
	}
	copy(h.mask[:], p[h.size-4:h.size])
	return h, true, ""
}

// unmask writes src XOR the masking key into dst (RFC 6455 5.3), eight
// bytes at a time; dst may be src.
func unmask(dst, src []byte, key [4]byte) {
	k := uint64(binary.LittleEndian.Uint32(key[:]))
	k |= k << 32
	i := 0
	for ; i+8 <= len(src); i += 8 {
		binary.LittleEndian.PutUint64(dst[i:], binary.LittleEndian.Uint64(src[i:])^k)
	}
	for ; i < len(src); i++ {
		dst[i] = src[i] ^ key[i&3]
	}
}
