//go:build linux

package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (linux/in.h): a socket
// bound to an address without a port gets its port at connect() time, unique
// per destination rather than per source address.
const ipBindAddressNoPort = 24

func setBindNoPort(fd uintptr) error {
	return syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
}

// raiseNofile raises the soft limit of open files to the hard limit; child
// processes (nodes, workers) inherit it. It returns the new soft limit.
func raiseNofile() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("getrlimit: %w", err)
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return 0, fmt.Errorf("setrlimit nofile %d: %w", l.Max, err)
		}
	}
	return l.Cur, nil
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procMemory reads the resident set size of process pid from /proc, and
// the anonymous part of it: the rest is mostly the binary's own pages,
// whose residence differs between two builds of the same source by
// megabytes (the kernel may map a binary's text with huge pages), while
// what connections add is anonymous. anon is 0 where the kernel does not
// say.
func procMemory(pid int) (rss, anon int64, err error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	rss, anon = -1, -1
	sc := bufio.NewScanner(f)
	for sc.Scan() && (rss < 0 || anon < 0) {
		name, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmRSS" && name != "RssAnon") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/status %s %q: %w", pid, name, v, err)
		}
		if name == "VmRSS" {
			rss = kb * 1024
		} else {
			anon = kb * 1024
		}
	}
	switch {
	case rss < 0:
		return 0, 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
	case anon < 0:
		return rss, 0, nil // a kernel before 4.5: the whole RSS only
	}
	return rss, anon, nil
}

// procCPU reads the CPU time (user + system) of process pid from /proc.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name, field 2, may hold spaces: fields count from the ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64) // utime, field 14
	st, err2 := strconv.ParseInt(f[12], 10, 64) // stime, field 15
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / hz, nil
}

// childAttr kills a child (node or worker) when bench dies.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// loadAvg is the 1-minute load average: the figures of a run on a machine
// busy with something else are not the server's alone.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// procIO reads what process pid has read and written through system calls
// (/proc/pid/io).
func procIO(pid int) (ioCounts, error) {
	var c ioCounts
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/io")
	if err != nil {
		return c, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch k {
		case "rchar":
			c.Read = n
		case "wchar":
			c.Written = n
		case "syscr":
			c.ReadCalls = n
		case "syscw":
			c.WriteCalls = n
		}
	}
	return c, nil
}

// boxCPU is the CPU time the whole machine has spent busy (not idle, not
// waiting for I/O), from /proc/stat: how loaded the box was during a run.
func boxCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i != 3 && i != 4 && i < 8 { // not idle, iowait, nor guest (counted in user)
			busy += n
		}
	}
	const hz = 100 // USER_HZ on Linux
	return time.Duration(busy) * time.Second / hz
}
