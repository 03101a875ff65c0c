package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"

	"github.com/cockroachdb/pebble/v2"
)

// The embedded engine keeps everything in one Pebble database in the
// node's data directory. A single committer goroutine is its only writer:
// it numbers the messages of each stream, so offsets are dense without
// locks, and it commits every group of waiting appends in one synced batch
// (group commit).
//
// Why Pebble, not bbolt: both ran this engine (through a key-value
// interface that each implemented) on the append path,
// `go test -run '^$' -bench EmbeddedAppend -benchmem -benchtime=2s -count=3 ./store/`,
// 2 vCPUs, ext4 on a virtio disk, every
// append a 100-byte direct message with a key (2 messages, a key record and
// its expiry entry, 2 counters), each commit synced; medians of 3:
//
//	                      appends/s        p50 / p99 of one append    B/op, allocs/op
//	                      pebble   bbolt   pebble         bbolt       pebble      bbolt
//	1 appender            4170     2470    0.24 / 0.35ms  0.38 / 1.0ms 1660, 31   66400, 138
//	16, group commit      19190    8000    0.76 / 2.8ms   1.8 / 4.2ms  1210, 30   41000,  93
//	64, group commit      26220    15050   2.2 / 13ms     4.3 / 6.8ms  1250, 30   32800,  81
//	16, batch of 1        4150     2320    3.9 / 5.4ms    6.8 / 9.5ms  1800, 38   82000, 178
//	64, batch of 1        4190     2260    15 / 22ms      29 / 37ms    1920, 38   80900, 175
//
// Pebble appends one WAL record and syncs once per commit; bbolt rewrites
// the B+tree pages on the path of every key it touches (copy-on-write) and
// syncs twice (pages, then meta page), which is where its 40-80 KB per
// append go. Pebble is 1.7-2.4 times faster at every load, allocates 25-50
// times less, and deletes old offsets as cheaply as it writes new ones.
// Group commit is what makes a busy node fast: 4.2k appends/s one commit
// each, 26k/s when the appends waiting during a sync share the next one.
// bbolt's adapter was deleted after measuring: an engine that only a
// benchmark uses is code to keep up for nothing.
//
// The interface went too: it had to promise what both engines kept, so
// values were copied out and every key and value was a buffer of its own.
// The engine now calls Pebble through get, scan and update below: a batch
// copies what it is given, so keys and values are built in reused
// buffers, and a value is decoded where Pebble lends it (until the closer
// is closed or the iterator moves), with one copy for all its strings.
// That took the 1-appender row above from 31 to 6-7 allocs and from about
// 1700 to 670-700 B per append (the benchmark's own mid and key included), and a Read
// of 50 messages (BenchmarkEmbeddedRead) from 233 to 71 allocs, 22.9 to
// 13.0 KB and 53 to 19 µs.
//
// Keys (a stream's kind is 'u' for an inbox, 'r' for a room, 'g' for a
// group; ids never contain 0x00):
//
//	'm' kind name 0x00 seq(8, big endian) -> message
//	's' kind name                         -> last offset given (8, big endian)
//	'k' from 0x00 key                     -> idempotency record
//	'e' created(8, big endian) from 0x00 key -> nothing: keys by age, to expire them
//	'c' user 0x00 peer                    -> a direct conversation's read state and counts
//	'g' group                             -> the group: its version, member count, newest ts
//	'n' group 0x00 user                   -> a member: admin, since, read offset
//	'j' user 0x00 group                   -> nothing: the groups of a user
//	'p' user                              -> the user: its number of groups, last seen
//
// Values are uvarint-length-prefixed strings and varints (codec below),
// after a version byte. A database written before groups (message and
// key records of version 1, no conversation records) opens as it is:
// its messages read as before, and conversations count from the first
// message after the upgrade (history before it counts as read).
//
// What the conversation counters cost on the hot path: a direct message
// now also updates one conversation record per copy (decoded once per
// commit, like the counters), and each copy's value carries its offset in
// the other inbox and the conversation's count at it (6 more bytes).
// Measured with BenchmarkEmbeddedAppend/batched before and after, runs
// interleaved, medians of 3, on this shared 2-vCPU box (load 3 to 6,
// which moves single runs by half): 1 appender p50 203 to 233 µs, 16
// 723 to 803 µs, 64 1.8 to 2.2 ms; on tmpfs, where a sync costs nothing
// and the CPU is all that is left, 1 appender 85k to 61-72k appends/s,
// about 3 µs more per append, of which reading the conversation record
// is 5% of the append's CPU in a profile (the idempotency key's lookup,
// as before, 44%). Allocations per append are unchanged: 6.

type embedded struct {
	db       *pebble.DB
	guard    *diskGuard // refuses writes on a full disk, before Pebble would die of them
	frontend            // the Store methods
	// tx is the commit under way; only the committer goroutine uses it.
	tx txn
}

// openEmbedded opens the embedded engine in dir.
func openEmbedded(dir string, opts Options) (Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	guard := newDiskGuard(dir, opts.DiskReserve, opts.diskBallast)
	db, err := pebble.Open(dir, &pebble.Options{Logger: quietPebble{}, FS: guard.pebbleFS()})
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", dir, err)
	}
	opts.Logger.Info("message store open", "engine", "pebble", "dir", dir)
	e := &embedded{db: db, guard: guard}
	e.tx = newTxn(e)
	e.start(e, 1, opts)
	return e, nil
}

// quietPebble keeps Pebble's routine messages out of the node's log.
type quietPebble struct{}

func (quietPebble) Infof(string, ...any)  {}
func (quietPebble) Errorf(string, ...any) {}
func (quietPebble) Fatalf(format string, args ...any) {
	pebble.DefaultLogger.Fatalf(format, args...)
}

// get calls decode with k's value in r, and says whether k was there. The
// value is Pebble's, valid only until decode returns.
func get(r pebble.Reader, k []byte, decode func(v []byte) error) (bool, error) {
	v, closer, err := r.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	err = decode(v)
	return true, errors.Join(err, closer.Close())
}

// scan calls fn with each key of r in [lo, hi), in order, and its value,
// until fn returns false or an error. k and v are Pebble's, valid only
// during fn.
func scan(r pebble.Reader, lo, hi []byte, fn func(k, v []byte) (bool, error)) error {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	for valid := it.First(); valid; valid = it.Next() {
		v, err := it.ValueAndErr()
		more := false
		if err == nil {
			more, err = fn(it.Key(), v)
		}
		if err != nil || !more {
			return errors.Join(err, it.Close())
		}
	}
	return it.Close() // with the error that ended the loop, if one did
}

// prefixEnd is the upper bound of the keys that start with p, a prefix
// that ends in 0x00 (ids never hold 0x00, so 0x01 in its place bounds
// them).
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	end[len(end)-1] = 1
	return end
}

// update runs fn on a new batch and commits the batch durably (synced)
// unless fn fails; an empty batch costs no write and no sync. Only the
// committer goroutine calls it: fn reads e.db, which nothing else changes
// meanwhile.
func (e *embedded) update(fn func(*pebble.Batch) error) error {
	b := e.db.NewBatch()
	defer b.Close()
	if err := fn(b); err != nil {
		return err
	}
	return b.Commit(pebble.Sync)
}

func (e *embedded) read(_ context.Context, s Stream, after int64, limit int) ([]Message, int64, bool, error) {
	return readStream(e.db, s, after, limit)
}

// readStream reads the counter and the messages through one iterator,
// whose view is fixed when it is made, so that last and the messages
// agree (a snapshot would cost two more turns of Pebble's main lock per
// read).
func readStream(r pebble.Reader, s Stream, after int64, limit int) (msgs []Message, last int64, more bool, err error) {
	ck := counterKey(nil, s)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: ck, UpperBound: append(ck[:len(ck):len(ck)], 0)})
	if err != nil {
		return nil, 0, false, err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	if it.First() {
		v, verr := it.ValueAndErr()
		if verr != nil {
			return nil, 0, false, verr
		}
		if last, err = decodeCounter(v); err != nil {
			return nil, 0, false, err
		}
	}
	if after >= last {
		return nil, last, false, nil
	}
	msgs = make([]Message, 0, min(int64(limit), last-after))
	it.SetBounds(msgKey(nil, s, after+1), msgKey(nil, s, math.MaxInt64))
	for valid := it.First(); valid; valid = it.Next() {
		if len(msgs) == limit {
			return msgs, last, true, nil
		}
		v, verr := it.ValueAndErr()
		if verr != nil {
			return msgs, last, false, verr
		}
		k := it.Key()
		m := Message{Stream: s, Seq: int64(binary.BigEndian.Uint64(k[len(k)-8:]))}
		if _, _, err = decodeMessage(v, &m); err != nil {
			return msgs, last, false, err
		}
		msgs = append(msgs, m)
	}
	return msgs, last, false, nil
}

func (e *embedded) close() error { return e.db.Close() }

// probe checks the disk as a commit would, so that Health turns when the
// disk fills or empties without a write.
func (e *embedded) probe(context.Context) error { return e.guard.check() }

// trimStep queues the step: the committer goroutine, the only writer, runs
// it between two groups (runTrimStep).
func (e *embedded) trimStep(ctx context.Context, cur trimCursor) (int, trimCursor, bool, error) {
	r := &request{op: opTrim, trim: cur}
	if err := e.c.do(ctx, r); err != nil {
		return 0, cur, false, err
	}
	return r.removed, r.trim, r.more, nil
}

// commit runs on the committer goroutine: one transaction for the
// appends, answers, read marks and last-seen times of batch, one of its
// own for each trim step and each membership change (rare, and each
// reads much of its group).
func (e *embedded) commit(batch []*request) {
	if err := e.guard.check(); err != nil {
		e.health.set(err)
		err = fmt.Errorf("store commit: %w", err)
		for _, r := range batch {
			r.err = err
		}
		return
	}
	start := 0
	for i, r := range batch {
		switch r.op {
		case opTrim:
			e.commitGroup(batch[start:i])
			r.removed, r.trim, r.more, r.err = e.runTrimStep(r.trim)
		case opChange:
			e.commitGroup(batch[start:i])
			r.changed, r.err = e.runChange(r.change)
		default:
			continue
		}
		start = i + 1
	}
	e.commitGroup(batch[start:])
}

func (e *embedded) commitGroup(group []*request) {
	if len(group) == 0 {
		return
	}
	err := e.update(func(b *pebble.Batch) error { return e.writeGroup(b, group) })
	if err == nil {
		e.health.set(nil)
	} else {
		err = fmt.Errorf("store commit: %w", err)
		for _, r := range group {
			r.res, r.marked, r.err = Appended{}, ReadMarked{}, err
		}
	}
}

// writeGroup writes the requests of group into b. The read marks go
// first: each names offsets its reader has seen, so committed ones, and
// the messages a read mark's scan meets must be in the database (a batch
// is not read back).
func (e *embedded) writeGroup(b *pebble.Batch, group []*request) error {
	t := e.begin(b)
	defer t.end()
	for _, r := range group {
		if r.op == opRead {
			if err := t.setRead(r); err != nil {
				return err
			}
		}
	}
	for _, r := range group {
		var err error
		switch r.op {
		case opAppend:
			err = t.append(r)
		case opAnswer:
			err = t.answer(r)
		case opSeen:
			err = t.seen(r.append.From, r.append.TS)
		}
		if err != nil {
			return err
		}
	}
	return t.flush()
}

// txn is one transaction on the committer goroutine: its batch, and the
// records it has read and changed, decoded once each (a batch is not read
// back, and a busy commit touches one counter or conversation many
// times). Its maps are kept from one commit to the next, emptied.
type txn struct {
	e      *embedded
	b      *pebble.Batch
	now    int64 // ms, by Options.Now
	cutoff int64 // a key created at or before cutoff has expired

	lasts   map[Stream]counter
	keys    map[keyID]keyState
	convs   map[convID]convState
	groups  map[string]groupState
	members map[memberID]memberState
	users   map[string]userState

	// key and val are where keys and values are built (Pebble copies what
	// it is given).
	key, val []byte
}

type counter struct {
	last  int64
	dirty bool
}

// keyState is an idempotency record as a group sees it.
type keyState struct {
	rec   keyRecord
	dirty bool
	fresh bool // created by this group: index it by age
}

func newTxn(e *embedded) txn {
	return txn{
		e: e, lasts: make(map[Stream]counter), keys: make(map[keyID]keyState),
		convs: make(map[convID]convState), groups: make(map[string]groupState),
		members: make(map[memberID]memberState), users: make(map[string]userState),
		key: make([]byte, 0, 160), val: make([]byte, 0, 160),
	}
}

// begin starts a transaction writing into b.
func (e *embedded) begin(b *pebble.Batch) *txn {
	t := &e.tx
	t.b = b
	t.now = e.opts.Now().UnixMilli()
	t.cutoff = t.now - e.opts.KeyWindow.Milliseconds()
	return t
}

// end forgets what the transaction held, committed or not.
func (t *txn) end() {
	t.b = nil
	clear(t.lasts)
	clear(t.keys)
	clear(t.convs)
	clear(t.groups)
	clear(t.members)
	clear(t.users)
}

// last is s's newest offset.
func (t *txn) last(s Stream) (int64, error) {
	c, ok := t.lasts[s]
	if !ok {
		_, err := get(t.e.db, counterKey(t.key[:0], s), func(v []byte) (err error) {
			c.last, err = decodeCounter(v)
			return err
		})
		if err != nil {
			return 0, fmt.Errorf("counter %s: %w", s, err)
		}
		t.lasts[s] = c
	}
	return c.last, nil
}

// next gives s's next offset.
func (t *txn) next(s Stream) (int64, error) {
	last, err := t.last(s)
	if err != nil {
		return 0, err
	}
	last++
	t.lasts[s] = counter{last, true}
	return last, nil
}

// load sets *v to the record id names: from the transaction's cache,
// else read at key() and decoded by decode (into *v; the zero record if
// it is absent), then cached. (decode is the caller's, not a method
// called here on a type parameter: that would move *v to the heap.)
func load[K comparable, V any](t *txn, cache map[K]V, id K, v *V, key func() []byte, decode func([]byte) error) error {
	if c, ok := cache[id]; ok {
		*v = c
		return nil
	}
	if _, err := get(t.e.db, key(), decode); err != nil {
		return err
	}
	cache[id] = *v
	return nil
}

// setMessage writes m at seq in s: peer is its offset in the other
// inbox, count the conversation's count at it (direct messages).
func (t *txn) setMessage(s Stream, seq int64, m *Message, peer, count int64) error {
	t.val = appendMessage(t.val[:0], m, peer, count)
	return t.b.Set(msgKey(t.key[:0], s, seq), t.val, nil)
}

// idempotency is the record of a key, if known and within its window.
func (t *txn) idempotency(id keyID) (keyState, bool, error) {
	if ks, ok := t.keys[id]; ok {
		return ks, true, nil
	}
	var ks keyState
	known, err := get(t.e.db, keyKey(t.key[:0], id.from, id.key), func(v []byte) error { return decodeKeyRecord(v, &ks.rec) })
	if err != nil {
		return ks, false, fmt.Errorf("key %s/%s: %w", id.from, id.key, err)
	}
	return ks, known && ks.rec.created > t.cutoff, nil
}

func (t *txn) answer(r *request) error {
	id := keyID{r.append.From, r.append.Key}
	ks, known, err := t.idempotency(id)
	if err != nil || !known {
		return err // unknown or expired: nothing to answer for
	}
	ans := r.answer
	ks.rec.answer, ks.dirty = &ans, true
	t.keys[id] = ks
	return nil
}

// append numbers r's message in each stream it goes to and writes it. A
// refused group message (not a member) sets r.err and writes nothing.
func (t *txn) append(r *request) error {
	a := &r.append
	id := keyID{a.From, a.Key}
	if a.Key != "" {
		ks, known, err := t.idempotency(id)
		if err != nil {
			return err
		}
		if known {
			r.res = ks.rec.appended()
			t.keys[id] = ks
			return nil
		}
	}
	var err error
	switch {
	case a.Group != "":
		err = t.appendGroup(r)
	case a.Room != "":
		var seq int64
		if seq, err = t.next(RoomStream(a.Room)); err == nil {
			m := Message{Mid: a.Mid, From: a.From, Room: a.Room, Body: a.Body, TS: a.TS}
			err = t.setMessage(RoomStream(a.Room), seq, &m, 0, 0)
			r.res = Appended{Seq: seq, Mid: a.Mid, TS: a.TS}
		}
	default:
		err = t.appendDirect(r)
	}
	if err != nil || r.err != nil || a.Key == "" {
		return err
	}
	t.keys[id] = keyState{
		rec:   keyRecord{created: t.now, ts: a.TS, seq: r.res.Seq, senderSeq: r.res.SenderSeq, version: r.res.Version, mid: a.Mid},
		dirty: true, fresh: true,
	}
	return nil
}

// appendDirect writes a direct message to both inboxes, each copy with
// the other's offset and its conversation's count, and brings both
// conversations up to it: the recipient's counts one more from the
// sender, the sender's is read up to its copy (sending is reading).
func (t *txn) appendDirect(r *request) error {
	a := &r.append
	m := Message{Mid: a.Mid, From: a.From, To: a.To, Body: a.Body, TS: a.TS}
	seq, err := t.next(Inbox(a.To))
	if err != nil {
		return err
	}
	var sseq int64
	copy := a.From != a.To && !a.NoSenderCopy
	if copy {
		if sseq, err = t.next(Inbox(a.From)); err != nil {
			return err
		}
	}
	rc, err := t.conv(a.To, a.From)
	if err != nil {
		return err
	}
	peer := sseq // 0: the sender kept no copy
	if a.From == a.To {
		peer = seq
	}
	rc.last, rc.ts = seq, a.TS
	if peer > 0 {
		rc.lastPeer = peer
	}
	if a.From != a.To {
		rc.count++
	} else {
		rc.read, rc.readPeer, rc.readCount = seq, peer, rc.count
	}
	t.putConv(a.To, a.From, rc)
	if err := t.setMessage(Inbox(a.To), seq, &m, peer, rc.count); err != nil {
		return err
	}
	if copy {
		sc, err := t.conv(a.From, a.To)
		if err != nil {
			return err
		}
		sc.last, sc.lastPeer, sc.ts = sseq, seq, a.TS
		sc.read, sc.readPeer, sc.readCount = sseq, seq, sc.count
		t.putConv(a.From, a.To, sc)
		if err := t.setMessage(Inbox(a.From), sseq, &m, seq, sc.count); err != nil {
			return err
		}
	}
	r.res = Appended{Seq: seq, SenderSeq: sseq, Mid: a.Mid, TS: a.TS}
	return nil
}

// appendGroup writes a group message if its sender is a member, with the
// group's version, and moves the sender's read offset to it.
func (t *txn) appendGroup(r *request) error {
	a := &r.append
	g, mem, refused, err := t.membership("send to group", a.Group, a.From)
	if err != nil || refused != nil {
		r.err = refused
		return err
	}
	s := GroupStream(a.Group)
	seq, err := t.next(s)
	if err != nil {
		return err
	}
	m := Message{Mid: a.Mid, From: a.From, Group: a.Group, Body: a.Body, TS: a.TS}
	if err := t.setMessage(s, seq, &m, 0, 0); err != nil {
		return err
	}
	g.lastTS = a.TS
	t.putGroup(a.Group, g)
	mem.read = seq
	t.putMember(a.Group, a.From, mem)
	r.res = Appended{Seq: seq, Version: g.version, Mid: a.Mid, TS: a.TS}
	return nil
}

// notMember is the error for user, not a member of group: ErrNotMember,
// or ErrNoGroup when the group does not exist.
func notMember(what, group, user string, exists bool) error {
	if !exists {
		return fmt.Errorf("%s %q: %w", what, group, ErrNoGroup)
	}
	return fmt.Errorf("%s %q: %s: %w", what, group, user, ErrNotMember)
}

// flush writes every record the transaction changed into its batch.
func (t *txn) flush() error {
	b, key := t.b, t.key
	for s, c := range t.lasts {
		if c.dirty {
			if err := b.Set(counterKey(key[:0], s), binary.BigEndian.AppendUint64(t.val[:0], uint64(c.last)), nil); err != nil {
				return err
			}
		}
	}
	for id, ks := range t.keys {
		if !ks.dirty {
			continue
		}
		if err := b.Set(keyKey(key[:0], id.from, id.key), appendKeyRecord(t.val[:0], &ks.rec), nil); err != nil {
			return err
		}
		if ks.fresh {
			if err := b.Set(expiryKey(key[:0], ks.rec.created, id.from, id.key), nil, nil); err != nil {
				return err
			}
		}
	}
	for id, c := range t.convs {
		if c.dirty {
			if err := b.Set(convKey(key[:0], id.user, id.peer), c.appendTo(t.val[:0]), nil); err != nil {
				return err
			}
		}
	}
	for name, g := range t.groups {
		if err := putOrDelete(b, g.dirty, g.exists, groupKey(key[:0], name), func() []byte { return g.appendTo(t.val[:0]) }); err != nil {
			return err
		}
	}
	for id, m := range t.members {
		if err := putOrDelete(b, m.dirty, m.exists, memberKey(key[:0], id.group, id.user), func() []byte { return m.appendTo(t.val[:0]) }); err != nil {
			return err
		}
	}
	for name, u := range t.users {
		if u.dirty {
			if err := b.Set(userKey(key[:0], name), u.appendTo(t.val[:0]), nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// putOrDelete writes a changed record that exists, deletes one that no
// longer does.
func putOrDelete(b *pebble.Batch, dirty, exists bool, k []byte, value func() []byte) error {
	switch {
	case !dirty:
		return nil
	case exists:
		return b.Set(k, value(), nil)
	}
	return b.Delete(k, nil)
}

// trimCursor is where a retention pass stands between steps.
type trimCursor struct {
	phase int // engine's: embedded trimKeys then trimStreams; postgres see trimKeys

	after []byte     // embedded streams phase: the last counter key done
	kind  StreamKind // postgres count phase: the last stream done
	name  string
}

// runTrimStep does one bounded step of a retention pass in its own
// transaction: expire up to trimStep idempotency keys, or remove up to
// trimStep messages from the streams after the cursor.
func (e *embedded) runTrimStep(cur trimCursor) (removed int, next trimCursor, more bool, err error) {
	next = cur
	err = e.update(func(b *pebble.Batch) error {
		t := e.begin(b)
		defer t.end()
		if next.phase == trimKeys {
			var recKey []byte
			err := scan(e.db, []byte{'e'}, []byte{'f'}, func(k, _ []byte) (bool, error) {
				if len(k) < 9 {
					return false, nil
				}
				created := int64(binary.BigEndian.Uint64(k[1:9]))
				if created > t.cutoff {
					return false, nil
				}
				if removed == trimStep {
					more = true
					return false, nil
				}
				removed++
				if err := b.Delete(k, nil); err != nil {
					return false, err
				}
				// The record goes with it unless an append since made it
				// anew (with an expiry entry of its own).
				recKey = append(append(recKey[:0], 'k'), k[9:]...)
				stale := false
				_, err := get(e.db, recKey, func(v []byte) error {
					c, err := firstField(v)
					stale = err == nil && c == created
					return nil
				})
				if err == nil && stale {
					err = b.Delete(recKey, nil)
				}
				return true, err
			})
			if err != nil || more {
				return err
			}
			next = trimCursor{phase: trimStreams}
		}
		if e.opts.MaxPerStream <= 0 && e.opts.MaxAge <= 0 {
			return nil // nothing but keys to remove
		}
		if err := t.trimStreams(&next, &removed, &more); err != nil {
			return err
		}
		return t.flush()
	})
	if err != nil {
		return 0, cur, false, err
	}
	return removed, next, more, nil
}

// trimStreams removes, from the streams after cur, the messages past the
// cap or older than the age limit, until removed reaches trimStep; and
// keeps the unread counts right: a removed message is no longer unread.
func (t *txn) trimStreams(cur *trimCursor, removed *int, more *bool) error {
	opts := t.e.opts
	ageCutoff := int64(math.MinInt64)
	if opts.MaxAge > 0 {
		ageCutoff = t.now - opts.MaxAge.Milliseconds()
	}
	lo := []byte{'s'}
	if cur.after != nil {
		lo = append(bytes.Clone(cur.after), 0)
	}
	seen := 0
	return scan(t.e.db, lo, []byte{'t'}, func(ck, v []byte) (bool, error) {
		if seen == trimStep {
			*more = true
			return false, nil
		}
		seen++
		last, err := decodeCounter(v)
		if err != nil {
			return false, err
		}
		bound := int64(0) // offsets up to bound go whatever their age
		if opts.MaxPerStream > 0 {
			bound = last - int64(opts.MaxPerStream)
		}
		kind, name := ck[1], string(ck[2:])
		// The stream's messages: 'm' kind name 0x00 seq.
		first := append(append([]byte{'m'}, ck[1:]...), 0)
		full := false
		err = scan(t.e.db, first, prefixEnd(first), func(k, v []byte) (bool, error) {
			if *removed == trimStep {
				full = true
				return false, nil
			}
			seq := int64(binary.BigEndian.Uint64(k[len(k)-8:]))
			if seq > bound {
				ts, err := firstField(v)
				if err != nil || ts >= ageCutoff {
					return false, err
				}
			}
			*removed++
			if err := t.unreadGone(kind, name, seq, v); err != nil {
				return false, err
			}
			return true, t.b.Delete(k, nil)
		})
		if err != nil || full {
			*more = full
			return false, err
		}
		cur.after = bytes.Clone(ck)
		return true, nil
	})
}

// unreadGone takes a message that retention removes out of the unread
// counts: in an inbox, its conversation's read count rises to the
// message's count if it was unread; in a group, the stream's removed
// offsets rise to it.
func (t *txn) unreadGone(kind byte, name string, seq int64, v []byte) error {
	switch kind {
	case 'u':
		var m Message
		_, count, err := decodeMessage(v, &m)
		if err != nil {
			return err
		}
		peer := m.From
		if peer == name {
			peer = m.To
		}
		c, err := t.conv(name, peer)
		if err != nil || seq <= c.read || count <= c.readCount {
			return err
		}
		c.readCount = count
		t.putConv(name, peer, c)
	case 'g':
		g, err := t.group(name)
		if err != nil || !g.exists || seq <= g.through {
			return err
		}
		g.through = seq
		t.putGroup(name, g)
	}
	return nil
}

// Keys and values.

func streamKind(s Stream) byte {
	switch s.Kind {
	case KindRoom:
		return 'r'
	case KindGroup:
		return 'g'
	}
	return 'u'
}

func counterKey(b []byte, s Stream) []byte {
	return append(append(b, 's', streamKind(s)), s.Name...)
}

func msgKey(b []byte, s Stream, seq int64) []byte {
	b = append(append(b, 'm', streamKind(s)), s.Name...)
	return binary.BigEndian.AppendUint64(append(b, 0), uint64(seq))
}

// pairKey is tag a 0x00 b: the key of a record that two ids name.
func pairKey(buf []byte, tag byte, a, b string) []byte {
	return append(append(append(append(buf, tag), a...), 0), b...)
}

func keyKey(b []byte, from, key string) []byte { return pairKey(b, 'k', from, key) }

func expiryKey(b []byte, created int64, from, key string) []byte {
	b = binary.BigEndian.AppendUint64(append(b, 'e'), uint64(created))
	return append(append(append(b, from...), 0), key...)
}

func appendStr(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

var errCorrupt = errors.New("corrupt record")

// counter value: the last offset given.
func decodeCounter(v []byte) (int64, error) {
	if len(v) != 8 {
		return 0, errCorrupt
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

// reader reads a value: its version byte, then its fields. The strings it
// reads share one copy of the value, made at the first: Pebble's value is
// valid only briefly, and one copy costs less than one a field.
type reader struct {
	v, b    []byte // the value, and what is left of it to read
	s       string // v, copied once a string is read
	version byte
	err     error
}

// newReader reads a value of version 1 to newest.
func newReader(v []byte, newest byte) reader {
	if len(v) == 0 || v[0] < 1 || v[0] > newest {
		return reader{err: errCorrupt}
	}
	return reader{v: v, b: v[1:], version: v[0]}
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err, r.b = errCorrupt, nil
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) str() string {
	n, k := binary.Uvarint(r.b)
	if k <= 0 || uint64(len(r.b)-k) < n {
		r.err, r.b = errCorrupt, nil
		return ""
	}
	if r.s == "" {
		r.s = string(r.v)
	}
	at := len(r.v) - len(r.b) + k
	r.b = r.b[k+int(n):]
	return r.s[at : at+int(n)]
}

// appendVarints is a record of varints only: version 1, then ns.
func appendVarints(b []byte, ns ...int64) []byte {
	b = append(b, 1)
	for _, n := range ns {
		b = binary.AppendVarint(b, n)
	}
	return b
}

// decodeVarints reads a record of appendVarints into ns.
func decodeVarints(v []byte, ns ...*int64) error {
	r := newReader(v, 1)
	for _, n := range ns {
		*n = r.varint()
	}
	return r.err
}

// message value: version 2, ts, mid, from, to, room, body, group, event,
// user, admin, then for a direct message its offset in the other inbox
// and its conversation's count (see txn.appendDirect). Version 1 (before
// groups) ends after body.
func appendMessage(b []byte, m *Message, peer, count int64) []byte {
	b = binary.AppendVarint(append(b, 2), m.TS)
	for _, s := range [...]string{m.Mid, m.From, m.To, m.Room, m.Body, m.Group, m.Event, m.User, m.Admin} {
		b = appendStr(b, s)
	}
	return binary.AppendVarint(binary.AppendVarint(b, peer), count)
}

func decodeMessage(v []byte, m *Message) (peer, count int64, err error) {
	r := newReader(v, 2)
	m.TS = r.varint()
	m.Mid, m.From, m.To, m.Room, m.Body = r.str(), r.str(), r.str(), r.str(), r.str()
	if r.version >= 2 {
		m.Group, m.Event, m.User, m.Admin = r.str(), r.str(), r.str(), r.str()
		peer, count = r.varint(), r.varint()
	}
	return peer, count, r.err
}

// firstField reads the first field of a message (its ts) or of a key record
// (its created) alone: all that retention needs of either.
func firstField(v []byte) (int64, error) {
	r := newReader(v, 2)
	ts := r.varint()
	return ts, r.err
}

// keyRecord is the first answer to an idempotency key.
type keyRecord struct {
	created        int64 // ms since the epoch, by Options.Now
	ts             int64
	seq, senderSeq int64
	version        int64 // a group message's Appended.Version
	mid            string
	answer         *Answer
}

func (k *keyRecord) appended() Appended {
	a := Appended{Duplicate: true, Seq: k.seq, SenderSeq: k.senderSeq, Version: k.version, Mid: k.mid, TS: k.ts}
	if k.answer != nil {
		ans := *k.answer
		a.Answer = &ans
	}
	return a
}

// key record value: version 2, created, ts, seq, sender seq, group
// version, mid, then optionally status and recipients. Version 1 has no
// group version.
func appendKeyRecord(b []byte, k *keyRecord) []byte {
	b = append(b, 2)
	for _, n := range [...]int64{k.created, k.ts, k.seq, k.senderSeq, k.version} {
		b = binary.AppendVarint(b, n)
	}
	b = appendStr(b, k.mid)
	if k.answer != nil {
		b = appendStr(b, k.answer.Status)
		b = binary.AppendVarint(b, int64(k.answer.Recipients))
	}
	return b
}

func decodeKeyRecord(v []byte, k *keyRecord) error {
	r := newReader(v, 2)
	k.created, k.ts, k.seq, k.senderSeq = r.varint(), r.varint(), r.varint(), r.varint()
	if r.version >= 2 {
		k.version = r.varint()
	}
	k.mid = r.str()
	if r.err == nil && len(r.b) > 0 {
		k.answer = &Answer{Status: r.str(), Recipients: int(r.varint())}
	}
	return r.err
}
