package sim

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardchat/shard/link"
	"github.com/shardchat/shard/router"
)

// endpointPair is two endpoints a and b that answer every request at once,
// a knowing b as its peer.
func endpointPair() (a, b *Endpoint) {
	net := NewNetwork()
	a = net.Endpoint(link.Peer{Name: "a", Inc: "a1"})
	b = net.Endpoint(link.Peer{Name: "b", Inc: "b1"})
	serve := func(from link.Peer, k link.Kind, p []byte, reply func([]byte)) { reply(nil) }
	a.Serve(serve)
	b.Serve(serve)
	a.SetPeers(map[string]link.Member{"b": {}})
	return a, b
}

// TestRequestToAClosingPeerIsAnsweredOnce: a request whose peer closes
// while it is being sent gets one answer, never two (a router waiting on
// a one-slot channel for it would hang on a second).
func TestRequestToAClosingPeerIsAnsweredOnce(t *testing.T) {
	for round := range 300 {
		a, b := endpointPair()
		const requests = 20
		var answers [requests]atomic.Int32
		var wg sync.WaitGroup
		wg.Go(b.Close)
		for i := range requests {
			a.RequestCounted("b", router.KindRegister, []byte("x"), nil, 0, func([]byte, error) { answers[i].Add(1) })
		}
		wg.Wait()
		a.Close()
		for i := range requests {
			if n := answers[i].Load(); n != 1 {
				t.Fatalf("round %d: request %d answered %d times, want once", round, i, n)
			}
		}
	}
}

// A request sent while its own endpoint closes (a router's background work
// still sending as the router stops) gets its answer: a router waits for
// it before Close returns, and hung for good when the close came between
// the endpoint's check that it was open and the request's joining the
// ones waiting for a reply.
func TestRequestFromAClosingEndpointIsAnswered(t *testing.T) {
	for round := range 300 {
		a, b := endpointPair()
		const requests = 20
		var answered sync.WaitGroup
		answered.Add(requests)
		var wg sync.WaitGroup
		wg.Go(a.Close)
		for range requests {
			wg.Go(func() {
				a.RequestCounted("b", router.KindRegister, []byte("x"), nil, 0, func([]byte, error) { answered.Done() })
			})
		}
		wg.Wait()
		done := make(chan struct{})
		go func() { answered.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: a request from the closing endpoint had no answer after 5 s", round)
		}
		b.Close()
	}
}
