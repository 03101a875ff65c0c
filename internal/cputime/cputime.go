// Package cputime measures the CPU time this process spends, for benchmarks
// whose wall time is mostly waiting (a request and its reply over
// loopback): CPU per operation is what a node pays, wall time is latency.
package cputime

import (
	"syscall"
	"testing"
	"time"
)

// Self is the user and system CPU time this process has used so far.
func Self() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Report reports the CPU time used since start, per operation of b, as
// cpu-us/op.
func Report(b *testing.B, start time.Duration) {
	b.ReportMetric(float64((Self()-start).Microseconds())/float64(b.N), "cpu-us/op")
}
