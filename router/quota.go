package router

import (
	"errors"
	"sync"
	"time"

	"github.com/shardchat/shard/store"
)

// The store quota: how many bytes one user may have stored per second on
// this node, so that a client cannot fill the store's disk with messages to
// users who never read them. Each user has a token bucket of bytes, full at
// the start; a message that finds too few tokens is refused, rate_limited,
// and takes none. A bucket that has refilled is forgotten, so the buckets
// kept are those of users who stored in the last few seconds.

// errStoreQuota refuses a message past the quota (answer.go: rate_limited).
var errStoreQuota = errors.New("this user has stored more than this node's --store-rate bytes a second; slow down")

// storeOverhead is what a stored copy of a message costs besides its
// body: its row's other fields (ids, names, offsets, time) and their index
// entries, about 128 bytes in either engine. It makes a flood of tiny
// messages count too.
const storeOverhead = 128

// StoreBucket is the size of a user's bucket for a quota of rate bytes a
// second: ten seconds of it, and never less than what the largest message
// (a body of maxBody bytes, in two inboxes) costs, which could otherwise
// never be stored.
func StoreBucket(rate, maxBody int) int {
	return max(10*rate, 2*(maxBody+storeOverhead))
}

// storedBytes is what storing a costs: its body and overhead once per copy
// kept, two for a direct message to another user (the recipient's inbox and
// the sender's), one for a room's or group's stream or a note to oneself.
func storedBytes(a *store.Append) float64 {
	copies := 1
	if a.To != "" && a.To != a.From && !a.NoSenderCopy {
		copies = 2
	}
	return float64(copies * (len(a.Body) + storeOverhead))
}

type storeQuota struct {
	rate, burst float64 // bytes a second, and the bucket's size; rate 0: no quota
	mu          sync.Mutex
	users       map[string]*byteBucket
}

type byteBucket struct {
	tokens float64
	at     time.Time // when tokens was last brought up to date
}

func newStoreQuota(rate, burst int) *storeQuota {
	return &storeQuota{rate: float64(rate), burst: float64(burst), users: make(map[string]*byteBucket)}
}

// take spends what storing a costs its sender, or reports that the quota
// refuses it.
func (q *storeQuota) take(a *store.Append, now time.Time) bool {
	if q.rate == 0 {
		return true
	}
	cost := storedBytes(a)
	q.mu.Lock()
	defer q.mu.Unlock()
	b := q.users[a.From]
	if b == nil {
		b = &byteBucket{tokens: q.burst, at: now}
		q.users[a.From] = b
	}
	b.tokens = min(q.burst, b.tokens+now.Sub(b.at).Seconds()*q.rate)
	b.at = now
	if b.tokens < cost {
		return false
	}
	b.tokens -= cost
	return true
}

// sweep forgets the buckets that are full again: a new one starts full.
func (q *storeQuota) sweep(now time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for user, b := range q.users {
		if b.tokens+now.Sub(b.at).Seconds()*q.rate >= q.burst {
			delete(q.users, user)
		}
	}
}
