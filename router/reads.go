package router

import (
	"context"
	"fmt"

	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/store"
)

func init() {
	handleFrames((*Router).handleRead, protocol.TypeRead)
	handleFrames((*Router).handleConversations, protocol.TypeConversations)
	carryFrames(protocol.TypeReceipt)
}

// Read state: a read offset per conversation, kept in the store, and the
// receipts that tell the other party (a direct conversation's peer, a
// group's members) and the reader's own other connections, so that every
// device clears the same unread count. Receipts are never stored: a
// delivery that reaches no one now is gone.

// handleRead records a read offset and, when it moved, sends the receipts.
func (r *Router) handleRead(c *client, f *protocol.Frame, answer func(result)) {
	if r.cfg.Store == nil {
		answer(result{err: errNeedsStore})
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	reader := c.User()
	marked, err := r.cfg.Store.SetRead(ctx, store.ReadMark{User: reader, With: f.With, Group: f.Group, Seq: f.Seq})
	if err != nil {
		answer(result{err: fmt.Errorf("store: %w", err)})
		return
	}
	if marked.Moved {
		r.sendReceipts(ctx, c, f.With, f.Group, marked)
	}
	answer(result{status: protocol.StatusOK})
}

// sendReceipts tells who must know that c's user read up to marked.Read.
func (r *Router) sendReceipts(ctx context.Context, c *client, with, group string, marked store.ReadMarked) {
	reader := c.User()
	d := &delivery{skip: c, ephemeral: true}
	if group != "" {
		users, err := r.membersAt(ctx, group, marked.Version)
		if err != nil {
			r.log.Debug("receipt not routed", "group", group, "err", err)
			return
		}
		d.users = users // the reader among them: its other connections
		d.frame = protocol.AppendReceipt(nil, &protocol.Receipt{By: reader, Group: group, Seq: marked.Read})
	} else {
		// The peer hears where it stands in its own inbox; the reader's
		// other connections where the reader stands in its own.
		d.target, d.from = Key{Name: with}, reader
		d.frame = protocol.AppendReceipt(nil, &protocol.Receipt{By: reader, With: reader, Seq: marked.PeerSeq})
		d.copy = protocol.AppendReceipt(nil, &protocol.Receipt{By: reader, With: with, Seq: marked.Read})
		if marked.PeerSeq == 0 || with == reader {
			// Nothing of the peer's is read, or one read one's own notes:
			// only the reader's other devices hear of it.
			d.target, d.from, d.frame = Key{Name: reader}, "", d.copy
		}
	}
	r.deliver(d, func(result) {})
}

// handleConversations answers the sender's conversations, newest first.
func (r *Router) handleConversations(c *client, _ *protocol.Frame, answer func(result)) {
	if r.cfg.Store == nil {
		answer(result{err: errNeedsStore})
		return
	}
	list, err := r.Conversations(context.Background(), c.User())
	if err != nil {
		answer(result{err: err})
		return
	}
	answer(result{status: protocol.StatusOK, conversations: list})
}

// Conversations lists user's conversations, newest activity first, with
// their unread counts: for the conversations frame and the HTTP API.
func (r *Router) Conversations(ctx context.Context, user string) ([]protocol.Conversation, error) {
	if r.cfg.Store == nil {
		return nil, errNeedsStore
	}
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	convs, err := r.cfg.Store.Conversations(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	list := make([]protocol.Conversation, len(convs))
	for i, cv := range convs {
		list[i] = protocol.Conversation{With: cv.With, Group: cv.Group, Last: cv.Last, Read: cv.Read,
			Unread: cv.Unread, TS: cv.TS, PeerRead: cv.PeerRead, Admin: cv.Admin}
	}
	return list, nil
}
