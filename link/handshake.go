package link

import (
	"bufio"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// The hello, three frames on a new link before anything else:
//
//	dialer   -> acceptor: version, name, incarnation, nonce, ephemeral X25519 key
//	acceptor -> dialer:   nonce, ephemeral X25519 key, MAC
//	dialer   -> acceptor: MAC
//
// With a cluster key, each MAC is an HMAC-SHA256 under the key of the
// transcript (the first frame and the second's nonce and key) and of the
// sender's role, the acceptor's also of its name: each end proves it holds
// the key, and neither a replayed nor a reflected hello proves anything.
// Both ends then derive the keys of the frames that follow from the X25519
// secret and the cluster key (frame.go seals them): someone who records a
// link and learns the cluster key later still cannot read it.
//
// Without a key the X25519 keys and the MACs are empty and nothing is
// encrypted; the acceptor admits only a current member, by name,
// incarnation and address (admit).
const nonceLen = 16

// helloLimit bounds each hello frame, read before the peer is known: the
// longest is the first, about 80 bytes and the dialer's name (at most
// MaxName). A length past it closes the link before anything is allocated.
const helloLimit = 512

// MaxName bounds a node name, so that a hello fits in helloLimit.
const MaxName = 255

// transcriptLabel starts what the MACs and the frame keys are derived from:
// a version of this handshake can never be taken for another.
const transcriptLabel = "shard link v2"

// hello is the dialer's first frame.
type hello struct {
	version uint64
	name    string
	inc     string
	nonce   []byte
	pub     []byte // ephemeral X25519 key; empty without a cluster key
}

func appendHello(b []byte, h hello) []byte {
	b = binary.AppendUvarint(b, h.version)
	b = AppendString(b, h.name)
	b = AppendString(b, h.inc)
	b = AppendBytes(b, h.nonce)
	return AppendBytes(b, h.pub)
}

// parseHello reads the dialer's first frame; keyed says whether this node
// expects an X25519 key in it.
func parseHello(p []byte, keyed bool) (hello, error) {
	d := NewDecoder(p)
	h := hello{version: d.Uvarint()}
	if d.Err() == nil && h.version != Version {
		return h, fmt.Errorf("%w: peer speaks link version %d, want %d", ErrMalformed, h.version, Version)
	}
	h.name, h.inc, h.nonce, h.pub = d.String(), d.String(), d.Bytes(), d.Bytes()
	if err := d.Done(); err != nil {
		return h, err
	}
	if h.name == "" || len(h.name) > MaxName || len(h.nonce) != nonceLen {
		return h, fmt.Errorf("%w: hello fields", ErrMalformed)
	}
	return h, checkPub(h.pub, keyed)
}

// answer is the acceptor's frame.
type answer struct {
	nonce []byte
	pub   []byte
	mac   []byte
}

// head is what of the answer the transcript covers: all but its MAC.
func (a answer) head() []byte { return AppendBytes(AppendBytes(nil, a.nonce), a.pub) }

func parseAnswer(p []byte, keyed bool) (answer, error) {
	d := NewDecoder(p)
	a := answer{nonce: d.Bytes(), pub: d.Bytes(), mac: d.Bytes()}
	if err := d.Done(); err != nil {
		return a, err
	}
	if len(a.nonce) != nonceLen {
		return a, fmt.Errorf("%w: answer fields", ErrMalformed)
	}
	return a, checkPub(a.pub, keyed)
}

// errKeyMismatch says one end has a cluster key and the other none.
var errKeyMismatch = errors.New("one end has a cluster key, the other none")

// checkPub checks the peer's X25519 key: present exactly when this node
// has a cluster key (both ends must), and of the right length.
func checkPub(pub []byte, keyed bool) error {
	switch {
	case keyed != (len(pub) > 0):
		return errKeyMismatch
	case keyed && len(pub) != 32:
		return fmt.Errorf("%w: X25519 key of %d bytes", ErrMalformed, len(pub))
	}
	return nil
}

// parseProof reads the dialer's last frame: its MAC.
func parseProof(p []byte) ([]byte, error) {
	d := NewDecoder(p)
	mac := d.Bytes()
	return mac, d.Done()
}

// transcript hashes both ends' first frames: every MAC and both frame keys
// depend on all of it.
func transcript(helloPayload, answerHead []byte) []byte {
	h := sha256.New()
	h.Write([]byte(transcriptLabel))
	h.Write(AppendBytes(nil, helloPayload))
	h.Write(AppendBytes(nil, answerHead))
	return h.Sum(nil)
}

// mac proves the key over the transcript for role ('s' acceptor, 'c'
// dialer); name is the acceptor's for 's', so that a dialer knows it reached
// the node it meant. Empty without a key.
func (l *Links) mac(role byte, th []byte, name string) []byte {
	if len(l.cfg.Key) == 0 {
		return nil
	}
	m := hmac.New(sha256.New, l.cfg.Key)
	m.Write([]byte{role})
	m.Write(th)
	m.Write([]byte(name))
	return m.Sum(nil)
}

// ephemeral is a fresh X25519 key pair, nil without a cluster key.
func (l *Links) ephemeral() (*ecdh.PrivateKey, []byte) {
	if len(l.cfg.Key) == 0 {
		return nil, nil
	}
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		panic("link: no randomness for an X25519 key: " + err.Error())
	}
	return priv, priv.PublicKey().Bytes()
}

func newNonce() []byte {
	nonce := make([]byte, nonceLen)
	rand.Read(nonce)
	return nonce
}

func (lc *conn) clientHandshake(br *bufio.Reader) error {
	l := lc.links
	_ = lc.nc.SetDeadline(time.Now().Add(l.cfg.DialTimeout))
	defer lc.nc.SetDeadline(time.Time{})
	keyed := len(l.cfg.Key) > 0
	priv, pub := l.ephemeral()
	first := appendHello(nil, hello{version: Version, name: l.cfg.Self, inc: l.cfg.Inc, nonce: newNonce(), pub: pub})
	if err := WriteFrame(lc.nc, KindHello, 0, first); err != nil {
		return err
	}
	k, _, p, err := ReadFrame(br, helloLimit)
	if err != nil {
		return fmt.Errorf("hello from %s: %w", lc.addr, err)
	}
	a, err := parseAnswer(p, keyed)
	if err == nil && k != KindHello {
		err = ErrMalformed
	}
	if err != nil {
		return fmt.Errorf("hello from %s: %w", lc.addr, err)
	}
	th := transcript(first, a.head())
	if !hmac.Equal(a.mac, l.mac('s', th, lc.peer)) {
		return fmt.Errorf("hello from %s: peer does not hold the cluster key", lc.addr)
	}
	if err := WriteFrame(lc.nc, KindHello, 0, AppendBytes(nil, l.mac('c', th, ""))); err != nil {
		return err
	}
	return lc.keyFrames(priv, a.pub, th, true)
}

// serverHandshake authenticates a peer that dialed us; why says which
// refusal it was when it fails.
func (lc *conn) serverHandshake(br *bufio.Reader) (peer Peer, why string, err error) {
	l := lc.links
	deadline := time.Now().Add(l.cfg.DialTimeout)
	_ = lc.nc.SetDeadline(deadline)
	defer lc.nc.SetDeadline(time.Time{})
	keyed := len(l.cfg.Key) > 0
	k, _, first, err := ReadFrame(br, helloLimit)
	if err != nil {
		return peer, readRefusal(err), err
	}
	h, err := parseHello(first, keyed)
	if err == nil && k != KindHello {
		err = ErrMalformed
	}
	if errors.Is(err, errKeyMismatch) {
		return peer, RefusedBadKey, err
	}
	if err != nil {
		return peer, RefusedMalformed, err
	}
	peer = Peer{Name: h.name, Inc: h.inc}
	if !keyed {
		if err := l.admit(peer, lc.nc.RemoteAddr(), deadline); err != nil {
			return peer, RefusedNotMember, err
		}
	}
	priv, pub := l.ephemeral()
	a := answer{nonce: newNonce(), pub: pub}
	th := transcript(first, a.head())
	a.mac = l.mac('s', th, l.cfg.Self)
	if err := WriteFrame(lc.nc, KindHello, 0, AppendBytes(a.head(), a.mac)); err != nil {
		return peer, RefusedTimeout, err
	}
	k, _, p, err := ReadFrame(br, helloLimit)
	if err != nil {
		return peer, readRefusal(err), err
	}
	mac, err := parseProof(p)
	if err == nil && k != KindHello {
		err = ErrMalformed
	}
	if err != nil {
		return peer, RefusedMalformed, err
	}
	if !hmac.Equal(mac, l.mac('c', th, "")) {
		return peer, RefusedBadKey, fmt.Errorf("peer %q does not hold the cluster key", h.name)
	}
	if err := lc.keyFrames(priv, h.pub, th, false); err != nil {
		return peer, RefusedMalformed, err
	}
	return peer, "", nil
}

// keyFrames derives the two frame keys of an authenticated keyed link, one
// per direction, from the X25519 secret, the cluster key and the
// transcript. Without a key it does nothing: frames go in the clear.
func (lc *conn) keyFrames(priv *ecdh.PrivateKey, theirPub, th []byte, dialer bool) error {
	if priv == nil {
		return nil
	}
	pub, err := ecdh.X25519().NewPublicKey(theirPub)
	if err != nil {
		return fmt.Errorf("%w: peer's X25519 key: %v", ErrMalformed, err)
	}
	shared, err := priv.ECDH(pub)
	if err != nil {
		return fmt.Errorf("%w: peer's X25519 key: %v", ErrMalformed, err)
	}
	toAcceptor, toDialer, err := frameKeys(shared, lc.links.cfg.Key, th)
	if err != nil {
		return err
	}
	if dialer {
		lc.seal, lc.open = toAcceptor, toDialer
	} else {
		lc.seal, lc.open = toDialer, toAcceptor
	}
	return nil
}
