package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The PostgreSQL engine's read state and presence (schema in
// postgres.go): shard_conversations for direct conversations, the
// read_seq of shard_members for groups, shard_users for last seen.

func (p *postgres) setRead(ctx context.Context, r ReadMark) (ReadMarked, error) {
	var m ReadMarked
	err := retryPG(func() (err error) {
		if r.Group != "" {
			m, err = p.setGroupRead(ctx, r)
		} else {
			m, err = p.setDirectRead(ctx, r)
		}
		return err
	})
	return m, err
}

// conversationAt is, for the direct read statement, the newest message of
// the conversation ($1 with $2) in $1's inbox after the read offset and at
// or below $3 (ending at once when $3 names one of its messages, as it
// normally does); with the peer_seq > 0 condition, the newest that has a
// copy in the peer's inbox.
const conversationAt = `FROM shard_messages m WHERE m.kind = 0 AND m.name = $1 AND m.seq > t.read_seq AND m.seq <= $3
	AND ((m.from_user = $1 AND m.to_user = $2) OR (m.from_user = $2 AND m.to_user = $1))`

// setDirectRead is one transaction in one round trip: lock the
// conversation's row (its state before), then move it in a statement of
// its own, whose snapshot has every message the row counts.
func (p *postgres) setDirectRead(ctx context.Context, r ReadMark) (ReadMarked, error) {
	var (
		before, after ReadMarked
		found, moved  bool
	)
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(`SELECT read_seq, read_peer_seq, received - read_received FROM shard_conversations
		WHERE user_id = $1 AND peer = $2 FOR UPDATE`, r.User, r.With).QueryRow(func(row pgx.Row) error {
		err := row.Scan(&before.Read, &before.PeerSeq, &before.Unread)
		found = err == nil
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	})
	b.Queue(`UPDATE shard_conversations t SET
			read_seq = least($3, t.last_seq),
			read_received = greatest(t.read_received, CASE WHEN $3 >= t.last_seq THEN t.received
				ELSE coalesce((SELECT m.received `+conversationAt+` ORDER BY m.seq DESC LIMIT 1), 0) END),
			read_peer_seq = greatest(t.read_peer_seq, CASE WHEN $3 >= t.last_seq THEN t.last_peer_seq
				ELSE coalesce((SELECT m.peer_seq `+conversationAt+` AND m.peer_seq > 0 ORDER BY m.seq DESC LIMIT 1), 0) END)
		WHERE t.user_id = $1 AND t.peer = $2 AND least($3, t.last_seq) > t.read_seq
		RETURNING t.read_seq, t.read_peer_seq, t.received - t.read_received`, r.User, r.With, r.Seq).QueryRow(func(row pgx.Row) error {
		err := row.Scan(&after.Read, &after.PeerSeq, &after.Unread)
		moved = err == nil
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	})
	b.Queue("COMMIT")
	if err := p.sendTx(ctx, b); err != nil {
		return ReadMarked{}, err
	}
	switch {
	case moved:
		after.Moved = true
		after.Unread = max(after.Unread, 0)
		return after, nil
	case found:
		before.Unread = max(before.Unread, 0)
		return before, nil
	}
	return ReadMarked{}, nil
}

func (p *postgres) setGroupRead(ctx context.Context, r ReadMark) (ReadMarked, error) {
	var (
		m                  ReadMarked
		last, trimmed      int64
		member, moved, has bool
	)
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(`SELECT t.read_seq, coalesce(s.last_seq, 0), coalesce(s.trimmed, 0) FROM shard_members t
		LEFT JOIN shard_streams s ON s.kind = 2 AND s.name = t.grp
		WHERE t.grp = $1 AND t.user_id = $2 FOR UPDATE OF t`, r.Group, r.User).QueryRow(func(row pgx.Row) error {
		err := row.Scan(&m.Read, &last, &trimmed)
		member = err == nil
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	})
	b.Queue(`UPDATE shard_members t SET read_seq = least($3, s.last_seq) FROM shard_streams s
		WHERE t.grp = $1 AND t.user_id = $2 AND s.kind = 2 AND s.name = $1 AND least($3, s.last_seq) > t.read_seq
		RETURNING t.read_seq, s.last_seq, s.trimmed`, r.Group, r.User, r.Seq).QueryRow(func(row pgx.Row) error {
		var read int64
		err := row.Scan(&read, &last, &trimmed)
		if moved = err == nil; moved {
			m.Read = read
		}
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	})
	b.Queue(`SELECT coalesce((SELECT version FROM shard_groups WHERE name = $1), 0)`, r.Group).QueryRow(func(row pgx.Row) error {
		err := row.Scan(&m.Version)
		has = m.Version > 0
		return err
	})
	b.Queue("COMMIT")
	if err := p.sendTx(ctx, b); err != nil {
		return ReadMarked{}, err
	}
	if !member {
		return ReadMarked{}, notMember("read group", r.Group, r.User, has)
	}
	m.Moved = moved
	m.Unread = groupUnread(last, m.Read, trimmed)
	return m, nil
}

// sendTx sends b, a whole transaction, on one connection, rolled back if
// it fails part way.
func (p *postgres) sendTx(ctx context.Context, b *pgx.Batch) error {
	return p.withConn(ctx, func(conn *pgxpool.Conn) error { return conn.SendBatch(ctx, b).Close() })
}

func (p *postgres) conversations(ctx context.Context, user string) ([]Conversation, error) {
	var list []Conversation
	b := &pgx.Batch{}
	// The peer's row of the same conversation holds the receipt it gave
	// user (PeerRead).
	b.Queue(`SELECT t.peer, t.last_seq, t.read_seq, greatest(t.received - t.read_received, 0), t.ts, coalesce(p.read_peer_seq, 0)
		FROM shard_conversations t LEFT JOIN shard_conversations p ON p.user_id = t.peer AND p.peer = t.user_id
		WHERE t.user_id = $1 ORDER BY t.ts DESC, t.peer COLLATE "C" LIMIT $2`, user, MaxDirectConversations).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var c Conversation
			if err := rows.Scan(&c.With, &c.Last, &c.Read, &c.Unread, &c.TS, &c.PeerRead); err != nil {
				return err
			}
			list = append(list, c)
		}
		return rows.Err()
	})
	b.Queue(`SELECT m.grp, coalesce(s.last_seq, 0), m.read_seq, coalesce(s.trimmed, 0), coalesce(s.ts, 0), m.admin
		FROM shard_members m LEFT JOIN shard_streams s ON s.kind = 2 AND s.name = m.grp
		WHERE m.user_id = $1`, user).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var c Conversation
			var trimmed int64
			if err := rows.Scan(&c.Group, &c.Last, &c.Read, &trimmed, &c.TS, &c.Admin); err != nil {
				return err
			}
			c.Unread = groupUnread(c.Last, c.Read, trimmed)
			list = append(list, c)
		}
		return rows.Err()
	})
	if err := p.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}
	return list, nil
}

func (p *postgres) setLastSeen(ctx context.Context, user string, ms int64) error {
	_, err := p.pool.Exec(ctx, `INSERT INTO shard_users AS t (user_id, last_seen) VALUES ($1, $2)
		ON CONFLICT (user_id) DO UPDATE SET last_seen = greatest(t.last_seen, excluded.last_seen)`, user, ms)
	if err != nil {
		return fmt.Errorf("set last seen of %s: %w", user, err)
	}
	return nil
}

func (p *postgres) lastSeen(ctx context.Context, users []string) (map[string]int64, error) {
	rows, err := p.pool.Query(ctx, `SELECT user_id, last_seen FROM shard_users WHERE user_id = ANY($1) AND last_seen > 0`, users)
	if err != nil {
		return nil, err
	}
	seen := make(map[string]int64, len(users))
	var (
		u  string
		ms int64
	)
	_, err = pgx.ForEachRow(rows, []any{&u, &ms}, func() error {
		seen[u] = ms
		return nil
	})
	return seen, err
}
