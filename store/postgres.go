package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/shardchat/shard/internal/rawsys"
)

// The PostgreSQL engine: every node of a cluster opens the same database
// and appends to it at once. Each node creates or migrates the schema at
// Open, under a transaction-scoped advisory lock, so that nodes starting
// together do it once. The schema, version 2:
//
//	CREATE TABLE shard_schema (version integer NOT NULL);  -- one row
//
//	-- One row per stream: the newest offset given. An append bumps it in
//	-- the transaction that inserts the messages, so its row lock orders
//	-- the appends of every node to that stream: dense offsets, no gap
//	-- (a rolled-back append gives its offsets back), no duplicate.
//	CREATE TABLE shard_streams (
//	    kind     smallint NOT NULL,  -- 0 a user's inbox, 1 a room, 2 a group
//	    name     text     NOT NULL,  -- the user id, room or group name
//	    last_seq bigint   NOT NULL,
//	    ts       bigint   NOT NULL,  -- of the newest message
//	    trimmed  bigint   NOT NULL,  -- the newest offset retention removed (groups)
//	    PRIMARY KEY (kind, name)
//	);
//
//	-- A direct message is a row in each inbox it went to.
//	CREATE TABLE shard_messages (
//	    kind      smallint NOT NULL,
//	    name      text     NOT NULL,
//	    seq       bigint   NOT NULL,  -- its offset in (kind, name)
//	    mid       text     NOT NULL,
//	    from_user text     NOT NULL,
//	    to_user   text     NOT NULL,  -- '' unless a direct message
//	    to_room   text     NOT NULL,  -- '' unless a room message
//	    to_group  text     NOT NULL,  -- '' unless a group message or event
//	    body      text     NOT NULL,  -- '' for an event
//	    ts        bigint   NOT NULL,  -- ms since the epoch, as in the msg frame
//	    event     text     NOT NULL,  -- a group event: created, added, ...
//	    subject   text     NOT NULL,  -- the member it names
//	    admin     text     NOT NULL,  -- left: the member who became admin
//	    peer_seq  bigint   NOT NULL,  -- direct: its offset in the other inbox
//	    received  bigint   NOT NULL,  -- direct: the conversation's count at it
//	    PRIMARY KEY (kind, name, seq)
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
//	    seq        bigint  NOT NULL,  -- in the recipient's inbox, the room or group
//	    sender_seq bigint  NOT NULL,  -- in the sender's inbox; 0 for none
//	    version    bigint  NOT NULL,  -- a group message's membership version
//	    status     text,              -- the answer RecordAnswer recorded
//	    recipients integer,
//	    PRIMARY KEY (from_user, key)
//	);
//	CREATE INDEX shard_keys_created ON shard_keys (created_at);  -- expiry
//
//	-- A direct conversation as user_id sees it (see ReadState): offsets
//	-- in user_id's inbox, received counts peer's messages.
//	CREATE TABLE shard_conversations (
//	    user_id text, peer text,
//	    last_seq bigint, last_peer_seq bigint, ts bigint, received bigint,
//	    read_seq bigint, read_peer_seq bigint, read_received bigint,
//	    PRIMARY KEY (user_id, peer)
//	);
//
//	-- Groups (see Groups): version is the newest membership event's offset.
//	CREATE TABLE shard_groups (name text PRIMARY KEY, created_at bigint,
//	    version bigint, members integer);
//	CREATE TABLE shard_members (grp text, user_id text, admin boolean,
//	    since_ts bigint, since_seq bigint, read_seq bigint,
//	    PRIMARY KEY (grp, user_id));
//	CREATE INDEX shard_members_user ON shard_members (user_id);
//	CREATE TABLE shard_users (user_id text PRIMARY KEY,
//	    groups integer, last_seen bigint);  -- groups: for MaxUserGroups
//
// (All columns NOT NULL.) Version 1 had a boolean room in place of kind
// and none of the groups, conversations or users: migration 2 turns the
// boolean into the kind (rewriting both tables once, under the migration
// lock) and adds the rest, so a database of version 1 keeps its messages
// and counts conversations from the first message after it. A binary of
// version 1 refuses to open a database of version 2: upgrade every node.
//
// An append group (group commit: the appends waiting on one node) is one
// transaction in two round trips (steps 1 and 2 share one):
//
//  1. BEGIN, and INSERT the keys ... ON CONFLICT DO UPDATE (renew) WHERE
//     created_at is past the window, RETURNING those that are new: the
//     others are duplicates, whose first answer is then read (a third round
//     trip, only then). A concurrent first append of the same key makes it
//     wait for that one's commit.
//  2. With group messages: take their groups' locks shared (a membership
//     change takes its group's lock exclusive: the two exclude each other,
//     so a message is wholly before a change or after it), read their
//     versions, and check that each sender is a member then. A group's
//     lock is a transaction-scoped advisory lock, not its row's lock:
//     PostgreSQL queues advisory locks fairly (a waiting exclusive request
//     goes before later shared ones), while a row locked FOR SHARE by a
//     stream of senders, one after another, kept a removal waiting until
//     the sends stopped (measured: a removal sent after 40 of 200 racing
//     messages landed after 198).
//  3. One statement, then COMMIT: WITH s AS (INSERT the streams ... ON
//     CONFLICT DO UPDATE SET last_seq = last_seq + n RETURNING last_seq),
//     upsert the conversations of the direct messages (counts and read
//     offsets, one row per conversation and group), INSERT the messages
//     with the offsets that follow s's and the counts that follow the
//     conversations', move the group senders' read offsets, UPDATE the
//     keys. The streams' row locks are held for this server-side work and
//     the commit only, never across a client round trip.
//
// Every transaction takes its locks in one order, keys before groups'
// advisory locks before groups' rows before users before streams before
// conversations before members, each sorted by (kind, name), (user_id,
// peer) or (from_user, key) in byte order (COLLATE "C"): appends and
// changes from many nodes never deadlock. A deadlock or serialization error would retry the group
// all the same.
//
// What it costs, `go test -run '^$' -bench PostgresAppend -benchmem
// -benchtime=2s -count=3 ./store/` against PostgreSQL 15 on loopback
// (fsync and synchronous_commit on, defaults otherwise; the server and the
// benchmark share 2 vCPUs, which is what bounds the higher loads), every
// append a 100-byte direct message with a key, medians of 3 (schema 1):
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
// (Those figures predate step 3 as one statement; it was three, which
// read shard_streams again for the messages and for the keys. Run in turn
// with the three on a busy machine, `-count 6` medians, group commit: 1080
// to 1220, 3220 to 4130 and 6350 to 6960 appends/s at 1, 16, 64.)
//
// Schema 2 (the conversation upsert in the statement): schema 1's binary
// and this one in turn, medians of 3, group commit, the box shared and
// busy (load 3 to 6): 1376 and 1381 appends/s at 1 (p50 0.67 and 0.69
// ms), 4060 and 6430 at 16, 5260 and 6110 at 64: no loss that the noise
// lets one see. pgx allocates more to encode the 21 more array
// parameters: 218 to 310 allocations per append at 1 appender (9 to 18
// KB), a few µs against the round trips and the sync.
const schemaVersion = 2

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
	// 2: groups, conversations, last seen
	`ALTER TABLE shard_streams ALTER COLUMN room TYPE smallint USING room::integer::smallint;
	ALTER TABLE shard_streams RENAME COLUMN room TO kind;
	ALTER TABLE shard_streams
	    ADD COLUMN ts      bigint NOT NULL DEFAULT 0,
	    ADD COLUMN trimmed bigint NOT NULL DEFAULT 0;
	ALTER TABLE shard_messages ALTER COLUMN room TYPE smallint USING room::integer::smallint;
	ALTER TABLE shard_messages RENAME COLUMN room TO kind;
	ALTER TABLE shard_messages
	    ADD COLUMN to_group text   NOT NULL DEFAULT '',
	    ADD COLUMN event    text   NOT NULL DEFAULT '',
	    ADD COLUMN subject  text   NOT NULL DEFAULT '',
	    ADD COLUMN admin    text   NOT NULL DEFAULT '',
	    ADD COLUMN peer_seq bigint NOT NULL DEFAULT 0,
	    ADD COLUMN received bigint NOT NULL DEFAULT 0;
	ALTER TABLE shard_keys ADD COLUMN version bigint NOT NULL DEFAULT 0;
	CREATE TABLE shard_conversations (
	    user_id       text   NOT NULL,
	    peer          text   NOT NULL,
	    last_seq      bigint NOT NULL,
	    last_peer_seq bigint NOT NULL,
	    ts            bigint NOT NULL,
	    received      bigint NOT NULL,
	    read_seq      bigint NOT NULL,
	    read_peer_seq bigint NOT NULL,
	    read_received bigint NOT NULL,
	    PRIMARY KEY (user_id, peer)
	);
	CREATE TABLE shard_groups (
	    name       text    PRIMARY KEY,
	    created_at bigint  NOT NULL,
	    version    bigint  NOT NULL,
	    members    integer NOT NULL
	);
	CREATE TABLE shard_members (
	    grp       text    NOT NULL,
	    user_id   text    NOT NULL,
	    admin     boolean NOT NULL,
	    since_ts  bigint  NOT NULL,
	    since_seq bigint  NOT NULL,
	    read_seq  bigint  NOT NULL,
	    PRIMARY KEY (grp, user_id)
	);
	CREATE INDEX shard_members_user ON shard_members (user_id);
	CREATE TABLE shard_users (
	    user_id   text    PRIMARY KEY,
	    groups    integer NOT NULL DEFAULT 0,
	    last_seen bigint  NOT NULL DEFAULT 0
	);`,
}

// Advisory locks are per database: their ids name the schema too, so that
// stores in different schemas of one database (tests do that) never wait
// for each other.
const (
	migrateLock = `hashtext('shard.migrate.' || current_schema())`
	trimLock    = `hashtext('shard.trim.' || current_schema())`
)

// groupLock is the id of the advisory lock of the group that name (an
// SQL expression) names: 64 bits of a hash of it and the schema (two
// names that share one only wait for each other).
func groupLock(name string) string {
	return `hashtextextended('shard.group.' || current_schema() || '.' || ` + name + `, 0)`
}

// groupCommitters is how many groups one node commits at once.
const groupCommitters = 2

// groupTimeout bounds one group's transaction: past it its appends fail
// (and a client's retry with the same key is safe).
const groupTimeout = 10 * time.Second

type postgres struct {
	pool     *pgxpool.Pool
	frontend // the Store methods
}

func openPostgres(ctx context.Context, url string, opts Options) (Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	// The pool's sockets are read and written with raw system calls: a
	// stored message makes several round trips to the server, and through
	// net.Conn each of their reads and writes woke the runtime's monitor
	// thread when the node was idle (package rawsys).
	dial := cfg.ConnConfig.DialFunc
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return rawsys.Wrap(c), nil
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
	p := &postgres{pool: pool}
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

// messageColumns are what a Message is read from, in scanMessage's order.
const messageColumns = `seq, mid, from_user, to_user, to_room, to_group, body, ts, event, subject, admin`

func scanMessage(rows pgx.Rows, m *Message) error {
	return rows.Scan(&m.Seq, &m.Mid, &m.From, &m.To, &m.Room, &m.Group, &m.Body, &m.TS, &m.Event, &m.User, &m.Admin)
}

func (p *postgres) read(ctx context.Context, s Stream, after int64, limit int) ([]Message, int64, bool, error) {
	b := &pgx.Batch{}
	page := queueRead(b, s, after, limit, "")
	br := p.pool.SendBatch(ctx, b)
	defer br.Close()
	return page.results(br)
}

// page is a Read queued on a batch: the messages, then the last offset.
type page struct {
	s     Stream
	limit int
}

// queueRead queues on b a page of s after offset after, and its last
// offset. With member set, only a page member may read: from the event
// that added it, nothing if it is not one (the caller checks which, in
// the same snapshot).
func queueRead(b *pgx.Batch, s Stream, after int64, limit int, member string) page {
	if member == "" {
		b.Queue(`SELECT `+messageColumns+` FROM shard_messages
			WHERE kind = $1 AND name = $2 AND seq > $3 ORDER BY seq LIMIT $4`, int16(s.Kind), s.Name, after, limit+1)
	} else {
		b.Queue(`WITH m AS (SELECT since_seq FROM shard_members WHERE grp = $2 AND user_id = $5)
			SELECT `+messageColumns+` FROM shard_messages, m
			WHERE kind = $1 AND name = $2 AND seq > greatest($3, m.since_seq - 1) ORDER BY seq LIMIT $4`,
			int16(s.Kind), s.Name, after, limit+1, member)
	}
	b.Queue(`SELECT last_seq FROM shard_streams WHERE kind = $1 AND name = $2`, int16(s.Kind), s.Name)
	return page{s, limit}
}

func (pg page) results(br pgx.BatchResults) ([]Message, int64, bool, error) {
	rows, _ := br.Query()
	msgs := make([]Message, 0, min(pg.limit, 64))
	more := false
	for rows.Next() {
		if len(msgs) == pg.limit {
			more = true
			break
		}
		m := Message{Stream: pg.s}
		if err := scanMessage(rows, &m); err != nil {
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

// commit runs on a committer goroutine: batch is appends, in one
// transaction, or answers (the committer never mixes them).
func (p *postgres) commit(batch []*request) {
	work := p.commitAppends
	if batch[0].op == opAnswer {
		work = p.commitAnswers
	}
	ctx, cancel := context.WithTimeout(context.Background(), groupTimeout)
	defer cancel()
	err := retryPG(func() error { return work(ctx, batch) })
	switch {
	case err == nil:
		p.health.set(nil)
	case unreachable(err):
		err = fmt.Errorf("store commit: %w: %w", ErrUnavailable, err)
		p.health.set(err)
	default:
		err = fmt.Errorf("store commit: %w", err)
	}
	if err != nil {
		for _, r := range batch {
			r.res, r.err = Appended{}, err
		}
	}
}

// unreachable says err is the database not serving, rather than refusing
// this transaction: no answer from the server (a connection refused or
// cut, a timeout), or one of the classes connection exception (08),
// insufficient resources (53), operator intervention (57: shutting down,
// starting up, terminated) and system error (58).
func unreachable(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return true
	}
	if len(pe.Code) < 2 {
		return false
	}
	switch pe.Code[:2] {
	case "08", "53", "57", "58":
		return true
	}
	return false
}

// probe pings the database through the pool: a connection that is idle
// goes back and forth once; none, and a new one is made.
func (p *postgres) probe(ctx context.Context) error {
	if err := p.pool.Ping(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// retryPG runs f up to three times while it fails with a deadlock or a
// serialization failure: the transaction was rolled back, and may go
// through now.
func retryPG(f func() error) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = f(); err == nil || !retryablePG(err) {
			break
		}
	}
	return err
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
	ts   int64 // of its newest message in the group
	last int64 // its last_seq after the group
}

// copyAt is one copy of a new message: the k-th (from 1) the group appends
// to a stream; none when sc is nil.
type copyAt struct {
	sc *streamCount
	k  int64
}

// off is the copy's place relative to its stream's last_seq before the
// group, which the statement adds on the server.
func (c copyAt) off() int64 { return c.k - c.sc.n }

// seq is the copy's offset once the group has committed.
func (c copyAt) seq() int64 { return c.sc.last + c.off() }

// name and offOr are the copy's stream name and off for the statement,
// ” and 0 for none (no stream is named ”).
func (c copyAt) name() string {
	if c.sc == nil {
		return ""
	}
	return c.sc.s.Name
}

func (c copyAt) offOr0() int64 {
	if c.sc == nil {
		return 0
	}
	return c.off()
}

// convCount is one direct conversation's share of an append group, as
// one of its users sees it (offsets in that user's inbox).
type convCount struct {
	id       convID
	n        int64  // peer's messages the group adds
	last     copyAt // the newest copy in the user's inbox
	lastPeer copyAt // the peer's copy of the newest that has one
	ts       int64
	// read is the user's newest own copy (sending is reading), readPeer
	// its peer's copy, readN the group's n at it; none when read.sc is nil.
	read, readPeer copyAt
	readN          int64
}

// countAt is a copy's place in its conversation's count: the k-th of the
// group's n, relative to the count after the group.
type countAt struct {
	cc *convCount
	k  int64
}

func (c countAt) off() int64 { return c.k - c.cc.n }

// appendPlan is how a group's fresh appends are numbered.
type appendPlan struct {
	streams map[Stream]*streamCount
	convs   map[convID]*convCount
	at      map[*request]*placed
}

// placed is where one append's copies go: [0] the stream Seq names, [1]
// the sender's inbox; peer is each copy's other copy, count its place in
// its conversation.
type placed struct {
	pos, peer [2]copyAt
	count     [2]countAt
}

func (pl *appendPlan) stream(s Stream, ts int64) copyAt {
	sc := pl.streams[s]
	if sc == nil {
		sc = &streamCount{s: s}
		pl.streams[s] = sc
	}
	sc.n++
	sc.ts = ts
	return copyAt{sc, sc.n}
}

func (pl *appendPlan) conv(user, peer string) *convCount {
	id := convID{user, peer}
	cc := pl.convs[id]
	if cc == nil {
		cc = &convCount{id: id}
		pl.convs[id] = cc
	}
	return cc
}

// place numbers r's copies and counts them in their conversations (as
// txn.appendDirect does for the embedded engine).
func (pl *appendPlan) place(r *request) {
	a := &r.append
	first, sender, copy := a.streams()
	p := &placed{}
	p.pos[0] = pl.stream(first, a.TS)
	if copy {
		p.pos[1] = pl.stream(sender, a.TS)
	}
	pl.at[r] = p
	if a.To == "" {
		return
	}
	p.peer[0] = p.pos[1]
	if a.From == a.To {
		p.peer[0] = p.pos[0]
	}
	rc := pl.conv(a.To, a.From)
	rc.last, rc.ts = p.pos[0], a.TS
	if p.peer[0].sc != nil {
		rc.lastPeer = p.peer[0]
	}
	if a.From != a.To {
		rc.n++
	} else {
		rc.read, rc.readPeer, rc.readN = p.pos[0], p.pos[0], rc.n
	}
	p.count[0] = countAt{rc, rc.n}
	if copy {
		sc := pl.conv(a.From, a.To)
		sc.last, sc.lastPeer, sc.ts = p.pos[1], p.pos[0], a.TS
		sc.read, sc.readPeer, sc.readN = p.pos[1], p.pos[0], sc.n
		p.peer[1] = p.pos[0]
		p.count[1] = countAt{sc, sc.n}
	}
}

// appendStatement is the one statement of step 3 (see the top of this
// file). It reads shard_streams once: the upsert locks each stream's row
// (in order) and returns its last_seq after this group, and the
// conversations, the messages, the read offsets and the keys take their
// offsets from those rows. (They could not read the table again: every
// part of a statement sees the tables as they were before the statement.)
const appendStatement = `WITH s AS (
		INSERT INTO shard_streams AS t (kind, name, last_seq, ts)
		SELECT * FROM unnest($1::smallint[], $2::text[], $3::bigint[], $4::bigint[]) AS u(kind, name, n, ts)
		ORDER BY kind, name COLLATE "C"
		ON CONFLICT (kind, name) DO UPDATE SET last_seq = t.last_seq + excluded.last_seq, ts = excluded.ts
		RETURNING kind, name, last_seq
	), conv AS (
		INSERT INTO shard_conversations AS t (user_id, peer, last_seq, last_peer_seq, ts, received, read_seq, read_peer_seq, read_received)
		SELECT u.user_id, u.peer, si.last_seq + u.last_off, coalesce(sp.last_seq + u.lp_off, 0), u.ts, u.n,
			CASE WHEN u.rd THEN si.last_seq + u.rd_off ELSE 0 END,
			CASE WHEN u.rd THEN sr.last_seq + u.rp_off ELSE 0 END,
			CASE WHEN u.rd THEN u.rd_n ELSE 0 END
		FROM unnest($5::text[], $6::text[], $7::bigint[], $8::text[], $9::bigint[], $10::bigint[], $11::bigint[],
			$12::boolean[], $13::bigint[], $14::text[], $15::bigint[], $16::bigint[])
		  AS u(user_id, peer, last_off, lp_name, lp_off, ts, n, rd, rd_off, rp_name, rp_off, rd_n)
		JOIN s si ON si.kind = 0 AND si.name = u.user_id
		LEFT JOIN s sp ON sp.kind = 0 AND sp.name = u.lp_name
		LEFT JOIN s sr ON sr.kind = 0 AND sr.name = u.rp_name
		ORDER BY u.user_id COLLATE "C", u.peer COLLATE "C"
		ON CONFLICT (user_id, peer) DO UPDATE SET
			last_seq = excluded.last_seq,
			last_peer_seq = greatest(t.last_peer_seq, excluded.last_peer_seq),
			ts = excluded.ts,
			received = t.received + excluded.received,
			read_seq = greatest(t.read_seq, excluded.read_seq),
			read_peer_seq = greatest(t.read_peer_seq, excluded.read_peer_seq),
			read_received = CASE WHEN excluded.read_seq > 0
				THEN greatest(t.read_received, t.received + excluded.read_received) ELSE t.read_received END
		RETURNING user_id, peer, received
	), messages AS (
		INSERT INTO shard_messages (kind, name, seq, mid, from_user, to_user, to_room, to_group, body, ts, peer_seq, received)
		SELECT c.kind, c.name, s.last_seq + c.off, c.mid, c.from_user, c.to_user, c.to_room, c.to_group, c.body, c.ts,
			coalesce(sp.last_seq + c.peer_off, 0), coalesce(cv.received + c.count_off, 0)
		FROM unnest($17::smallint[], $18::text[], $19::bigint[], $20::text[], $21::text[], $22::text[], $23::text[],
			$24::text[], $25::text[], $26::bigint[], $27::text[], $28::bigint[], $29::text[], $30::bigint[])
		  AS c(kind, name, off, mid, from_user, to_user, to_room, to_group, body, ts, peer_name, peer_off, conv_peer, count_off)
		JOIN s ON s.kind = c.kind AND s.name = c.name
		LEFT JOIN s sp ON sp.kind = 0 AND sp.name = c.peer_name
		LEFT JOIN conv cv ON c.kind = 0 AND cv.user_id = c.name AND cv.peer = c.conv_peer
	), reads AS (
		UPDATE shard_members t SET read_seq = greatest(t.read_seq, s.last_seq + u.off)
		FROM unnest($31::text[], $32::text[], $33::bigint[]) AS u(grp, user_id, off)
		JOIN s ON s.kind = 2 AND s.name = u.grp
		WHERE t.grp = u.grp AND t.user_id = u.user_id
	), keys AS (
		UPDATE shard_keys k SET seq = s1.last_seq + u.off1, sender_seq = coalesce(s2.last_seq + u.off2, 0), version = u.version
		FROM unnest($34::text[], $35::text[], $36::smallint[], $37::text[], $38::bigint[], $39::text[], $40::bigint[], $41::bigint[])
		  AS u(from_user, key, kind1, name1, off1, name2, off2, version)
		JOIN s s1 ON s1.kind = u.kind1 AND s1.name = u.name1
		LEFT JOIN s s2 ON s2.kind = 0 AND s2.name = u.name2
		WHERE k.from_user = u.from_user AND k.key = u.key
	)
	SELECT kind, name, last_seq FROM s`

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
	var toGroups []*request
	for _, r := range reqs {
		if r.append.Group != "" && follows[r] == nil {
			toGroups = append(toGroups, r)
		}
	}
	return p.withConn(ctx, func(conn *pgxpool.Conn) error {
		// Steps 1 and 2 go in one round trip: the groups of duplicates
		// are locked and read for nothing, which costs less than a trip.
		begun := len(keyed) > 0 || len(toGroups) > 0
		b := &pgx.Batch{}
		if begun {
			b.Queue("BEGIN")
		}
		won := queueClaims(b, keyed, now, cutoff)
		versions := make(map[string]int64)
		members := queueSenderCheck(b, toGroups, versions)
		if b.Len() > 0 {
			if err := conn.SendBatch(ctx, b).Close(); err != nil {
				return err
			}
		}
		dup := make(map[*request]bool)
		if len(keyed) > 0 {
			if err := answerDuplicates(ctx, conn, keyed, won, dup); err != nil {
				return err
			}
		}
		var fresh []*request
		var unclaimFrom, unclaimKey []string
		for _, r := range reqs {
			if dup[r] || follows[r] != nil {
				continue
			}
			if a := &r.append; a.Group != "" && !members[memberID{a.Group, a.From}] {
				_, exists := versions[a.Group]
				r.err = notMember("send to group", a.Group, a.From, exists)
				if a.Key != "" { // its key was claimed for nothing
					unclaimFrom, unclaimKey = append(unclaimFrom, a.From), append(unclaimKey, a.Key)
				}
				continue
			}
			fresh = append(fresh, r)
		}
		pl := &appendPlan{streams: make(map[Stream]*streamCount), convs: make(map[convID]*convCount), at: make(map[*request]*placed)}
		for _, r := range fresh {
			pl.place(r)
		}
		b = &pgx.Batch{}
		if len(unclaimFrom) > 0 {
			b.Queue(`DELETE FROM shard_keys k USING unnest($1::text[], $2::text[]) AS u(from_user, key)
				WHERE k.from_user = u.from_user AND k.key = u.key`, unclaimFrom, unclaimKey)
		}
		if len(fresh) > 0 {
			b.Queue(appendStatement, pl.arguments(fresh, versions)...).Query(func(rows pgx.Rows) error {
				for rows.Next() {
					var kind int16
					var name string
					var last int64
					if err := rows.Scan(&kind, &name, &last); err != nil {
						return err
					}
					if sc := pl.streams[Stream{StreamKind(kind), name}]; sc != nil {
						sc.last = last
					}
				}
				return rows.Err()
			})
		}
		if begun {
			b.Queue("COMMIT")
		}
		if b.Len() > 0 {
			if err := conn.SendBatch(ctx, b).Close(); err != nil {
				return err
			}
		}
		for _, r := range fresh {
			pos := pl.at[r].pos
			r.res = Appended{Seq: pos[0].seq(), Version: versions[r.append.Group], Mid: r.append.Mid, TS: r.append.TS}
			if pos[1].sc != nil {
				r.res.SenderSeq = pos[1].seq()
			}
		}
		for r, l := range follows {
			r.res, r.err = l.res, l.err
			r.res.Duplicate = l.err == nil
		}
		return nil
	})
}

// arguments are appendStatement's for fresh, in its parameters' order.
func (pl *appendPlan) arguments(fresh []*request, versions map[string]int64) []any {
	sorted := make([]*streamCount, 0, len(pl.streams))
	for _, sc := range pl.streams {
		sorted = append(sorted, sc)
	}
	slices.SortFunc(sorted, func(a, b *streamCount) int {
		return cmp.Or(cmp.Compare(a.s.Kind, b.s.Kind), strings.Compare(a.s.Name, b.s.Name))
	})
	// Each column is made at its size: a batch is many columns, and pgx
	// allocates enough to encode each.
	nm, nk := 0, 0
	for _, r := range fresh {
		nm++
		if pl.at[r].pos[1].sc != nil {
			nm++
		}
		if r.append.Key != "" {
			nk++
		}
	}
	ns, nc := len(sorted), len(pl.convs)
	sKind, sName, sCount, sTS := col[int16](ns), col[string](ns), col[int64](ns), col[int64](ns)
	cUser, cPeer, cLastOff, cLPName, cLPOff, cTS := col[string](nc), col[string](nc), col[int64](nc), col[string](nc), col[int64](nc), col[int64](nc)
	cN, cRead, cReadOff, cRPName, cRPOff, cRN := col[int64](nc), col[bool](nc), col[int64](nc), col[string](nc), col[int64](nc), col[int64](nc)
	mKind, mName, mOff, mMid, mFrom, mTo, mToRoom := col[int16](nm), col[string](nm), col[int64](nm), col[string](nm), col[string](nm), col[string](nm), col[string](nm)
	mToGroup, mBody, mTS, mPeerName, mPeerOff, mConvPeer, mCountOff := col[string](nm), col[string](nm), col[int64](nm), col[string](nm), col[int64](nm), col[string](nm), col[int64](nm)
	var (
		rGroup, rUser []string
		rOff          []int64
	)
	kFrom, kKey, kKind1, kName1, kOff1, kName2, kOff2, kVersion := col[string](nk), col[string](nk), col[int16](nk), col[string](nk), col[int64](nk), col[string](nk), col[int64](nk), col[int64](nk)
	for _, sc := range sorted {
		sKind, sName, sCount, sTS = append(sKind, int16(sc.s.Kind)), append(sName, sc.s.Name), append(sCount, sc.n), append(sTS, sc.ts)
	}
	for _, cc := range pl.convs {
		cUser, cPeer = append(cUser, cc.id.user), append(cPeer, cc.id.peer)
		cLastOff, cLPName, cLPOff = append(cLastOff, cc.last.off()), append(cLPName, cc.lastPeer.name()), append(cLPOff, cc.lastPeer.offOr0())
		cTS, cN = append(cTS, cc.ts), append(cN, cc.n)
		cRead, cReadOff = append(cRead, cc.read.sc != nil), append(cReadOff, cc.read.offOr0())
		cRPName, cRPOff, cRN = append(cRPName, cc.readPeer.name()), append(cRPOff, cc.readPeer.offOr0()), append(cRN, cc.readN)
	}
	// The newest own message of each sender in each group: its read offset.
	groupReads := make(map[memberID]copyAt)
	for _, r := range fresh {
		a := &r.append
		at := pl.at[r]
		for i, c := range at.pos {
			if c.sc == nil {
				continue
			}
			mKind, mName, mOff = append(mKind, int16(c.sc.s.Kind)), append(mName, c.sc.s.Name), append(mOff, c.off())
			mMid, mFrom, mTo, mToRoom, mToGroup = append(mMid, a.Mid), append(mFrom, a.From), append(mTo, a.To), append(mToRoom, a.Room), append(mToGroup, a.Group)
			mBody, mTS = append(mBody, a.Body), append(mTS, a.TS)
			mPeerName, mPeerOff = append(mPeerName, at.peer[i].name()), append(mPeerOff, at.peer[i].offOr0())
			convPeer, countOff := "", int64(0)
			if cnt := at.count[i]; cnt.cc != nil {
				convPeer, countOff = cnt.cc.id.peer, cnt.off()
			}
			mConvPeer, mCountOff = append(mConvPeer, convPeer), append(mCountOff, countOff)
		}
		if a.Group != "" {
			groupReads[memberID{a.Group, a.From}] = at.pos[0]
		}
		if a.Key != "" {
			kFrom, kKey = append(kFrom, a.From), append(kKey, a.Key)
			kKind1, kName1, kOff1 = append(kKind1, int16(at.pos[0].sc.s.Kind)), append(kName1, at.pos[0].sc.s.Name), append(kOff1, at.pos[0].off())
			kName2, kOff2 = append(kName2, at.pos[1].name()), append(kOff2, at.pos[1].offOr0())
			kVersion = append(kVersion, versions[a.Group])
		}
	}
	for id, c := range groupReads {
		rGroup, rUser, rOff = append(rGroup, id.group), append(rUser, id.user), append(rOff, c.off())
	}
	return []any{
		sKind, sName, sCount, sTS,
		cUser, cPeer, cLastOff, cLPName, cLPOff, cTS, cN, cRead, cReadOff, cRPName, cRPOff, cRN,
		mKind, mName, mOff, mMid, mFrom, mTo, mToRoom, mToGroup, mBody, mTS, mPeerName, mPeerOff, mConvPeer, mCountOff,
		rGroup, rUser, rOff,
		kFrom, kKey, kKind1, kName1, kOff1, kName2, kOff2, kVersion,
	}
}

// col is an empty column of room for n values.
func col[T any](n int) []T { return make([]T, 0, n) }

// queueSenderCheck queues step 2 for the group messages reqs of an append
// group: take their groups' locks shared (in order), read their
// versions into versions, and which senders are members, which it
// returns once the batch is sent.
func queueSenderCheck(b *pgx.Batch, reqs []*request, versions map[string]int64) map[memberID]bool {
	member := make(map[memberID]bool)
	if len(reqs) == 0 {
		return member
	}
	var names, gGroup, gUser []string
	for _, r := range reqs {
		names = append(names, r.append.Group)
		gGroup, gUser = append(gGroup, r.append.Group), append(gUser, r.append.From)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	// unnest keeps names' order (sorted), and the locks are taken in it.
	b.Queue(`SELECT pg_advisory_xact_lock_shared(`+groupLock("g.name")+`) FROM unnest($1::text[]) AS g(name)`, names)
	// Statements of their own, after the locks: their snapshot has every
	// change committed before them.
	b.Queue(`SELECT name, version FROM shard_groups WHERE name = ANY($1)`, names).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var name string
			var v int64
			if err := rows.Scan(&name, &v); err != nil {
				return err
			}
			versions[name] = v
		}
		return rows.Err()
	})
	b.Queue(`SELECT m.grp, m.user_id FROM shard_members m JOIN unnest($1::text[], $2::text[]) AS u(grp, user_id)
		ON m.grp = u.grp AND m.user_id = u.user_id`, gGroup, gUser).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var id memberID
			if err := rows.Scan(&id.group, &id.user); err != nil {
				return err
			}
			member[id] = true
		}
		return rows.Err()
	})
	return member
}

// queueClaims queues the claim of keyed's keys in their transaction (step
// 1): a key new or past its window is (re)created for this group, and
// is in the set it returns once the batch is sent; the others are
// duplicates (answerDuplicates).
func queueClaims(b *pgx.Batch, keyed []*request, now, cutoff int64) map[keyID]bool {
	won := make(map[keyID]bool, len(keyed))
	if len(keyed) == 0 {
		return won
	}
	slices.SortFunc(keyed, func(a, b *request) int {
		return cmp.Or(strings.Compare(a.append.From, b.append.From), strings.Compare(a.append.Key, b.append.Key))
	})
	var from, key, mid []string
	var ts []int64
	for _, r := range keyed {
		from, key, mid, ts = append(from, r.append.From), append(key, r.append.Key), append(mid, r.append.Mid), append(ts, r.append.TS)
	}
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
	return won
}

// answerDuplicates marks dup the appends of keyed whose key was not won
// and answers each from its first append's record (a round trip, only
// when there is one).
func answerDuplicates(ctx context.Context, conn *pgxpool.Conn, keyed []*request, won map[keyID]bool, dup map[*request]bool) error {
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
	rows, err := conn.Query(ctx, `SELECT k.from_user, k.key, k.mid, k.ts, k.seq, k.sender_seq, k.version, k.status, k.recipients
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
		if err := rows.Scan(&id.from, &id.key, &rec.mid, &rec.ts, &rec.seq, &rec.senderSeq, &rec.version, &status, &recipients); err != nil {
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
		var err error
		phaseDone := false
		switch cur.phase {
		case trimKeys:
			cutoff := now - p.opts.KeyWindow.Milliseconds()
			var tag pgconn.CommandTag
			tag, err = tx.Exec(ctx, `DELETE FROM shard_keys WHERE created_at <= $1 AND ctid = ANY(ARRAY(
				SELECT ctid FROM shard_keys WHERE created_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED))`, cutoff, trimStep)
			removed = int(tag.RowsAffected())
			phaseDone = removed < trimStep
		case trimAge:
			cutoff := now - p.opts.MaxAge.Milliseconds()
			removed, err = removeMessages(ctx, tx, `DELETE FROM shard_messages WHERE ctid = ANY(ARRAY(
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
	rows, err := tx.Query(ctx, `SELECT kind, name, last_seq FROM shard_streams
		WHERE (kind, name) > ($1, $2) ORDER BY kind, name LIMIT $3`, int16(cur.kind), cur.name, trimStep)
	if err != nil {
		return 0, false, err
	}
	var (
		kind  []int16
		name  []string
		bound []int64
		lastK int16
		lastN string
		seen  int
	)
	for rows.Next() {
		var last int64
		if err := rows.Scan(&lastK, &lastN, &last); err != nil {
			rows.Close()
			return 0, false, err
		}
		seen++
		if b := last - int64(p.opts.MaxPerStream); b > 0 {
			kind, name, bound = append(kind, lastK), append(name, lastN), append(bound, b)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, false, err
	}
	if len(kind) > 0 {
		removed, err = removeMessages(ctx, tx, `DELETE FROM shard_messages WHERE ctid = ANY(ARRAY(
			SELECT m.ctid FROM shard_messages m
			JOIN unnest($1::smallint[], $2::text[], $3::bigint[]) AS u(kind, name, bound)
			  ON m.kind = u.kind AND m.name = u.name AND m.seq <= u.bound
			LIMIT $4))`, kind, name, bound, trimStep)
		if err != nil {
			return 0, false, err
		}
	}
	switch {
	case removed == trimStep:
		return removed, false, nil // more may be left in these streams
	case seen == trimStep:
		cur.kind, cur.name = StreamKind(lastK), lastN
		return removed, false, nil
	}
	return removed, true, nil
}

// removeMessages runs del, a DELETE of messages, and takes what it
// removed out of the unread counts (as the embedded txn.unreadGone
// does): a direct conversation's read count rises to its newest removed
// unread message's count, a group stream's removed offsets to its newest
// removed. The streams, then the conversations, are locked in order, as
// appends lock them.
func removeMessages(ctx context.Context, tx pgx.Tx, del string, args ...any) (int, error) {
	rows, err := tx.Query(ctx, `WITH d AS (`+del+` RETURNING kind, name, seq, from_user, to_user, received)
		SELECT kind, name, CASE WHEN kind <> 0 THEN '' WHEN from_user = name THEN to_user ELSE from_user END,
			max(seq), max(received), count(*)
		FROM d GROUP BY 1, 2, 3`, args...)
	if err != nil {
		return 0, err
	}
	var (
		removed             int
		gName, cUser, cPeer []string
		gSeq, cSeq, cCount  []int64
	)
	for rows.Next() {
		var (
			kind       int16
			name, peer string
			seq, count int64
			n          int
		)
		if err := rows.Scan(&kind, &name, &peer, &seq, &count, &n); err != nil {
			rows.Close()
			return 0, err
		}
		removed += n
		switch StreamKind(kind) {
		case KindGroup:
			gName, gSeq = append(gName, name), append(gSeq, seq)
		case KindInbox:
			cUser, cPeer, cSeq, cCount = append(cUser, name), append(cPeer, peer), append(cSeq, seq), append(cCount, count)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	b := &pgx.Batch{}
	if len(gName) > 0 {
		b.Queue(`SELECT 1 FROM shard_streams WHERE kind = 2 AND name = ANY($1) ORDER BY name COLLATE "C" FOR UPDATE`, gName)
		b.Queue(`UPDATE shard_streams t SET trimmed = greatest(t.trimmed, u.seq)
			FROM unnest($1::text[], $2::bigint[]) AS u(name, seq) WHERE t.kind = 2 AND t.name = u.name`, gName, gSeq)
	}
	if len(cUser) > 0 {
		b.Queue(`SELECT 1 FROM shard_conversations t JOIN unnest($1::text[], $2::text[]) AS u(user_id, peer)
			ON t.user_id = u.user_id AND t.peer = u.peer ORDER BY t.user_id COLLATE "C", t.peer COLLATE "C" FOR UPDATE OF t`, cUser, cPeer)
		b.Queue(`UPDATE shard_conversations t SET read_received = u.received
			FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS u(user_id, peer, seq, received)
			WHERE t.user_id = u.user_id AND t.peer = u.peer AND u.seq > t.read_seq AND u.received > t.read_received`,
			cUser, cPeer, cSeq, cCount)
	}
	if b.Len() > 0 {
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return 0, err
		}
	}
	return removed, nil
}
