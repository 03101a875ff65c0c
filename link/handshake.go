package link

import (
	"bufio"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"
)

// The hello: the dialer sends version, name, incarnation and a nonce; the
// acceptor answers with its own nonce and a MAC over both; the dialer
// answers with its MAC. With no key the MACs are empty and only the version
// is checked.
const nonceLen = 16

func (lc *conn) mac(role byte, a, b []byte, name string) []byte {
	if len(lc.links.cfg.Key) == 0 {
		return nil
	}
	m := hmac.New(sha256.New, lc.links.cfg.Key)
	m.Write([]byte{role})
	m.Write(a)
	m.Write(b)
	m.Write([]byte(name))
	return m.Sum(nil)
}

func (lc *conn) clientHandshake(br *bufio.Reader) error {
	_ = lc.nc.SetDeadline(time.Now().Add(lc.links.cfg.DialTimeout))
	defer lc.nc.SetDeadline(time.Time{})
	nonce := make([]byte, nonceLen)
	rand.Read(nonce)
	hello := binary.AppendUvarint(nil, Version)
	hello = AppendString(hello, lc.links.cfg.Self)
	hello = AppendString(hello, lc.links.cfg.Inc)
	hello = AppendBytes(hello, nonce)
	if err := WriteFrame(lc.nc, KindHello, 0, hello); err != nil {
		return err
	}
	k, _, p, err := ReadFrame(br, MaxFrame)
	if err != nil {
		return fmt.Errorf("hello from %s: %w", lc.addr, err)
	}
	d := NewDecoder(p)
	theirNonce, theirMAC := d.Bytes(), d.Bytes()
	if k != KindHello || d.Done() != nil {
		return fmt.Errorf("hello from %s: %w", lc.addr, ErrMalformed)
	}
	if !hmac.Equal(theirMAC, lc.mac('s', nonce, theirNonce, lc.peer)) {
		return fmt.Errorf("hello from %s: peer does not hold the cluster key", lc.addr)
	}
	return WriteFrame(lc.nc, KindHello, 0, AppendBytes(nil, lc.mac('c', theirNonce, nonce, lc.links.cfg.Self)))
}

func (lc *conn) serverHandshake(br *bufio.Reader) (Peer, error) {
	_ = lc.nc.SetDeadline(time.Now().Add(lc.links.cfg.DialTimeout))
	defer lc.nc.SetDeadline(time.Time{})
	k, _, p, err := ReadFrame(br, MaxFrame)
	if err != nil {
		return Peer{}, err
	}
	d := NewDecoder(p)
	if version := d.Uvarint(); d.Err() == nil && version != Version {
		return Peer{}, fmt.Errorf("peer speaks link version %d, want %d", version, Version)
	}
	name := d.String()
	inc := d.String()
	theirNonce := d.Bytes()
	if k != KindHello || d.Done() != nil || len(theirNonce) != nonceLen {
		return Peer{}, ErrMalformed
	}
	nonce := make([]byte, nonceLen)
	rand.Read(nonce)
	answer := AppendBytes(nil, nonce)
	answer = AppendBytes(answer, lc.mac('s', theirNonce, nonce, lc.links.cfg.Self))
	if err := WriteFrame(lc.nc, KindHello, 0, answer); err != nil {
		return Peer{}, err
	}
	k, _, p, err = ReadFrame(br, MaxFrame)
	if err != nil {
		return Peer{}, err
	}
	d = NewDecoder(p)
	theirMAC := d.Bytes()
	if k != KindHello || d.Done() != nil {
		return Peer{}, ErrMalformed
	}
	if !hmac.Equal(theirMAC, lc.mac('c', nonce, theirNonce, name)) {
		return Peer{}, fmt.Errorf("peer %q does not hold the cluster key", name)
	}
	return Peer{Name: name, Inc: inc}, nil
}
