package testcluster

import (
	"testing"
	"time"

	"github.com/shardchat/shard/client"
)

// NextMsg waits up to within for the next message on cl that want accepts,
// dropping those it does not (another conversation's), and fails the test
// when none comes. who names cl in the failure.
func NextMsg(t testing.TB, cl *client.Client, who string, within time.Duration, want func(client.Msg) bool) client.Msg {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		select {
		case m := <-cl.Messages():
			if want(m) {
				return m
			}
		case <-deadline.C:
			t.Fatalf("%s got nothing it waited for within %s", who, within)
			return client.Msg{}
		}
	}
}
