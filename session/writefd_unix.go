//go:build unix

package session

import "github.com/shardchat/shard/internal/rawsys"

// canWriteFD: a socket's descriptor is non-blocking, so one write(2) on it
// never waits.
const canWriteFD = true

func writeFD(fd uintptr, b []byte) (int, error) { return rawsys.Write(fd, b) }
