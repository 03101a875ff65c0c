package router

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the counters of docs/protocol.md §9 that the router moves, plus
// a few that explain them.
type Metrics struct {
	Connections    prometheus.Gauge
	ChatMessages   *prometheus.CounterVec // kind: direct, room
	Deliveries     prometheus.Counter
	PeerSent       *prometheus.CounterVec // kind: forward, lookup, register, ...
	PeerReplies    *prometheus.CounterVec // kind of the request answered
	Closes         *prometheus.CounterVec // reason label of session.CloseReason
	RingChanges    prometheus.Counter
	LookupCache    *prometheus.CounterVec // result: hit, miss
	Reregistration prometheus.Counter
	answerStatus   *prometheus.CounterVec // status: delivered, offline, sent, unavailable, not_member
	Watches        prometheus.Gauge       // users watched by this node's connections, a watch per connection and user
	PresenceEvents *prometheus.CounterVec // to: node (told to a watching node), connection (a presence frame)
	Typing         *prometheus.CounterVec // result: forwarded, dropped (over one per conversation per 2 s)

	// The counters a message's road moves, resolved once per label.
	chat, peerSent, peerReplies, lookupCache, answers *counters
}

// counters resolves the counters of a CounterVec once per label value:
// WithLabelValues hashes and checks its label and takes the vector's lock
// on every call, which was 7% of a node's CPU at 3,000 forwarded messages
// a second. Its labels come from fixed sets (kinds, statuses), so it stays
// small.
type counters struct {
	vec *prometheus.CounterVec
	by  sync.Map // label value -> prometheus.Counter
}

func (c *counters) with(label string) prometheus.Counter {
	if v, ok := c.by.Load(label); ok {
		return v.(prometheus.Counter)
	}
	v, _ := c.by.LoadOrStore(label, c.vec.WithLabelValues(label))
	return v.(prometheus.Counter)
}

// NewMetrics creates the router's metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shard_connections", Help: "Open client connections."}),
		ChatMessages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shard_chat_messages_total", Help: "Chat messages accepted from clients on this node."}, []string{"kind"}),
		Deliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shard_deliveries_total", Help: "msg frames written to client connections."}),
		PeerSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shard_peer_messages_sent_total",
			Help: "Node-to-node requests this node sent, by kind; a batch of k counts k."}, []string{"kind"}),
		PeerReplies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shard_peer_replies_sent_total",
			Help: "Answers this node sent to other nodes' requests, by the kind of the request."}, []string{"kind"}),
		Closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shard_connections_closed_total", Help: "Client connections closed, by reason."}, []string{"reason"}),
		RingChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shard_ring_changes_total", Help: "Ring rebuilds after membership changes."}),
		LookupCache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shard_location_cache_total", Help: "Sender-side location cache results."}, []string{"result"}),
		Reregistration: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shard_reregistered_keys_total", Help: "Directory keys re-registered with a new owner after a ring change."}),
		answerStatus: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shard_answers_total", Help: "Answers to client send, join and leave frames, by status or error code."}, []string{"status"}),
		Watches: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shard_watches", Help: "Users watched by this node's connections: one per connection and user."}),
		PresenceEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shard_presence_events_total",
			Help: "Presence changes told to a watching node (to=node) and presence frames written to connections (to=connection)."}, []string{"to"}),
		Typing: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shard_typing_total",
			Help: "Typing frames from this node's connections, forwarded or dropped (over one per conversation per 2 s)."}, []string{"result"}),
	}
	m.chat, m.peerSent, m.peerReplies = &counters{vec: m.ChatMessages}, &counters{vec: m.PeerSent}, &counters{vec: m.PeerReplies}
	m.lookupCache, m.answers = &counters{vec: m.LookupCache}, &counters{vec: m.answerStatus}
	reg.MustRegister(m.Connections, m.ChatMessages, m.Deliveries, m.PeerSent, m.PeerReplies,
		m.Closes, m.RingChanges, m.LookupCache, m.Reregistration, m.answerStatus,
		m.Watches, m.PresenceEvents, m.Typing)
	return m
}
