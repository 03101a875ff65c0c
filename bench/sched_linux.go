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
// they ran and the time they waited, runnable, for a CPU
// (/proc/pid/task/*/schedstat, in ns). The wait is what a saturated box
// costs a process that is not saturated itself: on the shared 2-core box,
// latency the node did not cause.
func procSched(pid int) (run, wait time.Duration) {
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
		if len(fs) < 2 {
			continue
		}
		r, _ := strconv.ParseInt(fs[0], 10, 64)
		w, _ := strconv.ParseInt(fs[1], 10, 64)
		run, wait = run+time.Duration(r), wait+time.Duration(w)
	}
	return run, wait
}
