package client

import (
	"errors"
	"time"

	"github.com/gorilla/websocket"
)

// State is a change of the client's connection, as told to Options.OnState:
// a Connected, a Disconnected or a Reconnecting.
type State interface{ isState() }

// Connected: a connection is up, its welcome received and, after a
// reconnect, every room joined again.
type Connected struct {
	Welcome Welcome
}

// Disconnected: the connection is gone.
type Disconnected struct {
	// Err is why: ErrClosed after Close; otherwise the read or write error
	// that ended the connection, a *websocket.CloseError when the server
	// sent a close frame.
	Err error
	// CloseCode is the code of the server's close frame (1012 service
	// restart from a draining node, 1008 slow consumer, 1009 frame too
	// large, ...), 1000 after Close, and 1006 (abnormal closure) when the
	// connection ended without a close frame.
	CloseCode int
	// CloseText is the reason in the server's close frame, if any.
	CloseText string
	// At is when the connection ended: when the server's close frame
	// arrived (before this client's answer to it, after which the server
	// forgets the connection), else when reading or writing failed.
	At time.Time
}

// Reconnecting: the client is about to wait Delay and then dial again.
type Reconnecting struct {
	Attempt int           // 1 for the first attempt after a disconnect
	Delay   time.Duration // the jittered wait before this attempt
	Err     error         // why the previous attempt failed; nil before the first
}

func (Connected) isState()    {}
func (Disconnected) isState() {}
func (Reconnecting) isState() {}

// disconnected describes the end of a connection from the error that ended it.
func disconnected(err error) Disconnected {
	d := Disconnected{Err: err, CloseCode: websocket.CloseAbnormalClosure}
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		d.CloseCode, d.CloseText = ce.Code, ce.Text
	}
	return d
}
