package sim

import (
	"testing"

	"github.com/shardchat/shard/router"
)

func TestCostsSmoke(t *testing.T) {
	for _, mode := range []router.Mode{router.Owner, router.Broadcast} {
		c, err := MeasureCosts(8, mode, 4, 1)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %+v", mode, c)
	}
}

func TestRingSmoke(t *testing.T) {
	j, l, err := RingChanges(16, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("join %+v leave %+v mem %+v", j, l, DirectoryMemory(100000))
}
