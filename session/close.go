package session

import "github.com/shardchat/shard/protocol"

// CloseReason is why the server ends a connection: the close frame the client
// sees and the reason label the metrics and logs use.
type CloseReason struct {
	protocol.Close        // the close frame; a zero Code sends none
	Label          string // stable label for logs and metrics
}

// The reasons a connection ends. A peer that stopped answering, or that
// went away, is owed no close frame (Code 0).
var (
	CloseClientGone = CloseReason{Label: "client_gone"}
	CloseByClient   = CloseReason{Label: "client_closed"} // the reader echoes the client's close frame
	// CloseProtocolError: the reader has written the close frame (1002)
	// naming the fault itself, so the close sequence sends none.
	CloseProtocolError = CloseReason{Label: "protocol_error"}
	CloseSlowConsumer  = CloseReason{protocol.CloseSlowConsumer, "slow_consumer"}
	CloseTooBig        = CloseReason{protocol.CloseTooBig, "frame_too_large"}
	CloseIdle          = CloseReason{Label: "ping_timeout"}
	CloseRestart       = CloseReason{protocol.CloseServiceRestart, "service_restart"}
)

// graceful reports whether a close owes the client the frames queued
// before it: a restart or a normal close does, a cut does not.
func (r CloseReason) graceful() bool {
	return r.Code != 0 && r != CloseSlowConsumer && r != CloseTooBig
}
