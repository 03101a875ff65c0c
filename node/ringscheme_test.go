package node

import (
	"testing"

	"github.com/shardchat/shard/ring"
)

// A member that announces no ring scheme is of a build before schemes and
// routes by the original one; one that announces a scheme newer than this
// build knows counts as this build's newest, since the cluster routes by
// the oldest.
func TestAnnouncedRingSchemeIsReadAsTheMemberRoutes(t *testing.T) {
	for announced, want := range map[int]ring.Scheme{0: ring.Original, -1: ring.Original, 1: ring.Original,
		int(ring.Latest): ring.Latest, int(ring.Latest) + 1: ring.Latest, 1 << 20: ring.Latest} {
		if got := ringScheme(announced); got != want {
			t.Errorf("announced %d: read as scheme %d, want %d", announced, got, want)
		}
	}
}
