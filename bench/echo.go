package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"

	"github.com/shardchat/shard/internal/freeport"
	"github.com/shardchat/shard/protocol"
)

// The echo baseline (--baseline) is the floor a node's cost is read
// against: a server written with the WebSocket library shard uses
// (fasthttp and fasthttp/websocket, the same buffer sizes), which answers
// each frame with one frame and does nothing else. The same workers send it
// the same frames on the same schedule; its one frame out is the ack the
// client waits for, so a round is one send answered. A node's CPU per
// message over the echo's CPU per round says how many echo rounds a chat
// message costs: at least about 1.5 on one node (one frame in, two out).

// echoFlag makes the bench binary the echo server: bench --echo HOST:PORT.
const echoFlag = "--echo"

// echoAnswered counts the frames answered; /metrics gives it as
// shard_chat_messages_total, so that bench reads the echo as it reads a node.
var echoAnswered, echoConns atomic.Int64

// echoUpgrader is node/http.go's upgrader's configuration.
var echoUpgrader = websocket.FastHTTPUpgrader{
	ReadBufferSize:  512,
	WriteBufferSize: 1024,
	CheckOrigin:     func(*fasthttp.RequestCtx) bool { return true },
}

// serveEcho runs the echo server on addr until the process ends.
func serveEcho(addr string) error {
	s := &fasthttp.Server{Handler: echoHandler, NoDefaultServerHeader: true}
	return s.ListenAndServe(addr)
}

func echoHandler(ctx *fasthttp.RequestCtx) {
	switch string(ctx.Path()) {
	case "/readyz":
		ctx.SetContentType("application/json")
		ctx.WriteString("{}")
	case "/metrics":
		ctx.SetContentType("text/plain; version=0.0.4")
		fmt.Fprintf(ctx, "shard_connections %d\nshard_chat_messages_total{kind=\"echo\"} %d\n", echoConns.Load(), echoAnswered.Load())
	case "/ws":
		user := string(ctx.QueryArgs().Peek("user"))
		err := echoUpgrader.Upgrade(ctx, func(c *websocket.Conn) { echo(c, user) })
		if err != nil {
			ctx.Error(err.Error(), fasthttp.StatusBadRequest)
		}
	default:
		ctx.SetStatusCode(fasthttp.StatusNotFound)
	}
}

// echo greets the client as a node does, then answers every frame with one
// frame: a pong to a ping, an ack to anything else.
func echo(c *websocket.Conn, user string) {
	echoConns.Add(1)
	defer echoConns.Add(-1)
	out := protocol.AppendWelcome(nil, &protocol.Welcome{User: user, Node: "echo"})
	if err := c.WriteMessage(websocket.TextMessage, out); err != nil {
		return
	}
	for {
		_, in, err := c.ReadMessage()
		if err != nil {
			return
		}
		id := frameID(in)
		if bytes.Contains(in, []byte(`"type":"`+protocol.TypePing+`"`)) {
			out = protocol.AppendPong(out[:0], id)
		} else {
			out = protocol.AppendAck(out[:0], id, protocol.StatusSent, 1)
		}
		if err := c.WriteMessage(websocket.TextMessage, out); err != nil {
			return
		}
		echoAnswered.Add(1)
	}
}

// frameID is the id of a client frame, found without decoding the frame:
// the client writes ids as plain strings ("c12").
func frameID(f []byte) string {
	const key = `"id":"`
	i := bytes.Index(f, []byte(key))
	if i < 0 {
		return ""
	}
	rest := f[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

// echoProcess is a running echo server, a child of bench.
type echoProcess struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
}

// startEcho starts the echo server on a free port of 127.0.0.2, its output
// in dir, and waits until it answers.
func startEcho(ctx context.Context, dir string) (*echoProcess, error) {
	host := "127.0.0.2"
	port, err := freeport.TCP(host)
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "echo.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	e := &echoProcess{addr: net.JoinHostPort(host, strconv.Itoa(port)), done: make(chan struct{})}
	e.cmd = exec.Command(exe, echoFlag, e.addr)
	e.cmd.Stdout, e.cmd.Stderr, e.cmd.SysProcAttr = logf, logf, childAttr()
	if err := e.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the echo server: %w", err)
	}
	go func() { e.cmd.Wait(); close(e.done) }()
	deadline := time.Now().Add(readyTimeout)
	for {
		err := getJSON(ctx, "http://"+e.addr+"/readyz", &struct{}{})
		if err == nil {
			return e, nil
		}
		select {
		case <-e.done:
			return nil, errors.New("the echo server exited: see " + logf.Name())
		case <-ctx.Done():
			e.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			e.stop()
			return nil, fmt.Errorf("the echo server did not answer within %s: %v", readyTimeout, err)
		}
	}
}

// stop kills the echo server and waits for it.
func (e *echoProcess) stop() {
	e.cmd.Process.Kill()
	<-e.done
}
