// Package rawsys reads and writes non-blocking sockets, and takes the events
// of an epoll instance without waiting, with system calls the Go scheduler
// is not told of, as the runtime's own netpoller makes its epoll calls.
//
// Why: syscall.Read and syscall.Write enter the scheduler's system-call
// state, made for calls that may block, so that another thread can take the
// processor meanwhile. Entering it when every processor was idle, which is
// a node's state between two messages at a few thousand a second, wakes the
// runtime's monitor thread (sysmon), which then wakes every 20 µs until the
// process is idle again: about two thread wake-ups per message a node
// handles, more than the message's own. A read or write on a non-blocking
// socket returns at once, so it needs none of that. Read and Write are raw
// only on Linux, and not under the race detector or a sanitizer
// (rawsys_other.go); the epoll calls, Linux's alone, always are. No call
// here returns EINTR: each is made again when a signal interrupted it.
package rawsys
