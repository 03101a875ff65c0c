//go:build linux && !race && !msan && !asan

package rawsys

import (
	"syscall"
	"unsafe"
)

// Read is read(2) on fd, which must be non-blocking: it never waits.
func Read(fd uintptr, p []byte) (int, error) {
	return rawIO(syscall.SYS_READ, fd, p)
}

// Write is write(2) on fd, which must be non-blocking: it never waits.
func Write(fd uintptr, p []byte) (int, error) {
	return rawIO(syscall.SYS_WRITE, fd, p)
}

func rawIO(trap, fd uintptr, p []byte) (int, error) {
	var base unsafe.Pointer
	if len(p) > 0 {
		base = unsafe.Pointer(&p[0])
	}
	for {
		n, _, errno := syscall.RawSyscall(trap, fd, uintptr(base), uintptr(len(p)))
		switch errno {
		case 0:
			return int(n), nil
		case syscall.EINTR:
			continue
		}
		return -1, errno
	}
}
