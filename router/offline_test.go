package router

import (
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardchat/shard/link"
	"github.com/shardchat/shard/protocol"
)

// A note to oneself from one's only connection is stored, and reaches no
// other connection; but its recipient is connected (it sent it): no push
// goes out for it, while a message to a user who is away does get one.
func TestNoteToOneselfIsNoOfflinePush(t *testing.T) {
	var mu sync.Mutex
	var pushed []OfflineMessage
	self := link.Peer{Name: "r0", Inc: "r0-1"}
	r := New(Config{Self: self.Name, Incarnation: self.Inc, Store: embeddedStore(t), Metrics: NewMetrics(prometheus.NewRegistry()),
		Offline: func(m OfflineMessage) { mu.Lock(); pushed = append(pushed, m); mu.Unlock() }}, newMemNet().transport(self))
	t.Cleanup(r.Close)
	setMembers(t, []*Router{r}, []Member{{Name: self.Name, Inc: self.Inc}})
	alice := attach(t, r, "alice")
	r.HandleFrame(alice, &protocol.Frame{Type: protocol.TypeSend, ID: "note", To: "alice", Body: "milk"})
	r.HandleFrame(alice, &protocol.Frame{Type: protocol.TypeSend, ID: "away", To: "bob", Body: "hi"})
	mu.Lock()
	defer mu.Unlock()
	if len(pushed) != 1 || pushed[0].To != "bob" {
		t.Fatalf("pushed %+v, want one push, to bob: alice is connected", pushed)
	}
}
