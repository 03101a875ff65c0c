package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"
)

// A process may hold at most 20,000 open files here, a hard limit, so the
// clients of a large run live in several worker processes: bench re-executes
// itself with --worker, gives each its configuration and commands as JSON
// lines on stdin, and reads its reports as JSON lines from stdout. With
// --procs 1 the single worker runs in the bench process, over the same
// protocol through pipes, so that both paths are the same code.

// workerFlag makes the bench binary a worker.
const workerFlag = "--worker"

// event is one line from a worker.
type event struct {
	Type     string          `json:"type"` // ready, progress, result, exit
	Worker   int             `json:"worker"`
	Ready    *readyReport    `json:"ready,omitempty"`
	Progress *progressReport `json:"progress,omitempty"`
	Result   *workerResult   `json:"result,omitempty"`
	Error    string          `json:"error,omitempty"` // with exit: why it ended early
}

// command is one line to a worker.
type command struct {
	Cmd string  `json:"cmd"` // run, stop
	Run *runCmd `json:"run,omitempty"`
}

// serveWorker is the worker side of the protocol: a configuration line,
// then commands until "stop" or the end of in. Commands are read while a run
// goes, so that a stop (or a parent that died, which ends stdin) cuts the
// run short instead of waiting for its end.
func serveWorker(in io.Reader, out io.Writer) error {
	dec := json.NewDecoder(bufio.NewReader(in))
	var mu sync.Mutex
	enc := json.NewEncoder(out)
	emit := func(e event) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(e) // the parent is gone if this fails; stdin will end too
	}
	var cfg workerConfig
	if err := dec.Decode(&cfg); err != nil {
		return fmt.Errorf("worker: read configuration: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runs := make(chan runCmd, 1)
	readErr := make(chan error, 1)
	go func() {
		defer close(runs)
		defer cancel()
		for {
			var cmd command
			if err := dec.Decode(&cmd); err != nil {
				if !errors.Is(err, io.EOF) {
					readErr <- fmt.Errorf("worker: read command: %w", err)
				}
				return
			}
			switch {
			case cmd.Cmd == "stop":
				return
			case cmd.Cmd == "run" && cmd.Run != nil:
				select {
				case runs <- *cmd.Run:
				case <-ctx.Done():
					return
				}
			default:
				readErr <- fmt.Errorf("worker: bad command %q", cmd.Cmd)
				return
			}
		}
	}()
	w := newWorker(cfg, func(e event) { e.Worker = cfg.Index; emit(e) })
	ready := w.setup(ctx)
	emit(event{Type: "ready", Worker: cfg.Index, Ready: &ready})
	defer w.close()
	for cmd := range runs {
		res := w.run(ctx, cmd)
		if ctx.Err() != nil {
			break
		}
		emit(event{Type: "result", Worker: cfg.Index, Result: &res})
	}
	select {
	case err := <-readErr:
		return err
	default:
		return nil
	}
}

// workerProc is the parent's side of one worker.
type workerProc struct {
	idx  int
	in   io.WriteCloser
	enc  *json.Encoder
	cmd  *exec.Cmd     // nil for the in-process worker
	done chan struct{} // closed when the worker has ended and its output is read
}

// startWorkers starts n workers for cfgs and forwards their events to
// events. inProcess runs the single worker in this process.
func startWorkers(cfgs []workerConfig, inProcess bool, events chan<- event) ([]*workerProc, error) {
	self, err := os.Executable()
	if err != nil && !inProcess {
		return nil, fmt.Errorf("find the bench binary to start workers: %w", err)
	}
	var ws []*workerProc
	for i, cfg := range cfgs {
		wp := &workerProc{idx: i, done: make(chan struct{})}
		var stdout io.ReadCloser
		var finish func() error
		if inProcess {
			inR, inW := io.Pipe()
			outR, outW := io.Pipe()
			wp.in, stdout = inW, outR
			errc := make(chan error, 1)
			go func() {
				err := serveWorker(inR, outW)
				outW.Close()
				inR.Close()
				errc <- err
			}()
			finish = func() error { return <-errc }
		} else {
			cmd := exec.Command(self, workerFlag)
			cmd.Stderr = os.Stderr
			cmd.SysProcAttr = childAttr()
			if wp.in, err = cmd.StdinPipe(); err != nil {
				return ws, err
			}
			if stdout, err = cmd.StdoutPipe(); err != nil {
				return ws, err
			}
			if err := cmd.Start(); err != nil {
				return ws, fmt.Errorf("start worker %d: %w", i, err)
			}
			wp.cmd = cmd
			finish = cmd.Wait
		}
		wp.enc = json.NewEncoder(wp.in)
		ws = append(ws, wp)
		if err := wp.enc.Encode(cfg); err != nil {
			return ws, fmt.Errorf("configure worker %d: %w", i, err)
		}
		go func() {
			defer close(wp.done)
			dec := json.NewDecoder(bufio.NewReaderSize(stdout, 1<<16))
			var readErr error
			for {
				var e event
				if readErr = dec.Decode(&e); readErr != nil {
					break
				}
				e.Worker = wp.idx
				events <- e
			}
			io.Copy(io.Discard, stdout)
			err := finish()
			msg := ""
			switch {
			case err != nil:
				msg = err.Error()
			case !errors.Is(readErr, io.EOF):
				msg = "reading its reports: " + readErr.Error()
			}
			events <- event{Type: "exit", Worker: wp.idx, Error: msg}
		}()
	}
	return ws, nil
}

func (wp *workerProc) send(c command) error {
	if err := wp.enc.Encode(c); err != nil {
		return fmt.Errorf("worker %d: %w", wp.idx, err)
	}
	return nil
}

// stopWorkers asks every worker to close its clients and end, and waits up
// to timeout; a worker still running then is killed. The events channel
// must be drained meanwhile.
func stopWorkers(ws []*workerProc, timeout time.Duration) {
	for _, wp := range ws {
		_ = wp.send(command{Cmd: "stop"})
		wp.in.Close()
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for _, wp := range ws {
		select {
		case <-wp.done:
		case <-deadline.C:
			for _, w := range ws {
				if w.cmd != nil && w.cmd.Process != nil {
					_ = w.cmd.Process.Kill()
				}
			}
			for _, w := range ws {
				if w.cmd != nil {
					<-w.done
				}
			}
			return
		}
	}
}
