package router

import "github.com/shardchat/shard/protocol"

// A message stored for a recipient that no connection reached is told to
// Config.Offline, so that the app's backend can send a push notification
// (node/webhook.go). It is told after the store kept the message and never
// holds up its ack: Offline must not block.

// OfflineMessage is one stored message waiting for a recipient that has no
// connection anywhere.
type OfflineMessage struct {
	To    string // the recipient
	From  string
	Group string // set for a group's message, To being one of its members
	Mid   string // the message's id, stable for the receiver's dedup
	Seq   int64  // its offset where To reads it: To's inbox, or the group's stream
	TS    int64
	Body  string
}

// tellOffline tells Config.Offline of m, waiting for each of users.
func (r *Router) tellOffline(m *protocol.Msg, users ...string) {
	if r.cfg.Offline == nil {
		return
	}
	for _, u := range users {
		r.cfg.Offline(OfflineMessage{To: u, From: m.From, Group: m.Group, Mid: m.Mid, Seq: m.Seq, TS: m.TS, Body: m.Body})
	}
}
