package link

import (
	"fmt"
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/shardchat/shard/internal/wait"
)

// The cluster view shows, for each pair of nodes, whether the link is up
// and how many frames wait on it.
func TestPeersShowEachSideOfALink(t *testing.T) {
	a, b := echoLinks(t, []byte("k"), []byte("k"))
	if got, want := a.Peers(), []PeerState{{Peer: "b", Dialed: LinkDown}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("before any request a reports %+v, want %+v", got, want)
	}
	done := make(chan error, 1)
	a.Request("b", testKind, []byte("hi"), func(_ []byte, err error) { done <- err })
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer from b")
	}
	if got, want := a.Peers(), []PeerState{{Peer: "b", Dialed: LinkUp}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after a request a reports %+v, want %+v", got, want)
	}
	// b's reader registers a's connection once the hello is done, which the
	// answer above does not wait for.
	wait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if got, want := b.Peers(), []PeerState{{Peer: "a", Dialed: LinkDown, Accepted: true}}; !reflect.DeepEqual(got, want) {
			return fmt.Errorf("b reports %+v, want %+v", got, want)
		}
		return nil
	})
}

func TestPeersCountTheFramesWaitingForAPeer(t *testing.T) {
	// A peer that accepts and never says hello: requests wait in the queue.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := serve(New(Config{Self: "a", DialTimeout: 10 * time.Second}, ln), nil)
	defer a.Close()
	a.SetPeers(map[string]Member{"quiet": {Addr: silent.Addr().String()}})
	for range 3 {
		a.Request("quiet", testKind, []byte("hi"), func([]byte, error) {})
	}
	ps := a.Peers()
	if len(ps) != 1 || ps[0].Peer != "quiet" || ps[0].Queued != 3 || ps[0].Dialed == LinkDown {
		t.Fatalf("with 3 requests waiting for a peer that does not answer, a reports %+v", ps)
	}
}
