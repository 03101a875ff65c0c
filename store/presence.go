package store

import (
	"context"
	"fmt"
)

// Presence keeps when each user was last seen (issue 13's last_seen): the
// time its last connection closed, kept across restarts. Online state is
// soft and lives in the router; only this outlives it.
type Presence interface {
	// SetLastSeen records that user was last seen at ms (since the epoch).
	// It only moves forward: a later call with an earlier time, such as a
	// slower node's report of an older close, changes nothing.
	SetLastSeen(ctx context.Context, user string, ms int64) error
	// LastSeen returns the last-seen time of each of users that has one
	// (at most MaxLastSeenUsers users per call).
	LastSeen(ctx context.Context, users ...string) (map[string]int64, error)
}

// MaxLastSeenUsers bounds one LastSeen: the users one watch frame may
// name (issue 13, --max-watch).
const MaxLastSeenUsers = 1000

func (f *frontend) SetLastSeen(ctx context.Context, user string, ms int64) error {
	if err := checkUser("set last seen", user); err != nil {
		return err
	}
	if err := f.acquire(); err != nil {
		return err
	}
	defer f.mu.RUnlock()
	return f.e.setLastSeen(ctx, user, ms)
}

func (f *frontend) LastSeen(ctx context.Context, users ...string) (map[string]int64, error) {
	if len(users) > MaxLastSeenUsers {
		return nil, fmt.Errorf("last seen: %d users, at most %d: %w", len(users), MaxLastSeenUsers, ErrTooMany)
	}
	for _, u := range users {
		if err := checkUser("last seen", u); err != nil {
			return nil, err
		}
	}
	if err := f.acquire(); err != nil {
		return nil, err
	}
	defer f.mu.RUnlock()
	return f.e.lastSeen(ctx, users)
}
