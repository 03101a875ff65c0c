//go:build !linux || race || msan || asan

package rawsys

import "syscall"

// Elsewhere than on Linux, and under the race detector or the memory and
// address sanitizers, whose models of memory passed through a socket need
// syscall's annotations, reads and writes go through the scheduler as usual.

// Read is read(2) on fd.
func Read(fd uintptr, p []byte) (int, error) {
	for {
		if n, err := syscall.Read(int(fd), p); err != syscall.EINTR {
			return n, err
		}
	}
}

// Write is write(2) on fd.
func Write(fd uintptr, p []byte) (int, error) {
	for {
		if n, err := syscall.Write(int(fd), p); err != syscall.EINTR {
			return n, err
		}
	}
}
