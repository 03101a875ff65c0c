package store

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// diskGuard keeps the embedded engine, and so the node, alive on a full
// disk. Pebble takes a failed write of its WAL or MANIFEST for fatal and
// ends the process (pebble v2.1.7 db.go "pebble: fatal commit error",
// version_set.go: os.Exit(1) through its logger's Fatalf): the first
// append on a full tmpfs did exactly that. So no write may reach Pebble
// without room for it:
//
//   - Before each commit the guard reads the disk's free space (one
//     statfs, at most every measureEvery while there is room): below
//     Options.DiskReserve, the commit is refused with ErrFull and nothing
//     reaches Pebble.
//   - A ballast file of half the reserve, made at open, covers what gets
//     past that check: the disk filled by something else between the
//     statfs and the write, or by a flush or compaction of Pebble's own.
//     Pebble's file system is wrapped with vfs.OnDiskFull, which on ENOSPC
//     calls release (the ballast goes) and retries the write once; the
//     guard then refuses writes as above.
//   - Writes resume once the disk has the reserve free again, with an
//     eighth more so that a disk at the edge does not flap, and room for
//     the ballast, which is made again first.
//
// Reads go on meanwhile; retention does not (its deletes are writes), so
// the space must come from outside: another file deleted, a larger disk.
type diskGuard struct {
	dir     string // the database's directory
	ballast string // its ballast file
	size    int64  // the ballast's size
	reserve int64  // refuse writes below this much free; < 0: never
	fs      vfs.FS // the file system the guard measures

	released atomic.Bool // release ran: the ballast is gone

	mu         sync.Mutex
	full       bool // writes are refused
	hasBallast bool
	measured   time.Time // of the last statfs
}

// measureEvery spaces the statfs of a disk with room: one costs 3-10 µs
// on the project's machine (a loaded 2-core VM), 1-4 % of a lone append,
// and in 10 ms the fastest append rate measured (26,000/s of 1 KiB) writes
// under 300 KiB of the reserve's 64 MiB.
const measureEvery = 10 * time.Millisecond

// ballastName is the ballast's file in the database's directory: Pebble
// leaves alone the files whose names are not its own.
const ballastName = "shard-ballast"

// newDiskGuard measures dir and makes its ballast, if there is room.
func newDiskGuard(dir string, reserve, size int64) *diskGuard {
	g := &diskGuard{dir: dir, ballast: filepath.Join(dir, ballastName), size: size, reserve: reserve, fs: vfs.Default}
	if fi, err := os.Stat(g.ballast); err == nil && fi.Size() == size {
		g.hasBallast = true
	}
	g.check() // an error is the state it starts in: full
	return g
}

// pebbleFS is the file system Pebble writes through: the default one, with
// the ballast released on ENOSPC.
func (g *diskGuard) pebbleFS() vfs.FS { return vfs.OnDiskFull(vfs.Default, g.release) }

// release is Pebble's ENOSPC callback: it runs inside a Pebble write, so it
// only deletes the ballast and says so.
func (g *diskGuard) release() {
	_ = os.Remove(g.ballast) // if it is gone already, nothing more can be freed
	g.released.Store(true)
}

// check says whether a commit may go to Pebble now: nil, or an error that
// wraps ErrFull.
func (g *diskGuard) check() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.released.Swap(false) {
		g.full, g.hasBallast = true, false
	}
	now := time.Now()
	if !g.full && g.hasBallast && now.Sub(g.measured) < measureEvery {
		return nil
	}
	g.measured = now
	du, err := g.fs.GetDiskUsage(g.dir)
	if err != nil {
		// Not knowing is no reason to refuse: the ballast still stands.
		return nil
	}
	need := max(g.reserve, 0)
	if g.full {
		need += need / 8
	}
	if !g.hasBallast {
		need += g.size
	}
	if free := int64(du.AvailBytes); free < need {
		g.full = true
		return fmt.Errorf("%w: %s free of %s on %s, below the %s it needs", ErrFull,
			mebibytes(free), mebibytes(int64(du.TotalBytes)), g.dir, mebibytes(need))
	}
	if !g.hasBallast {
		if err := g.makeBallast(); err != nil {
			g.full = true
			return fmt.Errorf("%w: ballast: %w", ErrFull, err)
		}
		g.hasBallast = true
	}
	g.full = false
	return nil
}

// makeBallast writes the ballast file: zeros, really allocated, synced.
func (g *diskGuard) makeBallast() error {
	f, err := os.OpenFile(g.ballast, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	zeros := make([]byte, 1<<20)
	for left := g.size; left > 0 && err == nil; left -= int64(len(zeros)) {
		_, err = f.Write(zeros[:min(left, int64(len(zeros)))])
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(g.ballast)
	}
	return err
}

func mebibytes(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
