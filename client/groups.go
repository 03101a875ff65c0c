package client

import (
	"context"

	"github.com/shardchat/shard/protocol"
)

// Groups and read state (docs/protocol.md §12) need a cluster with a
// message store; without one each answers an *Error with code bad_request.

// CreateGroup creates group with this user as its admin and members as its
// other members. An existing group: *Error with code conflict.
func (c *Client) CreateGroup(ctx context.Context, group string, members ...string) (Ack, error) {
	if members == nil {
		members = []string{}
	}
	return c.do(ctx, Frame{Type: protocol.TypeGroupCreate, Group: group, Members: members}, nil)
}

// AddMember adds user to group; this user must be an admin (else *Error
// forbidden). Adding a member is ok and changes nothing.
func (c *Client) AddMember(ctx context.Context, group, user string) (Ack, error) {
	return c.do(ctx, Frame{Type: protocol.TypeGroupAdd, Group: group, User: user}, nil)
}

// RemoveMember removes user from group, as an admin. From the answer on,
// nothing sent to the group reaches user.
func (c *Client) RemoveMember(ctx context.Context, group, user string) (Ack, error) {
	return c.do(ctx, Frame{Type: protocol.TypeGroupRemove, Group: group, User: user}, nil)
}

// LeaveGroup takes this user out of group.
func (c *Client) LeaveGroup(ctx context.Context, group string) (Ack, error) {
	return c.do(ctx, Frame{Type: protocol.TypeGroupLeave, Group: group}, nil)
}

// GroupMembers returns group's members, by user id, and which are admins;
// a user who is not a member gets *Error not_member.
func (c *Client) GroupMembers(ctx context.Context, group string) ([]GroupMember, error) {
	ack, err := c.do(ctx, Frame{Type: protocol.TypeGroupMembers, Group: group}, nil)
	return ack.Members, err
}

// SendGroup sends body to group, whose member this user must be: an Ack
// with status sent, the message's offset in the group's stream (Seq) and
// the connections it was written to (Recipients), or an *Error
// (not_member). A send lost with its connection is resent as Send does.
func (c *Client) SendGroup(ctx context.Context, group, body string) (Ack, error) {
	return c.do(ctx, Frame{Type: protocol.TypeSend, Group: group, Body: body, Key: newKey()}, nil)
}

// SyncGroup asks for one page of group's stream after offset after, as
// Sync does for the inbox; a member reads from the event that added it.
func (c *Client) SyncGroup(ctx context.Context, group string, after int64) (Ack, error) {
	return c.do(ctx, Frame{Type: protocol.TypeSync, Group: group, After: after}, nil)
}

// Read says this user has read its conversation with user with up to seq,
// an offset in this user's inbox. with and this user's other connections
// get a Receipt. A lower offset than the last read changes nothing.
func (c *Client) Read(ctx context.Context, with string, seq int64) error {
	_, err := c.do(ctx, Frame{Type: protocol.TypeRead, With: with, Seq: seq}, nil)
	return err
}

// ReadGroup says this user has read group up to seq; its members'
// connections get a Receipt.
func (c *Client) ReadGroup(ctx context.Context, group string, seq int64) error {
	_, err := c.do(ctx, Frame{Type: protocol.TypeRead, Group: group, Seq: seq}, nil)
	return err
}

// Conversations returns this user's conversations, newest activity first,
// with unread counts that every device of the user agrees on.
func (c *Client) Conversations(ctx context.Context) ([]Conversation, error) {
	ack, err := c.do(ctx, Frame{Type: protocol.TypeConversations}, nil)
	return ack.Conversations, err
}

// Receipts returns the receipts this client gets: someone read what this
// user sent, or this user read on another device. Up to
// Options.MessageBuffer wait; past that a new receipt is dropped rather than
// hold up messages.
func (c *Client) Receipts() <-chan Receipt { return c.receipts }
