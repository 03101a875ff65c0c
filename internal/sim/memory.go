package sim

import (
	"runtime"
	"time"

	"github.com/shardchat/shard/router"
)

// Memory is what a directory key costs at its owner, in heap bytes.
type Memory struct {
	Keys         int     `json:"keys"`
	BytesPerKey  float64 `json:"bytes_per_key"` // one holder
	WatchedBytes float64 `json:"watched_bytes"` // one holder and one node caching it
}

// DirectoryMemory fills an owner's directory with keys, one holder each,
// then has a node watch each, and measures the heap after each step.
func DirectoryMemory(keys int) Memory {
	d := router.NewDirectory()
	now := time.Now()
	names := make([]router.Key, keys)
	for i := range names {
		names[i] = router.Key{Name: userName(i)} // allocated before the measurement
	}
	base := heap()
	for _, k := range names {
		d.Set(k, "node-001", "node-001-1", 1, now)
	}
	held := heap()
	for _, k := range names {
		d.Lookup(k, "node-002", now.Add(time.Minute))
	}
	watched := heap()
	runtime.KeepAlive(d)
	return Memory{Keys: keys, BytesPerKey: float64(held-base) / float64(keys),
		WatchedBytes: float64(watched-base) / float64(keys)}
}

func heap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
