//go:build linux

package rawsys

import (
	"syscall"
	"unsafe"
)

// EpollWait returns the events ready on the epoll instance epfd now, at
// most len(events), without waiting: epoll_pwait with a timeout of 0 (the
// call every Linux architecture has). The race detector needs nothing of
// syscall's here, so it is raw in every build.
func EpollWait(epfd uintptr, events []syscall.EpollEvent) (int, error) {
	if len(events) == 0 {
		return 0, nil
	}
	for {
		n, _, errno := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, epfd, uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
		switch errno {
		case 0:
			return int(n), nil
		case syscall.EINTR:
			continue
		}
		return 0, errno
	}
}

// EpollCtl is epoll_ctl(2), which never waits.
func EpollCtl(epfd uintptr, op int, fd uintptr, ev *syscall.EpollEvent) error {
	_, _, errno := syscall.RawSyscall6(syscall.SYS_EPOLL_CTL, epfd, uintptr(op), fd, uintptr(unsafe.Pointer(ev)), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
