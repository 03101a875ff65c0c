//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// procSched sums, over the threads of process pid (0: this one), the time
// they ran, the time they waited, runnable, for a CPU, and how many times
// they were given one (/proc/pid/task/*/schedstat: ns, ns, count). The wait
// is what a saturated box costs a process that is not saturated itself: on
// the shared 2-core box, latency the node did not cause. The count is the
// process's wake-ups, which the load of the box hardly changes: each is a
// thread that slept (a goroutine parked with nothing else to run) and was
// woken, or one the scheduler took the CPU from.
func procSched(pid int) (run, wait time.Duration, slices int64) {
	dir := "/proc/self/task"
	if pid != 0 {
		dir = "/proc/" + strconv.Itoa(pid) + "/task"
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*", "schedstat"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the thread exited
		}
		fs := strings.Fields(string(b))
		if len(fs) < 3 {
			continue
		}
		r, _ := strconv.ParseInt(fs[0], 10, 64)
		w, _ := strconv.ParseInt(fs[1], 10, 64)
		n, _ := strconv.ParseInt(fs[2], 10, 64)
		run, wait, slices = run+time.Duration(r), wait+time.Duration(w), slices+n
	}
	return run, wait, slices
}
