package session

import "github.com/fasthttp/websocket"

// CloseReason is why the server ends a connection: the close code the client
// sees and the reason label the metrics and logs use.
type CloseReason struct {
	Code  int    // WebSocket close code; 0 sends no close frame
	Text  string // close frame text
	Label string // stable label for logs and metrics
}

// The reasons a connection ends. A peer that stopped answering, or that
// went away, is owed no close frame (Code 0).
var (
	CloseClientGone   = CloseReason{0, "", "client_gone"}
	CloseByClient     = CloseReason{0, "", "client_closed"} // the library echoes the client's close frame
	CloseSlowConsumer = CloseReason{websocket.ClosePolicyViolation, "slow consumer", "slow_consumer"}
	CloseTooBig       = CloseReason{websocket.CloseMessageTooBig, "frame too large", "frame_too_large"}
	CloseIdle         = CloseReason{0, "", "ping_timeout"}
	CloseRestart      = CloseReason{websocket.CloseServiceRestart, "service restart", "service_restart"}
)

// graceful reports whether a close owes the client the frames queued
// before it: a restart or a normal close does, a cut does not.
func (r CloseReason) graceful() bool {
	return r.Code != 0 && r != CloseSlowConsumer && r != CloseTooBig
}
