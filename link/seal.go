package link

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"slices"
)

// Sealed frames: on a link with a cluster key, every frame after the hello
// is sealed with AES-256-GCM under a key of its direction,
//
//	length (4 bytes, authenticated) | seal(kind | request id | payload) | tag (16 bytes)
//
// and the nonce of the n-th frame of a direction is n. A frame changed,
// cut, replayed, dropped or moved fails to open, and the link closes.
// AES-GCM because it is in the standard library and runs on the AES and
// carry-less multiply instructions of every x86 and arm64 server CPU.

// sealOverhead is what sealing adds to a frame: the GCM tag.
const sealOverhead = 16

// errUnauthentic says a sealed frame failed to open: the bytes between two
// nodes were changed, or come from someone without the keys.
var errUnauthentic = errors.New("node-to-node frame failed authentication")

// frameCipher seals or opens the frames of one direction of a link, in
// order; it belongs to that direction's writer or reader alone.
type frameCipher struct {
	aead  cipher.AEAD
	nonce [12]byte
	seq   uint64
}

// frameKeys derives the ciphers of both directions of a link from the
// X25519 secret, the cluster key (so that an attacker who broke X25519
// still needs it) and the hello's transcript (so that no two links share a
// key).
func frameKeys(shared, clusterKey, th []byte) (toAcceptor, toDialer *frameCipher, err error) {
	keys, err := hkdf.Key(sha256.New, shared, clusterKey, transcriptLabel+" frame keys"+string(th), 64)
	if err != nil {
		return nil, nil, err
	}
	if toAcceptor, err = newFrameCipher(keys[:32]); err != nil {
		return nil, nil, err
	}
	toDialer, err = newFrameCipher(keys[32:])
	return toAcceptor, toDialer, err
}

func newFrameCipher(key []byte) (*frameCipher, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &frameCipher{aead: aead}, nil
}

// next is the nonce of the next frame. 2^64 frames would wrap it, which a
// link does not live to see (a million frames a second for 500,000 years).
func (c *frameCipher) next() []byte {
	binary.BigEndian.PutUint64(c.nonce[4:], c.seq)
	c.seq++
	return c.nonce[:]
}

// appendFrame appends one sealed frame to b, sealing in place: it copies
// the payload once and allocates only when b must grow.
func (c *frameCipher) appendFrame(b []byte, k Kind, id uint64, payload []byte) []byte {
	start := len(b)
	b = slices.Grow(b, maxHeader+len(payload)+sealOverhead)
	b = append(b, 0, 0, 0, 0, byte(k))
	b = binary.AppendUvarint(b, id)
	b = append(b, payload...)
	plain := b[start+4:]
	binary.BigEndian.PutUint32(b[start:], uint32(len(plain)+sealOverhead))
	sealed := c.aead.Seal(plain[:0], c.next(), plain, b[start:start+4])
	return b[:start+4+len(sealed)]
}

// open opens one sealed frame body in place; header is its length prefix.
func (c *frameCipher) open(body, header []byte) ([]byte, error) {
	plain, err := c.aead.Open(body[:0], c.next(), body, header)
	if err != nil {
		return nil, errUnauthentic
	}
	return plain, nil
}
