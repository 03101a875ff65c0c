// Package wait polls a condition with a deadline, for tests: the way to wait
// for an event that has no channel, instead of sleeping and hoping.
package wait

import (
	"testing"
	"time"
)

// For calls f every interval until it returns nil, and fails the test with
// f's last error once total has passed.
func For(t testing.TB, total, interval time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", total, err)
		}
		time.Sleep(interval)
	}
}
