package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The PostgreSQL engine: every node of a cluster opens the same database
// and appends to it at once. Each node creates or migrates the schema at
// Open, under a transaction-scoped advisory lock, so that nodes starting
// together do it once. The schema, version 1:
//
//	CREATE TABLE shard_schema (version integer NOT NULL);  -- one row
//
//	-- One row per stream: the newest offset given. An append bumps it in
//	-- the transaction that inserts the messages, so its row lock orders
//	-- the appends of every node to that stream: dense offsets, no gap
//	-- (a rolled-back append gives its offsets back), no duplicate.
//	CREATE TABLE shard_streams (
//	    room     boolean NOT NULL,  -- false: a user's inbox, true: a room
//	    name     text    NOT NULL,  -- the user id or room name
//	    last_seq bigint  NOT NULL,
//	    PRIMARY KEY (room, name)
//	);
//
//	-- A direct message is a row in each inbox it went to.
//	CREATE TABLE shard_messages (
//	    room      boolean NOT NULL,
//	    name      text    NOT NULL,
//	    seq       bigint  NOT NULL,  -- its offset in (room, name)
//	    mid       text    NOT NULL,
//	    from_user text    NOT NULL,
//	    to_user   text    NOT NULL,  -- '' for a room message
//	    to_room   text    NOT NULL,  -- '' for a direct message
//	    body      text    NOT NULL,
//	    ts        bigint  NOT NULL,  -- ms since the epoch, as in the msg frame
//	    PRIMARY KEY (room, name, seq)
//	);
//	CREATE INDEX shard_messages_ts ON shard_messages (ts);  -- age retention
//
//	-- Idempotency keys: the first answer to (from_user, key) within the
//	-- window (created_at is the appending node's clock, ms).
//	CREATE TABLE shard_keys (
//	    from_user  text    NOT NULL,
//	    key        text    NOT NULL,
//	    created_at bigint  NOT NULL,
//	    mid        text    NOT NULL,
//	    ts         bigint  NOT NULL,
//	    seq        bigint  NOT NULL,  -- in the recipient's inbox or the room
//	    sender_seq bigint  NOT NULL,  -- in the sender's inbox; 0 for none
//	    status     text,              -- the answer RecordAnswer recorded
//	    recipients integer,
//	    PRIMARY KEY (from_user, key)
//	);
//	CREATE INDEX shard_keys_created ON shard_keys (created_at);  -- expiry
//
// An append group (group commit: the appends waiting on one node) is one
// transaction in two round trips:
//
//  1. BEGIN, and INSERT the keys ... ON CONFLICT DO UPDATE (renew) WHERE
//     created_at is past the window, RETURNING those that are new: the
//     others are duplicates, whose first answer is then read (a third round
//     trip, only then). A concurrent first append of the same key makes it
//     wait for that one's commit.
//  2. One statement, then COMMIT: WITH s AS (INSERT the streams ... ON
//     CONFLICT DO UPDATE SET last_seq = last_seq + n RETURNING last_seq),
//     INSERT the messages with the offsets that follow s's, UPDATE the
//     keys with them. The streams' row locks are held for this
//     server-side work and the commit only, never across a client round
//     trip.
//
// Every transaction takes its row locks in one order, keys before
// streams, each sorted by (room, name) or (from_user, key) in byte order
// (COLLATE "C"): appends from many nodes never deadlock. A deadlock or
// serialization error would retry the group all the same.
//
// What it costs, `go test -run '^$' -bench PostgresAppend -benchmem
// -benchtime=2s -count=3 ./store/` against PostgreSQL 15 on loopback
// (fsync and synchronous_commit on, defaults otherwise; the server and the
// benchmark share 2 vCPUs, which is what bounds the higher loads), every
// append a 100-byte direct message with a key, medians of 3:
//
//	                        appends/s   p50 / p99 of one append
//	1 appender              1130        0.77 / 2.5 ms
//	16, group commit        3210        4.7 / 11 ms
//	64, group commit        5790        10 / 36 ms
//	16, a commit each       1760        8.2 / 20 ms
//	64, a commit each       2100        30 / 40 ms
//
// So an append adds about 0.8 ms (p99 2.5 ms) to a send on an idle
// cluster. With each answer recorded too (RecordAnswer, batched the same
// way), as the router does: 1000, 2370 and 5770 appends/s at 1, 16, 64.
// (Those figures predate step 2 as one statement; it was three, which
// read shard_streams again for the messages and for the keys. Run in turn
// with the three on a busy machine, `-count 6` medians, group commit: 1080
// to 1220, 3220 to 4130 and 6350 to 6960 appends/s at 1, 16, 64.)
const schemaVersion = 1

var migrations = []string{
	// 1
	`CREATE TABLE shard_streams (
	    room     boolean NOT NULL,
	    name     text    NOT NULL,
	    last_seq bigint  NOT NULL,
	    PRIMARY KEY (room, name)
	);
	CREATE TABLE shard_messages (
	    room      boolean NOT NULL,
	    name      text    NOT NULL,
	    seq       bigint  NOT NULL,
	    mid       text    NOT NULL,
	    from_user text    NOT NULL,
	    to_user   text    NOT NULL,
	    to_room   text    NOT NULL,
	    body      text    NOT NULL,
	    ts        bigint  NOT NULL,
	    PRIMARY KEY (room, name, seq)
	);
	CREATE INDEX shard_messages_ts ON shard_messages (ts);
	CREATE TABLE shard_keys (
	    from_user  text    NOT NULL,
	    key        text    NOT NULL,
	    created_at bigint  NOT NULL,
	    mid        text    NOT NULL,
	    ts         bigint  NOT NULL,
	    seq        bigint  NOT NULL,
	    sender_seq bigint  NOT NULL,
	    status     text,
	    recipients integer,
	    PRIMARY KEY (from_user, key)
	);
	CREATE INDEX shard_keys_created ON shard_keys (created_at);`,
}

// Advisory locks are per database: their ids name the schema too, so that
// stores in different schemas of one database (tests do that) never wait
// for each other.
const (
	migrateLock = `hashtext('shard.migrate.' || current_schema())`
	trimLock    = `hashtext('shard.trim.' || current_schema())`
)

// groupCommitters is how many groups one node commits at once.
const groupCommitters = 2

// groupTimeout bounds one group's transaction: past it its appends fail
// (and a client's retry with the same key is safe).
const groupTimeout = 10 * time.Second

type postgres struct {
	pool     *pgxpool.Pool
	opts     Options
	frontend // the Store methods
}

func openPostgres(ctx context.Context, url string, opts Options) (Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	where := cfg.ConnConfig.Host + "/" + cfg.ConnConfig.Database
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("store %s: %w", where, err)
	}
	p := &postgres{pool: pool, opts: opts}
	// Group commit wants few committers, so that groups are big: measured
	// with 16 and 64 appenders (2 vCPUs shared with the server), 1, 2 and
	// 4 committers gave 4.0k/8.1k, 3.4k/7.0k and 2.4k/4.1k appends/s. Two
	// keep most of that and collect one group while another commits, so a
	// group waiting on a row lock held by another node stalls no one.
	// Without batching, each append needs its own connection.
	committers := min(groupCommitters, int(cfg.MaxConns))
	if opts.MaxBatch == 1 {
		committers = int(cfg.MaxConns)
	}
	p.start(p, committers, opts)
	opts.Logger.Info("message store open", "engine", "postgres", "db", where, "schema", schemaVersion, "conns", cfg.MaxConns)
	return p, nil
}

// migrate brings the schema to schemaVersion, once however many nodes
// start at the same moment: the advisory lock serializes them, and the
// later ones find the work done.
func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(`+migrateLock+`)`); err != nil {
			return fmt.Errorf("migrate lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS shard_schema (version integer NOT NULL)`); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		var v int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM shard_schema`).Scan(&v); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		if v > schemaVersion {
			return fmt.Errorf("schema version %d is newer than this binary's %d", v, schemaVersion)
		}
		for ; v < schemaVersion; v++ {
			if _, err := tx.Exec(ctx, migrations[v]); err != nil {
				return fmt.Errorf("migrate to %d: %w", v+1, err)
			}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM shard_schema`); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		_, err := tx.Exec(ctx, `INSERT INTO shard_schema VALUES ($1)`, schemaVersion)
		return err
	})
}

func (p *postgres) read(ctx context.Context, s Stream, after int64, limit int) ([]Message, int64, bool, error) {
	b := &pgx.Batch{}
	b.Queue(`SELECT seq, mid, from_user, to_user, to_room, body, ts FROM shard_messages
		WHERE room = $1 AND name = $2 AND seq > $3 ORDER BY seq LIMIT $4`, s.Room, s.Name, after, limit+1)
	b.Queue(`SELECT last_seq FROM shard_streams WHERE room = $1 AND name = $2`, s.Room, s.Name)
	br := p.pool.SendBatch(ctx, b)
	defer br.Close()
	rows, _ := br.Query()
	msgs := make([]Message, 0, min(limit, 64))
	more := false
	for rows.Next() {
		if len(msgs) == limit {
			more = true
			break
		}
		m := Message{Stream: s}
		if err := rows.Scan(&m.Seq, &m.Mid, &m.From, &m.To, &m.Room, &m.Body, &m.TS); err != nil {
			rows.Close()
			return nil, 0, false, err
		}
		msgs = append(msgs, m)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, 0, false, err
	}
	var last int64
	if err := br.QueryRow().Scan(&last); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, false, err
	}
	return msgs, last, more, nil
}

func (p *postgres) close() error {
	p.pool.Close()
	return nil
}

// commit runs on a committer goroutine: the appends of batch in one
// transaction, its answers in another.
func (p *postgres) commit(batch []*request) {
	var appends, answers []*request
	for _, r := range batch {
		if r.op == opAnswer {
			answers = append(answers, r)
		} else {
			appends = append(appends, r)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), groupTimeout)
	defer cancel()
	for _, work := range []struct {
		reqs []*request
		f    func(context.Context, []*request) error
	}{{appends, p.commitAppends}, {answers, p.commitAnswers}} {
		if len(work.reqs) == 0 {
			continue
		}
		var err error
		for attempt := 0; attempt < 3; attempt++ {
			if err = work.f(ctx, work.reqs); err == nil || !retryablePG(err) {
				break
			}
		}
		if err != nil {
			err = fmt.Errorf("store commit: %w", err)
			for _, r := range work.reqs {
				r.res, r.err = Appended{}, err
			}
		}
	}
}

func retryablePG(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
}

// withConn runs f on one connection and rolls back the transaction f
// left open when it fails.
func (p *postgres) withConn(ctx context.Context, f func(*pgxpool.Conn) error) error {
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if err := f(conn); err != nil {
		if conn.Conn().PgConn().TxStatus() != 'I' {
			// A connection left in a transaction is destroyed on release.
			_, _ = conn.Exec(ctx, "ROLLBACK")
		}
		return err
	}
	return nil
}

// streamCount is one stream's share of an append group.
type streamCount struct {
	s    Stream
	n    int64 // offsets it takes
	last int64 // its last_seq after the group
}

// copyAt is one copy of a new message: the k-th (from 1) the group appends
// to a stream.
type copyAt struct {
	sc *streamCount
	k  int64
}

// off is the copy's place relative to its stream's last_seq before the
// group, which the statement adds on the server.
func (c copyAt) off() int64 { return c.k - c.sc.n }

// seq is the copy's offset once the group has committed.
func (c copyAt) seq() int64 { return c.sc.last + c.off() }

func (p *postgres) commitAppends(ctx context.Context, reqs []*request) error {
	now := p.opts.Now().UnixMilli()
	cutoff := now - p.opts.KeyWindow.Milliseconds()

	// The first append of each key in the group leads; later ones follow it.
	leader := make(map[keyID]*request)
	follows := make(map[*request]*request)
	var keyed []*request
	for _, r := range reqs {
		r.res, r.err = Appended{}, nil
		if r.append.Key == "" {
			continue
		}
		id := keyID{r.append.From, r.append.Key}
		if l, ok := leader[id]; ok {
			follows[r] = l
			continue
		}
		leader[id] = r
		keyed = append(keyed, r)
	}
	return p.withConn(ctx, func(conn *pgxpool.Conn) error {
		dup := make(map[*request]bool)
		if len(keyed) > 0 {
			if err := p.claimKeys(ctx, conn, keyed, now, cutoff, dup); err != nil {
				return err
			}
		}
		// Number the new messages: the k-th of a stream in this group takes
		// that stream's last_seq - n + k.
		streams := make(map[Stream]*streamCount)
		var fresh []*request
		at := make(map[*request][2]copyAt)
		for _, r := range reqs {
			if dup[r] || follows[r] != nil {
				continue
			}
			fresh = append(fresh, r)
			first, sender, copy := r.append.streams()
			var pos [2]copyAt
			for i, s := range []Stream{first, sender} {
				if i == 1 && !copy {
					break
				}
				sc := streams[s]
				if sc == nil {
					sc = &streamCount{s: s}
					streams[s] = sc
				}
				sc.n++
				pos[i] = copyAt{sc, sc.n}
			}
			at[r] = pos
		}
		b := &pgx.Batch{}
		if len(fresh) > 0 {
			sorted := make([]*streamCount, 0, len(streams))
			for _, sc := range streams {
				sorted = append(sorted, sc)
			}
			slices.SortFunc(sorted, func(a, b *streamCount) int {
				return cmp.Or(cmpBool(a.s.Room, b.s.Room), strings.Compare(a.s.Name, b.s.Name))
			})
			var (
				sRoom  []bool
				sName  []string
				sCount []int64
			)
			for _, sc := range sorted {
				sRoom, sName, sCount = append(sRoom, sc.s.Room), append(sName, sc.s.Name), append(sCount, sc.n)
			}
			// A message's offset is its stream's last_seq after the group
			// plus off: the k-th of the stream's n takes off k - n.
			var (
				mRoom                     []bool
				mName                     []string
				mOff, mTS                 []int64
				mMid, mFrom, mTo, mToRoom []string
				mBody                     []string
			)
			for _, r := range fresh {
				a := &r.append
				for _, c := range at[r] {
					if c.sc == nil {
						continue
					}
					mRoom, mName, mOff = append(mRoom, c.sc.s.Room), append(mName, c.sc.s.Name), append(mOff, c.off())
					mMid, mFrom, mTo, mToRoom = append(mMid, a.Mid), append(mFrom, a.From), append(mTo, a.To), append(mToRoom, a.Room)
					mBody, mTS = append(mBody, a.Body), append(mTS, a.TS)
				}
			}
			var (
				kFrom, kKey    []string
				kRoom1, kRoom2 []bool
				kName1, kName2 []string
				kOff1, kOff2   []int64
			)
			for _, r := range fresh {
				if r.append.Key == "" {
					continue
				}
				pos := at[r]
				kFrom, kKey = append(kFrom, r.append.From), append(kKey, r.append.Key)
				kRoom1, kName1, kOff1 = append(kRoom1, pos[0].sc.s.Room), append(kName1, pos[0].sc.s.Name), append(kOff1, pos[0].off())
				if pos[1].sc != nil {
					kRoom2, kName2, kOff2 = append(kRoom2, pos[1].sc.s.Room), append(kName2, pos[1].sc.s.Name), append(kOff2, pos[1].off())
				} else { // no sender copy: no stream is named ''
					kRoom2, kName2, kOff2 = append(kRoom2, false), append(kName2, ""), append(kOff2, 0)
				}
			}
			// One statement, which reads shard_streams once: the upsert
			// locks each stream's row (in order) and returns its last_seq
			// after this group, and the messages and the keys take their
			// offsets from those rows. (They could not read the table
			// again: every part of a statement sees the table as it was
			// before the statement.)
			b.Queue(`WITH s AS (
					INSERT INTO shard_streams AS t (room, name, last_seq)
					SELECT * FROM unnest($1::boolean[], $2::text[], $3::bigint[]) AS u(room, name, n)
					ORDER BY room, name COLLATE "C"
					ON CONFLICT (room, name) DO UPDATE SET last_seq = t.last_seq + excluded.last_seq
					RETURNING room, name, last_seq
				), messages AS (
					INSERT INTO shard_messages (room, name, seq, mid, from_user, to_user, to_room, body, ts)
					SELECT c.room, c.name, s.last_seq + c.off, c.mid, c.from_user, c.to_user, c.to_room, c.body, c.ts
					FROM unnest($4::boolean[], $5::text[], $6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::bigint[])
					  AS c(room, name, off, mid, from_user, to_user, to_room, body, ts)
					JOIN s ON s.room = c.room AND s.name = c.name
				), keys AS (
					UPDATE shard_keys k SET seq = s1.last_seq + u.off1, sender_seq = coalesce(s2.last_seq + u.off2, 0)
					FROM unnest($13::text[], $14::text[], $15::boolean[], $16::text[], $17::bigint[], $18::boolean[], $19::text[], $20::bigint[])
					  AS u(from_user, key, room1, name1, off1, room2, name2, off2)
					JOIN s s1 ON s1.room = u.room1 AND s1.name = u.name1
					LEFT JOIN s s2 ON s2.room = u.room2 AND s2.name = u.name2
					WHERE k.from_user = u.from_user AND k.key = u.key
				)
				SELECT room, name, last_seq FROM s`,
				sRoom, sName, sCount,
				mRoom, mName, mOff, mMid, mFrom, mTo, mToRoom, mBody, mTS,
				kFrom, kKey, kRoom1, kName1, kOff1, kRoom2, kName2, kOff2).Query(func(rows pgx.Rows) error {
				for rows.Next() {
					var s Stream
					var last int64
					if err := rows.Scan(&s.Room, &s.Name, &last); err != nil {
						return err
					}
					if sc := streams[s]; sc != nil {
						sc.last = last
					}
				}
				return rows.Err()
			})
		}
		if len(keyed) > 0 {
			b.Queue("COMMIT")
		}
		if b.Len() > 0 {
			if err := conn.SendBatch(ctx, b).Close(); err != nil {
				return err
			}
		}
		for _, r := range fresh {
			pos := at[r]
			r.res = Appended{Seq: pos[0].seq(), Mid: r.append.Mid, TS: r.append.TS}
			if pos[1].sc != nil {
				r.res.SenderSeq = pos[1].seq()
			}
		}
		for r, l := range follows {
			r.res = l.res
			r.res.Duplicate = true
		}
		return nil
	})
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

// claimKeys begins the group's transaction and claims its keys: a key new
// or past its window is (re)created for this group; the others mark
// their append a duplicate, answered from the first append's record.
func (p *postgres) claimKeys(ctx context.Context, conn *pgxpool.Conn, keyed []*request, now, cutoff int64, dup map[*request]bool) error {
	slices.SortFunc(keyed, func(a, b *request) int {
		return cmp.Or(strings.Compare(a.append.From, b.append.From), strings.Compare(a.append.Key, b.append.Key))
	})
	var from, key, mid []string
	var ts []int64
	for _, r := range keyed {
		from, key, mid, ts = append(from, r.append.From), append(key, r.append.Key), append(mid, r.append.Mid), append(ts, r.append.TS)
	}
	won := make(map[keyID]bool, len(keyed))
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(`INSERT INTO shard_keys AS k (from_user, key, created_at, mid, ts, seq, sender_seq)
		SELECT u.from_user, u.key, $3, u.mid, u.ts, 0, 0
		FROM unnest($1::text[], $2::text[], $4::text[], $5::bigint[]) AS u(from_user, key, mid, ts)
		ORDER BY u.from_user COLLATE "C", u.key COLLATE "C"
		ON CONFLICT (from_user, key) DO UPDATE SET created_at = excluded.created_at, mid = excluded.mid,
			ts = excluded.ts, seq = 0, sender_seq = 0, status = NULL, recipients = NULL
		WHERE k.created_at <= $6
		RETURNING from_user, key`, from, key, now, mid, ts, cutoff).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var id keyID
			if err := rows.Scan(&id.from, &id.key); err != nil {
				return err
			}
			won[id] = true
		}
		return rows.Err()
	})
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return err
	}
	var dupFrom, dupKey []string
	byID := make(map[keyID]*request)
	for _, r := range keyed {
		id := keyID{r.append.From, r.append.Key}
		if !won[id] {
			dup[r] = true
			byID[id] = r
			dupFrom, dupKey = append(dupFrom, id.from), append(dupKey, id.key)
		}
	}
	if len(dupFrom) == 0 {
		return nil
	}
	rows, err := conn.Query(ctx, `SELECT k.from_user, k.key, k.mid, k.ts, k.seq, k.sender_seq, k.status, k.recipients
		FROM shard_keys k JOIN unnest($1::text[], $2::text[]) AS u(from_user, key)
		ON k.from_user = u.from_user AND k.key = u.key`, dupFrom, dupKey)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id         keyID
			rec        keyRecord
			status     *string
			recipients *int32
		)
		if err := rows.Scan(&id.from, &id.key, &rec.mid, &rec.ts, &rec.seq, &rec.senderSeq, &status, &recipients); err != nil {
			return err
		}
		if status != nil {
			rec.answer = &Answer{Status: *status}
			if recipients != nil {
				rec.answer.Recipients = int(*recipients)
			}
		}
		if r := byID[id]; r != nil {
			r.res = rec.appended()
		}
	}
	return rows.Err()
}

// commitAnswers records the answers of a group in one transaction, one
// row at a time in key order (the order appends lock keys in).
func (p *postgres) commitAnswers(ctx context.Context, reqs []*request) error {
	cutoff := p.opts.Now().UnixMilli() - p.opts.KeyWindow.Milliseconds()
	sorted := slices.Clone(reqs)
	slices.SortFunc(sorted, func(a, b *request) int {
		return cmp.Or(strings.Compare(a.append.From, b.append.From), strings.Compare(a.append.Key, b.append.Key))
	})
	b := &pgx.Batch{}
	for _, r := range sorted {
		b.Queue(`UPDATE shard_keys SET status = $3, recipients = $4 WHERE from_user = $1 AND key = $2 AND created_at > $5`,
			r.append.From, r.append.Key, r.answer.Status, int32(r.answer.Recipients), cutoff)
	}
	return p.withConn(ctx, func(conn *pgxpool.Conn) error { return conn.SendBatch(ctx, b).Close() })
}

// Phases of a retention pass: both engines expire keys first; then the
// embedded one trims each stream by age and count in one phase, PostgreSQL
// by age, then by count.
const (
	trimKeys    = 0
	trimStreams = 1 // embedded
	trimAge     = 1 // postgres
	trimCount   = 2 // postgres
	trimDone    = 3 // postgres
)

// phaseAfter is the phase that follows phase in a pass: the next one the
// options give something to do.
func (p *postgres) phaseAfter(phase int) int {
	switch {
	case phase < trimAge && p.opts.MaxAge > 0:
		return trimAge
	case phase < trimCount && p.opts.MaxPerStream > 0:
		return trimCount
	}
	return trimDone
}

// trimStep is one short transaction. It takes a transaction-scoped
// advisory lock first: while one node trims, the others skip their pass
// rather than delete the same rows.
func (p *postgres) trimStep(ctx context.Context, cur trimCursor) (removed int, next trimCursor, more bool, err error) {
	now := p.opts.Now().UnixMilli()
	err = pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		removed, next, more = 0, cur, false
		var mine bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock(`+trimLock+`)`).Scan(&mine); err != nil || !mine {
			return err // another node is trimming: this pass ends here
		}
		deleted := func(sql string, args ...any) (int, error) {
			tag, err := tx.Exec(ctx, sql, args...)
			return int(tag.RowsAffected()), err
		}
		var err error
		phaseDone := false
		switch cur.phase {
		case trimKeys:
			cutoff := now - p.opts.KeyWindow.Milliseconds()
			removed, err = deleted(`DELETE FROM shard_keys WHERE created_at <= $1 AND ctid = ANY(ARRAY(
				SELECT ctid FROM shard_keys WHERE created_at <= $1 LIMIT $2))`, cutoff, trimStep)
			phaseDone = removed < trimStep
		case trimAge:
			cutoff := now - p.opts.MaxAge.Milliseconds()
			removed, err = deleted(`DELETE FROM shard_messages WHERE ctid = ANY(ARRAY(
				SELECT ctid FROM shard_messages WHERE ts < $1 LIMIT $2))`, cutoff, trimStep)
			phaseDone = removed < trimStep
		case trimCount:
			removed, phaseDone, err = p.trimCount(ctx, tx, &next)
		}
		if phaseDone {
			next.phase = p.phaseAfter(cur.phase)
		}
		more = next.phase != trimDone
		return err
	})
	if err != nil {
		return 0, cur, false, err
	}
	return removed, next, more, nil
}

// trimCount examines up to trimStep streams after cur and removes up to
// trimStep of their messages past the cap; done when none is left.
func (p *postgres) trimCount(ctx context.Context, tx pgx.Tx, cur *trimCursor) (removed int, done bool, err error) {
	rows, err := tx.Query(ctx, `SELECT room, name, last_seq FROM shard_streams
		WHERE (room, name) > ($1, $2) ORDER BY room, name LIMIT $3`, cur.room, cur.name, trimStep)
	if err != nil {
		return 0, false, err
	}
	var (
		room  []bool
		name  []string
		bound []int64
		lastR bool
		lastN string
		seen  int
	)
	for rows.Next() {
		var last int64
		if err := rows.Scan(&lastR, &lastN, &last); err != nil {
			rows.Close()
			return 0, false, err
		}
		seen++
		if b := last - int64(p.opts.MaxPerStream); b > 0 {
			room, name, bound = append(room, lastR), append(name, lastN), append(bound, b)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, false, err
	}
	if len(room) > 0 {
		tag, err := tx.Exec(ctx, `DELETE FROM shard_messages WHERE ctid = ANY(ARRAY(
			SELECT m.ctid FROM shard_messages m
			JOIN unnest($1::boolean[], $2::text[], $3::bigint[]) AS u(room, name, bound)
			  ON m.room = u.room AND m.name = u.name AND m.seq <= u.bound
			LIMIT $4))`, room, name, bound, trimStep)
		if err != nil {
			return 0, false, err
		}
		removed = int(tag.RowsAffected())
	}
	switch {
	case removed == trimStep:
		return removed, false, nil // more may be left in these streams
	case seen == trimStep:
		cur.room, cur.name = lastR, lastN
		return removed, false, nil
	}
	return removed, true, nil
}
