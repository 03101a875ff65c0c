// Package protocol is the client wire format: the frame types, ack statuses,
// error codes and close codes both ends must agree on byte for byte, the
// syntax of ids and offsets, the decoder of client frames and the encoder of
// server frames. It imports nothing but the standard library and never
// touches a socket.
package protocol
