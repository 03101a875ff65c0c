package store_test

import (
	"testing"

	"github.com/shardchat/shard/store/storetest"
)

func TestEmbeddedConformance(t *testing.T) {
	storetest.Run(t, storetest.Engine{Fresh: func(t testing.TB) string { return "file:" + t.TempDir() }})
}

func BenchmarkEmbeddedAppend(b *testing.B) {
	storetest.BenchAppend(b, func(t testing.TB) string { return "file:" + t.TempDir() })
}
