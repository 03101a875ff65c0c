package store

import (
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// boltKV is the embedded engine on bbolt: one file, one bucket, a B+tree
// with copy-on-write pages; a write transaction syncs on commit.
type boltKV struct{ db *bolt.DB }

var boltBucket = []byte("shard")

func openBolt(dir string) (*boltKV, error) {
	// Timeout: a second process on the same directory fails instead of
	// waiting forever for the file lock.
	db, err := bolt.Open(filepath.Join(dir, "shard.db"), 0o600, &bolt.Options{Timeout: time.Second, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, err
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(boltBucket)
		return err
	}); err != nil {
		db.Close()
		return nil, err
	}
	return &boltKV{db: db}, nil
}

type boltTx struct{ b *bolt.Bucket }

func (t boltTx) get(k []byte) ([]byte, error) { return t.b.Get(k), nil }

func (t boltTx) scan(lo, hi []byte, fn func(k, v []byte) bool) error {
	c := t.b.Cursor()
	for k, v := c.Seek(lo); k != nil && string(k) < string(hi); k, v = c.Next() {
		if !fn(k, v) {
			break
		}
	}
	return nil
}

func (t boltTx) set(k, v []byte) error {
	if v == nil {
		v = []byte{}
	}
	return t.b.Put(k, v)
}

func (t boltTx) del(k []byte) error { return t.b.Delete(k) }

func (s *boltKV) update(fn func(kvWriter) error) error {
	return s.db.Update(func(tx *bolt.Tx) error { return fn(boltTx{tx.Bucket(boltBucket)}) })
}

func (s *boltKV) view(fn func(kvReader) error) error {
	return s.db.View(func(tx *bolt.Tx) error { return fn(boltTx{tx.Bucket(boltBucket)}) })
}

func (s *boltKV) close() error { return s.db.Close() }
