package sim

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/router"
)

// Churn is the outcome of sends flowing while nodes join and leave.
type Churn struct {
	Nodes      int            `json:"nodes"`
	Changes    int            `json:"changes"`
	Sends      int64          `json:"sends"`
	Answers    map[string]int `json:"answers"`        // by status or error code
	Unanswered int            `json:"unanswered"`     // sends with no answer
	Twice      int            `json:"answered_twice"` // sends with more than one
	// OfflineConnected: answered offline while the recipient was connected
	// from before the send until after its answer.
	OfflineConnected int     `json:"offline_connected"`
	RightMS          float64 `json:"right_ms"` // from the last change until every directory was right
	// EachRightMS is, over every change, the longest from it until every
	// directory was next right (later changes may have come meanwhile);
	// Late counts the changes that took longer than Every.
	EachRightMS float64 `json:"each_right_ms"`
	Late        int     `json:"late"`
	Error       string  `json:"error,omitempty"`
}

// ChurnConfig says how hard to churn.
type ChurnConfig struct {
	Nodes   int
	Changes int           // alternately a join and a leave, starting with a join
	Every   time.Duration // between changes
	Senders int           // goroutines sending, each waiting for its answer
	Seed    uint64
}

// RunChurn runs cfg and checks every send's answer.
func RunChurn(cfg ChurnConfig) (Churn, error) {
	c := NewCluster(cfg.Nodes, router.Owner, cfg.Seed)
	defer c.Close()
	members := c.Members()
	users := cfg.Nodes * 4
	for i := range users {
		if err := c.Connect(userName(i), members[i%len(members)]); err != nil {
			return Churn{}, err
		}
	}
	out := Churn{Nodes: cfg.Nodes, Answers: make(map[string]int)}
	var mu sync.Mutex
	type sent struct {
		conn *Conn
		id   string
	}
	var all []sent
	var sends atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for s := range cfg.Senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				n := sends.Add(1)
				// The recipient is never the sender: a send to oneself reaches
				// no other connection, and is answered offline rightly.
				fi := int(n*7+int64(s)) % users
				from, to := userName(fi), userName((fi+1+int(n*13+3)%(users-1))%users)
				c.mu.Lock()
				fu, tu := c.users[from], c.users[to]
				conn, node, gen := fu.conn, c.nodes[fu.node], tu.gen
				connected := tu.conn != nil
				c.mu.Unlock()
				if conn == nil || node == nil {
					sends.Add(-1)
					time.Sleep(time.Millisecond) // the sender is moving: its client would be reconnecting
					continue
				}
				id := "s" + strconv.FormatInt(n, 10)
				st := <-conn.handle(node.Router, &protocol.Frame{Type: protocol.TypeSend, ID: id, To: to, Body: "hi"})
				c.mu.Lock()
				stayed := connected && tu.conn != nil && tu.gen == gen
				c.mu.Unlock()
				mu.Lock()
				all = append(all, sent{conn, id})
				out.Answers[st]++
				if st == protocol.StatusOffline && stayed {
					out.OfflineConnected++
				}
				mu.Unlock()
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.Changes)*cfg.Every+60*time.Second)
	defer cancel()
	var last time.Time
	watch := c.watchChanges()
	tick := time.NewTicker(cfg.Every)
	for i := range cfg.Changes {
		<-tick.C
		last = time.Now()
		watch.changed(last)
		if i%2 == 0 {
			c.Join()
			continue
		}
		// The leaver is one of the first nodes, which hold users.
		leaver := c.Members()[i%cfg.Nodes%len(c.Members())]
		if err := c.Leave(ctx, leaver); err != nil {
			out.Error = err.Error()
		}
	}
	tick.Stop()
	out.Changes = cfg.Changes
	took, err := watch.wait(ctx)
	for _, d := range took {
		out.EachRightMS = max(out.EachRightMS, ms(d))
		if d > cfg.Every {
			out.Late++
		}
	}
	if err != nil {
		out.Error = fmt.Sprintf("directories not right %s after the last change: %v", time.Since(last), err)
	} else if len(took) > 0 {
		out.RightMS = ms(took[len(took)-1])
	}
	close(stop)
	wg.Wait()
	out.Sends = int64(len(all))
	for _, s := range all {
		switch n := s.conn.answerCount(s.id); {
		case n == 0:
			out.Unanswered++
		case n > 1:
			out.Twice++
		}
	}
	return out, nil
}

// ms is d in milliseconds, to the microsecond.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
