package link

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// listen opens a link listener on host, a loopback address.
func listen(t testing.TB, host string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// ask sends one request from l to peer and waits for its outcome.
func ask(t testing.TB, l *Links, peer string, p []byte) error {
	t.Helper()
	errc := make(chan error, 1)
	l.Request(peer, testKind, p, func(_ []byte, err error) { errc <- err })
	select {
	case err := <-errc:
		return err
	case <-time.After(5 * time.Second):
		t.Fatalf("request to %s never answered nor failed", peer)
		return nil
	}
}

// Without a key, b serves only what names a current member with its
// incarnation and dials from that member's address: a process that merely
// reaches the port gets nothing served, whatever name it gives.
func TestLinkWithoutAKeyServesOnlyCurrentMembers(t *testing.T) {
	lnB := listen(t, "127.0.0.1")
	var mu sync.Mutex
	var served []string
	b := serve(New(Config{Self: "b", Inc: "ib", DialTimeout: 300 * time.Millisecond}, lnB), func(from Peer, _ Kind, p []byte, reply func([]byte)) {
		mu.Lock()
		served = append(served, from.Name+": "+string(p))
		mu.Unlock()
		reply(p)
	})
	defer b.Close()
	lnA := listen(t, "127.0.0.1")
	bAddr := map[string]Member{"b": {Addr: lnB.Addr().String(), Inc: "ib"}}
	peer := func(name, inc string, ln net.Listener) *Links {
		l := serve(New(Config{Self: name, Inc: inc}, ln), nil)
		l.SetPeers(bAddr)
		t.Cleanup(l.Close)
		return l
	}
	b.SetPeers(map[string]Member{"a": {Addr: lnA.Addr().String(), Inc: "ia"}})

	if err := ask(t, peer("a", "ia", lnA), "b", []byte("hello")); err != nil {
		t.Fatalf("a member's request: %v", err)
	}
	for _, intruder := range []struct {
		what string
		l    *Links
	}{
		{"a made-up node", peer("mallory", "im", listen(t, "127.0.0.1"))},
		{"a member's name with another incarnation", peer("a", "forged", listen(t, "127.0.0.1"))},
		{"a member's name and incarnation from another address", peer("a", "ia", listen(t, "127.0.0.9"))},
	} {
		if err := ask(t, intruder.l, "b", []byte("forged")); !errors.Is(err, ErrPeerDown) {
			t.Errorf("%s: request %v, want ErrPeerDown (refused)", intruder.what, err)
		}
	}
	if got := b.Refused(RefusedNotMember); got != 3 {
		t.Errorf("%d links refused as not members, want 3", got)
	}

	// A node that joined a moment ago may dial before gossip told b of it:
	// its hello waits for the membership that lists it.
	lnC := listen(t, "127.0.0.1")
	c := peer("c", "ic", lnC)
	go func() {
		time.Sleep(50 * time.Millisecond) // gossip arriving after the dial
		b.SetPeers(map[string]Member{"a": {Addr: lnA.Addr().String(), Inc: "ia"}, "c": {Addr: lnC.Addr().String(), Inc: "ic"}})
	}()
	if err := ask(t, c, "b", []byte("just joined")); err != nil {
		t.Fatalf("a new member's request: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(served) != 2 || served[0] != "a: hello" || served[1] != "c: just joined" {
		t.Fatalf("b served %q, want only the members' requests", served)
	}
}

func TestLinkRefusesAPeerWhenOnlyOneEndHasAKey(t *testing.T) {
	for _, keys := range [][2][]byte{{[]byte("k"), nil}, {nil, []byte("k")}} {
		a, b := echoLinks(t, keys[0], keys[1])
		if err := ask(t, a, "b", []byte("x")); !errors.Is(err, ErrPeerDown) {
			t.Fatalf("keys %q and %q: request %v, want ErrPeerDown", keys[0], keys[1], err)
		}
		if got := b.Refused(RefusedBadKey); got != 1 {
			t.Fatalf("keys %q and %q: %d refused for the key, want 1", keys[0], keys[1], got)
		}
	}
}
