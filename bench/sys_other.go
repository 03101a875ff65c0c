//go:build !linux

package main

import (
	"errors"
	"syscall"
	"time"
)

var errNotLinux = errors.New("only on linux")

func setBindNoPort(uintptr) error          { return nil }
func raiseNofile() (uint64, error)         { return 0, nil }
func cpuTime() time.Duration               { return 0 }
func procMemory(int) (int64, int64, error) { return 0, 0, errNotLinux }
func procCPU(int) (time.Duration, error)   { return 0, errNotLinux }
func childAttr() *syscall.SysProcAttr      { return nil }

func loadAvg() float64 { return 0 }

func procIO(int) (ioCounts, error) { return ioCounts{}, errNotLinux }
func boxCPU() time.Duration        { return 0 }

func procSched(int) (time.Duration, time.Duration, int64) { return 0, 0, 0 }
