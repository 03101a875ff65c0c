package node

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/valyala/fasthttp"

	"github.com/shardchat/shard/gossip"
	"github.com/shardchat/shard/link"
	"github.com/shardchat/shard/protocol"
)

// The cluster view (/cluster, docs/protocol.md §8.7, §8.8) stands on two
// endpoints. GET /api/node is a node's own figures, from its own counters.
// GET /api/cluster/live, on the node serving the page, asks every alive
// member for its figures, all at once, and answers with them and their
// rates. Both show the topology: with --api-key they need it.

const (
	// liveAskTimeout bounds one member's answer: the page asks once a
	// second, and a member slower than that is shown as not answering
	// rather than holding back the figures of the others.
	liveAskTimeout = time.Second
	// liveFresh is how long an answer of /api/cluster/live is served again
	// instead of asking anew: however many pages are open, this node asks
	// each member at most twice a second.
	liveFresh = 500 * time.Millisecond
	// maxFiguresBody bounds a member's answer: about 100 bytes per peer, so
	// a cluster of 256 members fits several times over.
	maxFiguresBody = 1 << 20
)

// liveClient asks the members for their figures: directly (no proxy,
// whatever the environment says), one kept-alive connection to each.
var liveClient = &http.Client{
	Timeout:   liveAskTimeout,
	Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1, IdleConnTimeout: 30 * time.Second},
}

// clusterView is what the view's endpoints need beyond the node itself:
// the links to report on, and the last answer, from which rates are taken.
type clusterView struct {
	links *link.Links
	inc   string

	mu      sync.Mutex // held while the members are asked: one ask at a time
	askedAt time.Time
	answer  []byte
	last    map[string]protocol.NodeFigures // each member's figures of the last ask
}

// serveClusterView answers GET /api/node and GET /api/cluster/live.
func (n *Node) serveClusterView(ctx *fasthttp.RequestCtx, path string) {
	if !ctx.IsGet() {
		writeError(ctx, fasthttp.StatusMethodNotAllowed, protocol.CodeMethodNotAllowed, "use GET")
		return
	}
	if n.cfg.APIKey != "" && !bearerIs(ctx, n.cfg.APIKey) {
		writeError(ctx, fasthttp.StatusUnauthorized, protocol.CodeUnauthorized,
			"this node has an --api-key: send it as Authorization: Bearer <api-key>")
		return
	}
	ctx.Response.Header.Set("Cache-Control", "no-store")
	if path == "/api/node" {
		writeJSON(ctx, fasthttp.StatusOK, n.figures())
		return
	}
	if !n.ready.Load() {
		writeError(ctx, fasthttp.StatusServiceUnavailable, protocol.CodeUnavailable, "this node is starting: it knows no members yet")
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(n.liveAnswer())
}

// bearerIs reports whether the request carries Authorization: Bearer key.
func bearerIs(ctx *fasthttp.RequestCtx, key string) bool {
	given, ok := strings.CutPrefix(string(ctx.Request.Header.Peek("Authorization")), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(given), []byte(key)) == 1
}

// figures reads this node's own figures.
func (n *Node) figures() protocol.NodeFigures {
	state := "ready"
	switch {
	case n.draining.Load():
		state = "draining"
	case !n.ready.Load():
		state = "starting"
	}
	rg := n.router.Ring()
	f := protocol.NodeFigures{
		Name:  n.name,
		Inc:   n.view.inc,
		State: state,
		Time:  time.Now().UnixMilli(),
		Ring: protocol.NodeRing{Version: rg.Version(), Members: rg.Len(),
			Partitions: rg.Share(n.name), Total: rg.Partitions(), Scheme: int(rg.Scheme())},
		Connections: int(metricSum(n.rm.Connections)),
		Counters: protocol.NodeCounters{
			Messages:   uint64(metricSum(n.rm.ChatMessages)),
			Deliveries: uint64(metricSum(n.rm.Deliveries)),
			Peer:       uint64(metricSum(n.rm.PeerSent)),
		},
	}
	peers := n.view.links.Peers()
	f.Links = make([]protocol.NodeLink, len(peers))
	for i, p := range peers {
		f.Links[i] = protocol.NodeLink{Peer: p.Peer, State: p.Dialed, Accepted: p.Accepted, Queued: p.Queued}
	}
	return f
}

// metricSum adds up every sample of a counter or gauge, over all its labels.
func metricSum(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	sum := 0.0
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) == nil {
			sum += d.GetCounter().GetValue() + d.GetGauge().GetValue()
		}
	}
	return sum
}

// liveAnswer is the body of /api/cluster/live: the last one while it is
// fresh, else a new one from asking every alive member now.
func (n *Node) liveAnswer() []byte {
	v := n.view
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.answer != nil && time.Since(v.askedAt) < liveFresh {
		return v.answer
	}
	ms := n.gossip.Members()
	live := protocol.ClusterLive{Self: n.name, Members: make([]protocol.LiveMember, len(ms))}
	ctx, cancel := context.WithTimeout(context.Background(), liveAskTimeout)
	defer cancel()
	var asks sync.WaitGroup
	for i, m := range ms {
		lm := &live.Members[i]
		*lm = protocol.LiveMember{Name: m.Name, HTTP: m.Meta.HTTP, State: string(m.State)}
		switch {
		case m.Name == n.name:
			f := n.figures()
			lm.Node = &f
		case m.State == gossip.StateAlive || m.State == gossip.StateSuspect:
			asks.Add(1)
			go func() {
				defer asks.Done()
				f, err := askFigures(ctx, m.Name, m.Meta.HTTP, n.cfg.APIKey)
				if err != nil {
					lm.Error = err.Error()
					return
				}
				lm.Node = f
			}()
		}
	}
	asks.Wait()
	last := make(map[string]protocol.NodeFigures, len(ms))
	for i := range live.Members {
		lm := &live.Members[i]
		if lm.Node == nil {
			continue
		}
		if prev, ok := v.last[lm.Name]; ok {
			lm.Rates = rates(prev, *lm.Node)
		}
		last[lm.Name] = *lm.Node
	}
	live.Time = time.Now().UnixMilli()
	v.last = last
	v.answer, _ = json.Marshal(live)
	v.askedAt = time.Now()
	return v.answer
}

// askFigures asks the member name at addr (its --http) for its figures,
// with this node's api key: the nodes of a cluster share one.
func askFigures(ctx context.Context, name, addr, apiKey string) (*protocol.NodeFigures, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/api/node", nil)
	if err != nil {
		return nil, fmt.Errorf("no usable http address %q", addr)
	}
	if apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
	resp, err := liveClient.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the method and URL
		}
		return nil, fmt.Errorf("%s did not answer: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s", addr, resp.Status)
	}
	var f protocol.NodeFigures
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxFiguresBody)).Decode(&f); err != nil {
		return nil, fmt.Errorf("%s answered figures that do not parse: %v", addr, err)
	}
	if f.Name != name {
		return nil, fmt.Errorf("%s answered as %q, not %q", addr, f.Name, name)
	}
	return &f, nil
}

// rates turns two figures of one member into rates per second; nil when
// they are not of the same incarnation or not in order.
func rates(prev, cur protocol.NodeFigures) *protocol.NodeRates {
	dt := float64(cur.Time-prev.Time) / 1000
	if prev.Inc != cur.Inc || dt <= 0 {
		return nil
	}
	per := func(a, b uint64) float64 { return (float64(b) - float64(a)) / dt }
	return &protocol.NodeRates{
		Messages:   per(prev.Counters.Messages, cur.Counters.Messages),
		Deliveries: per(prev.Counters.Deliveries, cur.Counters.Deliveries),
		Peer:       per(prev.Counters.Peer, cur.Counters.Peer),
	}
}
