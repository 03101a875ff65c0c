package node

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/router"
	"github.com/shardchat/shard/store"
)

// The HTTP API of groups and read state (docs/protocol.md §12), behind
// --api-key as POST /api/send is. The API acts as the admin it names in
// `by`, or else as the group's longest-standing admin.

// serveGroups answers POST /api/groups, GET /api/groups/{group},
// POST /api/groups/{group}/members, DELETE /api/groups/{group}/members/{user}
// and GET /api/groups/{group}/messages.
func (n *Node) serveGroups(ctx *fasthttp.RequestCtx, rest string) {
	group, sub, _ := strings.Cut(rest, "/")
	method := fasthttp.MethodGet
	switch {
	case rest == "", sub == "members":
		method = fasthttp.MethodPost
	case strings.HasPrefix(sub, "members/"):
		method = fasthttp.MethodDelete
	}
	if !n.apiKeyOK(ctx, method) {
		return
	}
	if n.store == nil { // as the frames are answered (docs/protocol.md §12)
		writeError(ctx, fasthttp.StatusBadRequest, protocol.CodeBadRequest, "groups need a message store; this cluster runs without one")
		return
	}
	if rest == "" {
		n.createGroup(ctx)
		return
	}
	if !protocol.ValidID(group) {
		writeError(ctx, fasthttp.StatusBadRequest, protocol.CodeBadRequest, "the group must be 1 to 64 characters of A-Z a-z 0-9 _ . @ -")
		return
	}
	switch {
	case sub == "":
		n.serveGroup(ctx, group)
	case sub == "messages":
		n.serveHistory(ctx, store.GroupStream(group))
	case sub == "members":
		var req struct{ User, By string }
		if err := json.Unmarshal(ctx.PostBody(), &req); err != nil {
			writeError(ctx, fasthttp.StatusBadRequest, protocol.CodeBadRequest, "body must be a JSON object: "+err.Error())
			return
		}
		n.changeMember(ctx, store.EventAdded, group, req.User, req.By)
	case strings.HasPrefix(sub, "members/"):
		n.changeMember(ctx, store.EventRemoved, group, strings.TrimPrefix(sub, "members/"), string(ctx.QueryArgs().Peek("by")))
	default:
		writeError(ctx, fasthttp.StatusNotFound, protocol.CodeNotFound, "no such page")
	}
}

func (n *Node) createGroup(ctx *fasthttp.RequestCtx) {
	var req struct {
		Group, Admin string
		Members      []string
	}
	if err := json.Unmarshal(ctx.PostBody(), &req); err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, protocol.CodeBadRequest, "body must be a JSON object: "+err.Error())
		return
	}
	c, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	seq, err := n.router.ChangeGroup(c, store.EventCreated, store.GroupChange{Group: req.Group, By: req.Admin, Members: req.Members})
	if err != nil {
		writeRefusal(ctx, err)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"group": req.Group, "seq": seq})
}

func (n *Node) serveGroup(ctx *fasthttp.RequestCtx, group string) {
	c, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	info, err := n.router.Group(c, group)
	if err != nil {
		writeRefusal(ctx, err)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"group": group, "members": router.GroupMembers(info), "last": info.Last})
}

// changeMember adds or removes user as by, or as the group's
// longest-standing admin when by is empty.
func (n *Node) changeMember(ctx *fasthttp.RequestCtx, event, group, user, by string) {
	c, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	if by == "" {
		info, err := n.router.Group(c, group)
		if err != nil {
			writeRefusal(ctx, err)
			return
		}
		var first *store.Member
		for i := range info.Members {
			if m := &info.Members[i]; m.Admin && (first == nil || m.Seq < first.Seq) {
				first = m
			}
		}
		if first != nil {
			by = first.User
		}
	}
	seq, err := n.router.ChangeGroup(c, event, store.GroupChange{Group: group, By: by, User: user})
	if err != nil {
		writeRefusal(ctx, err)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"group": group, "user": user, "seq": seq})
}

// serveConversations answers GET /api/users/{id}/conversations.
func (n *Node) serveConversations(ctx *fasthttp.RequestCtx, user string) {
	if !n.apiKeyOK(ctx, fasthttp.MethodGet) {
		return
	}
	if !protocol.ValidID(user) {
		writeError(ctx, fasthttp.StatusBadRequest, protocol.CodeBadRequest, "the user must be 1 to 64 characters of A-Z a-z 0-9 _ . @ -")
		return
	}
	c, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	list, err := n.router.Conversations(c, user)
	if err != nil {
		writeRefusal(ctx, err)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"user": user, "conversations": list})
}

// writeRefusal answers an error of the router with its protocol code and
// a fitting status. A group that does not exist is 404 here: the API acts
// for no user, so "not a member" (what a client hears) would say nothing.
func writeRefusal(ctx *fasthttp.RequestCtx, err error) {
	if errors.Is(err, store.ErrNoGroup) {
		writeError(ctx, fasthttp.StatusNotFound, protocol.CodeNotFound, "no such group")
		return
	}
	code, message := router.Refusal(err)
	status := fasthttp.StatusServiceUnavailable
	switch code {
	case protocol.CodeBadRequest:
		status = fasthttp.StatusBadRequest
	case protocol.CodeNotMember, protocol.CodeForbidden:
		status = fasthttp.StatusForbidden
	case protocol.CodeConflict:
		status = fasthttp.StatusConflict
	}
	writeError(ctx, status, code, message)
}
