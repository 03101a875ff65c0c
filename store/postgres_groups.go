package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// The PostgreSQL engine's groups (schema in postgres.go). A membership
// change is one transaction that takes its group's advisory lock
// exclusive first, so that changes to one group, and the messages sent to
// it meanwhile (which take the lock shared), are serialized: each message
// is before a change's event in the stream or after it. Then, in the
// order every transaction keeps, the group's row, the users' rows (their
// group counts), the group's stream, the members'.

// refusal is a change refused: its transaction rolls back, and the
// caller gets err.
type refusal struct{ err error }

func (r refusal) Error() string { return r.err.Error() }
func (r refusal) Unwrap() error { return r.err }

func refuse(format string, args ...any) error { return refusal{fmt.Errorf(format, args...)} }

func (p *postgres) change(ctx context.Context, cr *changeRequest) (Changed, error) {
	var ch Changed
	err := retryPG(func() error {
		return pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) (err error) {
			ch, err = p.applyChange(ctx, tx, cr)
			return err
		})
	})
	var r refusal
	if errors.As(err, &r) {
		return Changed{}, r.err
	}
	if err != nil {
		return Changed{}, fmt.Errorf("store commit: %w", err)
	}
	return ch, nil
}

// pgMember is a member row.
type pgMember struct {
	exists bool
	admin  bool
	seq    int64 // since_seq
}

func (p *postgres) applyChange(ctx context.Context, tx pgx.Tx, cr *changeRequest) (Changed, error) {
	c := &cr.c
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(`+groupLock("$1::text")+`)`, c.Group); err != nil {
		return Changed{}, err
	}
	if cr.kind == changeCreate {
		return p.create(ctx, tx, cr)
	}
	var version, count int64
	err := tx.QueryRow(ctx, `SELECT version, members FROM shard_groups WHERE name = $1 FOR UPDATE`, c.Group).Scan(&version, &count)
	if errors.Is(err, pgx.ErrNoRows) {
		return Changed{}, refusal{notMember(cr.kind.String(), c.Group, c.By, false)}
	}
	if err != nil {
		return Changed{}, err
	}
	mem := make(map[string]pgMember, 2)
	rows, err := tx.Query(ctx, `SELECT user_id, admin, since_seq FROM shard_members WHERE grp = $1 AND user_id = ANY($2)`,
		c.Group, []string{c.By, c.User})
	if err != nil {
		return Changed{}, err
	}
	for rows.Next() {
		var u string
		m := pgMember{exists: true}
		if err := rows.Scan(&u, &m.admin, &m.seq); err != nil {
			rows.Close()
			return Changed{}, err
		}
		mem[u] = m
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return Changed{}, err
	}
	by := mem[c.By]
	if !by.exists {
		return Changed{}, refusal{notMember(cr.kind.String(), c.Group, c.By, true)}
	}
	switch cr.kind {
	case changeAdd, changeRemove:
		if !by.admin {
			return Changed{}, refuse("%s %q: %s: %w", cr.kind, c.Group, c.By, ErrForbidden)
		}
		target := mem[c.User]
		if cr.kind == changeAdd {
			if target.exists {
				return Changed{Version: version}, nil
			}
			if count >= int64(p.opts.MaxGroupMembers) {
				return Changed{}, refuse("add member %q: %d members, at most %d: %w", c.Group, count, p.opts.MaxGroupMembers, ErrTooMany)
			}
			return p.add(ctx, tx, cr)
		}
		if !target.exists {
			return Changed{}, refusal{notMember(cr.kind.String(), c.Group, c.User, true)}
		}
		return p.remove(ctx, tx, cr, count)
	}
	return p.leave(ctx, tx, cr, by.admin, count)
}

// countGroups adds delta to the group counts of users (sorted), refusing
// one that would pass MaxUserGroups.
func countGroups(ctx context.Context, tx pgx.Tx, cr *changeRequest, delta int, users ...string) error {
	rows, err := tx.Query(ctx, `INSERT INTO shard_users AS t (user_id, groups)
		SELECT u, greatest($2, 0) FROM unnest($1::text[]) AS u ORDER BY u COLLATE "C"
		ON CONFLICT (user_id) DO UPDATE SET groups = greatest(t.groups + $2, 0)
		RETURNING user_id, groups`, users, delta)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var u string
		var n int
		if err := rows.Scan(&u, &n); err != nil {
			return err
		}
		if delta > 0 && n > MaxUserGroups {
			return refuse("%s %q: %s is in %d groups, at most %d: %w", cr.kind, cr.c.Group, u, n-1, MaxUserGroups, ErrTooMany)
		}
	}
	return rows.Err()
}

// appendEvent appends the change's event (with admin, the member who
// becomes admin) to the group's stream and returns its offset.
func appendEvent(ctx context.Context, tx pgx.Tx, cr *changeRequest, admin string) (int64, error) {
	m := cr.c.event(cr.kind)
	var seq int64
	err := tx.QueryRow(ctx, `WITH s AS (
			INSERT INTO shard_streams AS t (kind, name, last_seq, ts) VALUES (2, $1, 1, $2)
			ON CONFLICT (kind, name) DO UPDATE SET last_seq = t.last_seq + 1, ts = excluded.ts
			RETURNING last_seq
		)
		INSERT INTO shard_messages (kind, name, seq, mid, from_user, to_user, to_room, to_group, body, ts, event, subject, admin)
		SELECT 2, $1, last_seq, $3, $4, '', '', $1, '', $2, $5, $6, $7 FROM s
		RETURNING seq`, m.Group, m.TS, m.Mid, m.From, m.Event, m.User, admin).Scan(&seq)
	return seq, err
}

// joinRow is a new member's row: added by the event at seq, read up to it
// if it caused it, else just before it (the event is unread).
const joinRow = `INSERT INTO shard_members (grp, user_id, admin, since_ts, since_seq, read_seq)
	SELECT $1::text, u, u = $2::text, $3::bigint, $4::bigint, CASE WHEN u = $2::text THEN $4::bigint ELSE $4::bigint - 1 END
	FROM unnest($5::text[]) AS u ORDER BY u COLLATE "C"`

func (p *postgres) create(ctx context.Context, tx pgx.Tx, cr *changeRequest) (Changed, error) {
	c := &cr.c
	tag, err := tx.Exec(ctx, `INSERT INTO shard_groups (name, created_at, version, members) VALUES ($1, $2, 0, $3)
		ON CONFLICT (name) DO NOTHING`, c.Group, c.TS, len(cr.members)+1)
	if err != nil {
		return Changed{}, err
	}
	if tag.RowsAffected() == 0 {
		return Changed{}, refuse("create group %q: %w", c.Group, ErrConflict)
	}
	everyone := append([]string{c.By}, cr.members...)
	if err := countGroups(ctx, tx, cr, 1, everyone...); err != nil {
		return Changed{}, err
	}
	seq, err := appendEvent(ctx, tx, cr, "")
	if err != nil {
		return Changed{}, err
	}
	b := &pgx.Batch{}
	b.Queue(joinRow, c.Group, c.By, c.TS, seq, everyone)
	b.Queue(`UPDATE shard_groups SET version = $2 WHERE name = $1`, c.Group, seq)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return Changed{}, err
	}
	return Changed{Seq: seq, Version: seq}, nil
}

func (p *postgres) add(ctx context.Context, tx pgx.Tx, cr *changeRequest) (Changed, error) {
	c := &cr.c
	if err := countGroups(ctx, tx, cr, 1, c.User); err != nil {
		return Changed{}, err
	}
	seq, err := appendEvent(ctx, tx, cr, "")
	if err != nil {
		return Changed{}, err
	}
	b := &pgx.Batch{}
	b.Queue(joinRow, c.Group, c.By, c.TS, seq, []string{c.User})
	b.Queue(`UPDATE shard_members SET read_seq = $3 WHERE grp = $1 AND user_id = $2`, c.Group, c.By, seq)
	b.Queue(`UPDATE shard_groups SET version = $2, members = members + 1 WHERE name = $1`, c.Group, seq)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return Changed{}, err
	}
	return Changed{Seq: seq, Version: seq}, nil
}

func (p *postgres) remove(ctx context.Context, tx pgx.Tx, cr *changeRequest, count int64) (Changed, error) {
	c := &cr.c
	if err := countGroups(ctx, tx, cr, -1, c.User); err != nil {
		return Changed{}, err
	}
	seq, err := appendEvent(ctx, tx, cr, "")
	if err != nil {
		return Changed{}, err
	}
	b := &pgx.Batch{}
	b.Queue(`DELETE FROM shard_members WHERE grp = $1 AND user_id = $2`, c.Group, c.User)
	b.Queue(`UPDATE shard_members SET read_seq = $3 WHERE grp = $1 AND user_id = $2`, c.Group, c.By, seq)
	b.Queue(`UPDATE shard_groups SET version = $2, members = $3 WHERE name = $1`, c.Group, seq, count-1)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return Changed{}, err
	}
	return Changed{Seq: seq, Version: seq}, nil
}

func (p *postgres) leave(ctx context.Context, tx pgx.Tx, cr *changeRequest, admin bool, count int64) (Changed, error) {
	c := &cr.c
	heirName := ""
	if admin && count > 1 {
		all, err := groupMembers(ctx, tx, c.Group)
		if err != nil {
			return Changed{}, err
		}
		heirName = heir(all, c.By)
	}
	if err := countGroups(ctx, tx, cr, -1, c.By); err != nil {
		return Changed{}, err
	}
	seq, err := appendEvent(ctx, tx, cr, heirName)
	if err != nil {
		return Changed{}, err
	}
	b := &pgx.Batch{}
	b.Queue(`DELETE FROM shard_members WHERE grp = $1 AND user_id = $2`, c.Group, c.By)
	if heirName != "" {
		b.Queue(`UPDATE shard_members SET admin = true WHERE grp = $1 AND user_id = $2`, c.Group, heirName)
	}
	if count == 1 {
		// The stream's row stays: a new group of that name goes on from it.
		b.Queue(`DELETE FROM shard_groups WHERE name = $1`, c.Group)
	} else {
		b.Queue(`UPDATE shard_groups SET version = $2, members = $3 WHERE name = $1`, c.Group, seq, count-1)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return Changed{}, err
	}
	return Changed{Seq: seq, Version: seq, Admin: heirName, Gone: count == 1}, nil
}

// querier is what groupMembers reads through: a transaction or a pool.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// groupMembers lists group's members by user id (byte order, as the
// embedded engine lists them).
func groupMembers(ctx context.Context, q querier, group string) ([]Member, error) {
	rows, err := q.Query(ctx, `SELECT user_id, admin, since_ts, since_seq FROM shard_members
		WHERE grp = $1 ORDER BY user_id COLLATE "C"`, group)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Member, error) {
		var m Member
		err := row.Scan(&m.User, &m.Admin, &m.Since, &m.Seq)
		return m, err
	})
}

// readOnly runs f in one read-only REPEATABLE READ transaction: every
// statement of f sees the same snapshot.
func (p *postgres) readOnly(ctx context.Context, f func(pgx.Tx) error) error {
	return pgx.BeginTxFunc(ctx, p.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, f)
}

func (p *postgres) group(ctx context.Context, name string) (GroupInfo, error) {
	info := GroupInfo{Group: name}
	err := p.readOnly(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `SELECT g.version, coalesce(s.last_seq, 0) FROM shard_groups g
			LEFT JOIN shard_streams s ON s.kind = 2 AND s.name = g.name WHERE g.name = $1`, name).Scan(&info.Version, &info.Last)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("group %q: %w", name, ErrNoGroup)
		}
		if err != nil {
			return err
		}
		info.Members, err = groupMembers(ctx, tx, name)
		return err
	})
	return info, err
}

func (p *postgres) userGroups(ctx context.Context, user string) ([]string, error) {
	rows, err := p.pool.Query(ctx, `SELECT grp FROM shard_members WHERE user_id = $1 ORDER BY grp COLLATE "C"`, user)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// readGroup reads the member's row and the page in one snapshot, so that
// a member removed meanwhile reads nothing after its removal.
func (p *postgres) readGroup(ctx context.Context, user, group string, after int64, limit int) (msgs []Message, last int64, more bool, err error) {
	err = p.readOnly(ctx, func(tx pgx.Tx) error {
		var member, exists bool
		err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM shard_members WHERE grp = $1 AND user_id = $2),
			EXISTS (SELECT 1 FROM shard_groups WHERE name = $1)`, group, user).Scan(&member, &exists)
		if err != nil {
			return err
		}
		if !member {
			return notMember("read group", group, user, exists)
		}
		b := &pgx.Batch{}
		pg := queueRead(b, GroupStream(group), after, limit, user)
		br := tx.SendBatch(ctx, b)
		msgs, last, more, err = pg.results(br)
		return errors.Join(err, br.Close())
	})
	return msgs, last, more, err
}
