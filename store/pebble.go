package store

import (
	"bytes"
	"errors"

	"github.com/cockroachdb/pebble/v2"
)

// pebbleKV is the embedded engine on Pebble: an LSM tree; a write is a
// batch appended to the write-ahead log and synced, then applied to the
// memtable.
type pebbleKV struct{ db *pebble.DB }

func openPebble(dir string) (*pebbleKV, error) {
	db, err := pebble.Open(dir, &pebble.Options{Logger: quietPebble{}})
	if err != nil {
		return nil, err
	}
	return &pebbleKV{db: db}, nil
}

type quietPebble struct{}

func (quietPebble) Infof(string, ...any)  {}
func (quietPebble) Errorf(string, ...any) {}
func (quietPebble) Fatalf(format string, args ...any) {
	pebble.DefaultLogger.Fatalf(format, args...)
}

// pebbleTx reads committed state through r (the DB, or a snapshot) and
// writes into b.
type pebbleTx struct {
	db   *pebble.DB
	snap *pebble.Snapshot
	b    *pebble.Batch
}

func (t *pebbleTx) get(k []byte) ([]byte, error) {
	var (
		v   []byte
		c   interface{ Close() error }
		err error
	)
	if t.snap != nil {
		v, c, err = t.snap.Get(k)
	} else {
		v, c, err = t.db.Get(k)
	}
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	v = bytes.Clone(v)
	if v == nil {
		v = []byte{}
	}
	return v, c.Close()
}

func (t *pebbleTx) scan(lo, hi []byte, fn func(k, v []byte) bool) error {
	o := &pebble.IterOptions{LowerBound: lo, UpperBound: hi}
	var (
		it  *pebble.Iterator
		err error
	)
	if t.snap != nil {
		it, err = t.snap.NewIter(o)
	} else {
		it, err = t.db.NewIter(o)
	}
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return err
		}
		if !fn(it.Key(), v) {
			break
		}
	}
	return errors.Join(it.Error(), it.Close())
}

func (t *pebbleTx) set(k, v []byte) error { return t.b.Set(k, v, nil) }
func (t *pebbleTx) del(k []byte) error    { return t.b.Delete(k, nil) }

func (s *pebbleKV) update(fn func(kvWriter) error) error {
	b := s.db.NewBatch()
	defer b.Close()
	if err := fn(&pebbleTx{db: s.db, b: b}); err != nil {
		return err
	}
	return b.Commit(pebble.Sync)
}

func (s *pebbleKV) view(fn func(kvReader) error) error {
	snap := s.db.NewSnapshot()
	defer snap.Close()
	return fn(&pebbleTx{snap: snap})
}

func (s *pebbleKV) close() error { return s.db.Close() }
