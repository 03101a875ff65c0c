package protocol

// Close is a WebSocket close frame the server sends (RFC 6455 section 7.4):
// the code a client acts on and the reason text a person reads.
type Close struct {
	Code int
	Text string
}

// The close frames of the protocol.
var (
	// CloseNormal is the client's own close (Close in the Go client).
	CloseNormal = Close{1000, ""}
	// CloseSlowConsumer cuts a connection whose send queue is full, so that
	// nothing else is held up for it.
	CloseSlowConsumer = Close{1008, "slow consumer"}
	// CloseTooBig answers a frame larger than --max-frame, sent as soon as
	// its header says so. A resend would meet it again.
	CloseTooBig = Close{1009, "frame too large"}
	// CloseServiceRestart is sent by a draining node, so that its clients
	// reconnect to another.
	CloseServiceRestart = Close{1012, "service restart"}
)
