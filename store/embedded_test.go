package store_test

import (
	"testing"

	"github.com/shardchat/shard/store/storetest"
)

// freshDir is new, empty storage for the embedded engine.
func freshDir(t testing.TB) string { return "file:" + t.TempDir() }

func TestEmbeddedConformance(t *testing.T) {
	storetest.Run(t, storetest.Engine{Fresh: freshDir})
}

func BenchmarkEmbeddedAppend(b *testing.B) {
	storetest.BenchAppend(b, freshDir)
}

func BenchmarkEmbeddedRead(b *testing.B) {
	storetest.BenchRead(b, freshDir)
}

func BenchmarkEmbeddedGroupAppend(b *testing.B) {
	storetest.BenchGroupAppend(b, freshDir)
}

func BenchmarkEmbeddedConversations(b *testing.B) {
	storetest.BenchConversations(b, freshDir)
}
