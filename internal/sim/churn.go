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
	// EachRightMS is the longest a change took until every directory was
	// right, over the changes that were right before the next one; Late
	// counts those that were not.
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
	tick := time.NewTicker(cfg.Every)
	for i := range cfg.Changes {
		<-tick.C
		last = time.Now()
		if i%2 == 0 {
			c.Join()
		} else {
			// The leaver is one of the first nodes, which hold users.
			leaver := c.Members()[i%cfg.Nodes%len(c.Members())]
			if err := c.Leave(ctx, leaver); err != nil {
				out.Error = err.Error()
			}
		}
		// Until the next change is due, the directories must come right.
		each, cancelEach := context.WithDeadline(ctx, last.Add(cfg.Every))
		took, err := c.WaitDirectories(each, last)
		cancelEach()
		if err != nil {
			out.Late++
		} else {
			out.EachRightMS = max(out.EachRightMS, float64(took.Microseconds())/1000)
		}
	}
	tick.Stop()
	out.Changes = cfg.Changes
	took, err := c.WaitDirectories(ctx, last)
	out.RightMS = float64(took.Microseconds()) / 1000
	if err != nil {
		out.Error = fmt.Sprintf("directories not right %s after the last change: %v", took, err)
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
