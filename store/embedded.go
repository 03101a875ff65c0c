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
// Keys (a stream's kind is 'u' for an inbox, 'r' for a room; ids never
// contain 0x00):
//
//	'm' kind name 0x00 seq(8, big endian) -> message
//	's' kind name                         -> last offset given (8, big endian)
//	'k' from 0x00 key                     -> idempotency record
//	'e' created(8, big endian) from 0x00 key -> nothing: keys by age, to expire them
//
// Values are uvarint-length-prefixed strings and varints (codec below).

type embedded struct {
	db       *pebble.DB
	opts     Options
	frontend // the Store methods
	// key and val are where writeGroup builds keys and values (Pebble
	// copies what it is given); only the committer goroutine uses them.
	key, val []byte
}

// openEmbedded opens the embedded engine in dir.
func openEmbedded(dir string, opts Options) (Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	db, err := pebble.Open(dir, &pebble.Options{Logger: quietPebble{}})
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", dir, err)
	}
	opts.Logger.Info("message store open", "engine", "pebble", "dir", dir)
	e := &embedded{db: db, opts: opts, key: make([]byte, 0, 160), val: make([]byte, 0, 160)}
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

// read reads the counter and the messages through one iterator, whose view
// is fixed when it is made, so that last and the messages agree (a
// snapshot would cost two more turns of Pebble's main lock per read).
func (e *embedded) read(_ context.Context, s Stream, after int64, limit int) (msgs []Message, last int64, more bool, err error) {
	ck := counterKey(nil, s)
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: ck, UpperBound: append(ck[:len(ck):len(ck)], 0)})
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
		if err = decodeMessage(v, &m); err != nil {
			return msgs, last, false, err
		}
		msgs = append(msgs, m)
	}
	return msgs, last, false, nil
}

func (e *embedded) close() error { return e.db.Close() }

// trimStep queues the step: the committer goroutine, the only writer, runs
// it between two groups (runTrimStep).
func (e *embedded) trimStep(ctx context.Context, cur trimCursor) (int, trimCursor, bool, error) {
	r := &request{op: opTrim, trim: cur}
	if err := e.c.do(ctx, r); err != nil {
		return 0, cur, false, err
	}
	return r.removed, r.trim, r.more, nil
}

// commit runs on the committer goroutine: one transaction for the appends
// and answers of batch, one of its own for each trim step.
func (e *embedded) commit(batch []*request) {
	start := 0
	for i, r := range batch {
		if r.op == opTrim {
			e.commitGroup(batch[start:i])
			r.removed, r.trim, r.more, r.err = e.runTrimStep(r.trim)
			start = i + 1
		}
	}
	e.commitGroup(batch[start:])
}

// keyState is an idempotency record as a group sees it.
type keyState struct {
	rec   keyRecord
	dirty bool
	fresh bool // created by this group: index it by age
}

func (e *embedded) commitGroup(group []*request) {
	if len(group) == 0 {
		return
	}
	err := e.update(func(b *pebble.Batch) error { return e.writeGroup(b, group) })
	if err != nil {
		err = fmt.Errorf("store commit: %w", err)
		for _, r := range group {
			r.res, r.err = Appended{}, err
		}
	}
}

// writeGroup writes the appends and answers of group into b, numbering
// each stream's messages after its counter as committed.
func (e *embedded) writeGroup(b *pebble.Batch, group []*request) error {
	now := e.opts.Now().UnixMilli()
	cutoff := now - e.opts.KeyWindow.Milliseconds() // a key created at or before cutoff has expired
	lasts := make(map[Stream]int64)
	keys := make(map[keyID]keyState)
	key, val := e.key, e.val
	defer func() { e.val = val[:0] }() // keeps the room a large message made
	next := func(s Stream) (int64, error) {
		last, ok := lasts[s]
		if !ok {
			_, err := get(e.db, counterKey(key[:0], s), func(v []byte) (err error) {
				last, err = decodeCounter(v)
				return err
			})
			if err != nil {
				return 0, fmt.Errorf("counter %s: %w", s, err)
			}
		}
		last++
		lasts[s] = last
		return last, nil
	}
	for _, r := range group {
		a := &r.append
		if a.Key != "" {
			id := keyID{a.From, a.Key}
			ks, known := keys[id]
			if !known {
				var err error
				known, err = get(e.db, keyKey(key[:0], a.From, a.Key), func(v []byte) error { return decodeKeyRecord(v, &ks.rec) })
				if err != nil {
					return fmt.Errorf("key %s/%s: %w", a.From, a.Key, err)
				}
			}
			if known && ks.rec.created > cutoff {
				if r.op == opAnswer {
					ans := r.answer
					ks.rec.answer, ks.dirty = &ans, true
				} else {
					r.res = ks.rec.appended()
				}
				keys[id] = ks
				continue
			}
		}
		if r.op == opAnswer {
			continue // unknown or expired: nothing to answer for
		}
		first, sender, copy := a.streams()
		val = appendMessage(val[:0], a)
		seq, err := next(first)
		if err != nil {
			return err
		}
		if err := b.Set(msgKey(key[:0], first, seq), val, nil); err != nil {
			return err
		}
		var sseq int64
		if copy {
			if sseq, err = next(sender); err != nil {
				return err
			}
			if err := b.Set(msgKey(key[:0], sender, sseq), val, nil); err != nil {
				return err
			}
		}
		r.res = Appended{Seq: seq, SenderSeq: sseq, Mid: a.Mid, TS: a.TS}
		if a.Key != "" {
			keys[keyID{a.From, a.Key}] = keyState{
				rec:   keyRecord{created: now, ts: a.TS, seq: seq, senderSeq: sseq, mid: a.Mid},
				dirty: true, fresh: true,
			}
		}
	}
	for s, last := range lasts {
		if err := b.Set(counterKey(key[:0], s), binary.BigEndian.AppendUint64(val[:0], uint64(last)), nil); err != nil {
			return err
		}
	}
	for id, ks := range keys {
		if !ks.dirty {
			continue
		}
		if err := b.Set(keyKey(key[:0], id.from, id.key), appendKeyRecord(val[:0], &ks.rec), nil); err != nil {
			return err
		}
		if ks.fresh {
			if err := b.Set(expiryKey(key[:0], ks.rec.created, id.from, id.key), nil, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// trimCursor is where a retention pass stands between steps.
type trimCursor struct {
	phase int // engine's: embedded trimKeys then trimStreams; postgres see trimKeys

	after []byte // embedded streams phase: the last counter key done
	room  bool   // postgres count phase: the last stream done
	name  string
}

// runTrimStep does one bounded step of a retention pass in its own
// transaction: expire up to trimStep idempotency keys, or remove up to
// trimStep messages from the streams after the cursor.
func (e *embedded) runTrimStep(cur trimCursor) (removed int, next trimCursor, more bool, err error) {
	now := e.opts.Now().UnixMilli()
	next = cur
	err = e.update(func(b *pebble.Batch) error {
		if next.phase == trimKeys {
			cutoff := now - e.opts.KeyWindow.Milliseconds()
			var recKey []byte
			err := scan(e.db, []byte{'e'}, []byte{'f'}, func(k, _ []byte) (bool, error) {
				if len(k) < 9 {
					return false, nil
				}
				created := int64(binary.BigEndian.Uint64(k[1:9]))
				if created > cutoff {
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
		return e.trimStreams(b, now, &next, &removed, &more)
	})
	if err != nil {
		return 0, cur, false, err
	}
	return removed, next, more, nil
}

// trimStreams removes, from the streams after cur, the messages past the
// cap or older than the age limit, until removed reaches trimStep.
func (e *embedded) trimStreams(b *pebble.Batch, now int64, cur *trimCursor, removed *int, more *bool) error {
	ageCutoff := int64(math.MinInt64)
	if e.opts.MaxAge > 0 {
		ageCutoff = now - e.opts.MaxAge.Milliseconds()
	}
	lo := []byte{'s'}
	if cur.after != nil {
		lo = append(bytes.Clone(cur.after), 0)
	}
	seen := 0
	return scan(e.db, lo, []byte{'t'}, func(ck, v []byte) (bool, error) {
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
		if e.opts.MaxPerStream > 0 {
			bound = last - int64(e.opts.MaxPerStream)
		}
		// The stream's messages: 'm' kind name 0x00 seq; ids never hold
		// 0x00, so 0x01 in its place bounds them.
		first := append(append([]byte{'m'}, ck[1:]...), 0)
		end := append(bytes.Clone(first[:len(first)-1]), 1)
		full := false
		err = scan(e.db, first, end, func(k, v []byte) (bool, error) {
			if *removed == trimStep {
				full = true
				return false, nil
			}
			if int64(binary.BigEndian.Uint64(k[len(k)-8:])) > bound {
				ts, err := firstField(v)
				if err != nil || ts >= ageCutoff {
					return false, err
				}
			}
			*removed++
			return true, b.Delete(k, nil)
		})
		if err != nil || full {
			*more = full
			return false, err
		}
		cur.after = bytes.Clone(ck)
		return true, nil
	})
}

// Keys and values.

func streamKind(s Stream) byte {
	if s.Room {
		return 'r'
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

func keyKey(b []byte, from, key string) []byte {
	return append(append(append(append(b, 'k'), from...), 0), key...)
}

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

// reader reads a value of version 1. The strings it reads share one copy
// of the value, made at the first: Pebble's value is valid only briefly,
// and one copy costs less than one a field.
type reader struct {
	v, b []byte // the value, and what is left of it to read
	s    string // v, copied once a string is read
	err  error
}

func newReader(v []byte) reader {
	if len(v) == 0 || v[0] != 1 {
		return reader{err: errCorrupt}
	}
	return reader{v: v, b: v[1:]}
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

// message value: version 1, ts, mid, from, to, room, body.
func appendMessage(b []byte, a *Append) []byte {
	b = binary.AppendVarint(append(b, 1), a.TS)
	for _, s := range [...]string{a.Mid, a.From, a.To, a.Room, a.Body} {
		b = appendStr(b, s)
	}
	return b
}

func decodeMessage(v []byte, m *Message) error {
	r := newReader(v)
	m.TS = r.varint()
	m.Mid, m.From, m.To, m.Room, m.Body = r.str(), r.str(), r.str(), r.str(), r.str()
	return r.err
}

// firstField reads the first field of a message (its ts) or of a key record
// (its created) alone: all that retention needs of either.
func firstField(v []byte) (int64, error) {
	r := newReader(v)
	ts := r.varint()
	return ts, r.err
}

// keyRecord is the first answer to an idempotency key.
type keyRecord struct {
	created        int64 // ms since the epoch, by Options.Now
	ts             int64
	seq, senderSeq int64
	mid            string
	answer         *Answer
}

func (k *keyRecord) appended() Appended {
	a := Appended{Duplicate: true, Seq: k.seq, SenderSeq: k.senderSeq, Mid: k.mid, TS: k.ts}
	if k.answer != nil {
		ans := *k.answer
		a.Answer = &ans
	}
	return a
}

// key record value: version 1, created, ts, seq, sender seq, mid, then
// optionally status and recipients.
func appendKeyRecord(b []byte, k *keyRecord) []byte {
	b = append(b, 1)
	for _, n := range [...]int64{k.created, k.ts, k.seq, k.senderSeq} {
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
	r := newReader(v)
	k.created, k.ts, k.seq, k.senderSeq = r.varint(), r.varint(), r.varint(), r.varint()
	k.mid = r.str()
	if r.err == nil && len(r.b) > 0 {
		k.answer = &Answer{Status: r.str(), Recipients: int(r.varint())}
	}
	return r.err
}
