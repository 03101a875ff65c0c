//go:build unix

package session

import "syscall"

// canWriteFD: a socket's descriptor is non-blocking, so one write(2) on it
// never waits.
const canWriteFD = true

func writeFD(fd uintptr, b []byte) (int, error) { return syscall.Write(int(fd), b) }
