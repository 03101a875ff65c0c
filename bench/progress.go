package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// plainEvery is how often a progress line is printed when stderr is not a
// terminal (a log file, CI): often enough to see a run move, rarely enough
// to keep the log short.
const plainEvery = 5 * time.Second

// progress is the status display on stderr: one line rewritten in place on
// a terminal, or a plain line every few seconds otherwise. Lasting messages
// (log) are printed in both modes.
type progress struct {
	w    io.Writer
	mode string // line, plain, none

	mu        sync.Mutex
	lastPlain time.Time
	live      bool // a live line is on screen
}

// newProgress resolves mode "auto" by whether w is a terminal.
func newProgress(w io.Writer, mode string) *progress {
	if mode == "auto" {
		mode = "plain"
		if f, ok := w.(*os.File); ok {
			if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
				mode = "line"
			}
		}
	}
	return &progress{w: w, mode: mode}
}

// show updates the status line.
func (p *progress) show(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch p.mode {
	case "line":
		fmt.Fprintf(p.w, "\r\x1b[K%s", s)
		p.live = true
	case "plain":
		if time.Since(p.lastPlain) >= plainEvery {
			p.lastPlain = time.Now()
			fmt.Fprintln(p.w, s)
		}
	}
}

// log prints a lasting message.
func (p *progress) log(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == "none" {
		return
	}
	if p.live {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.live = false
	}
	fmt.Fprintln(p.w, s)
}

// clear removes the live line.
func (p *progress) clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.live {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.live = false
	}
}
