// Package freeport finds ports that are free on a host, for the servers
// that tests and bench start on loopback (shard processes, PostgreSQL,
// nginx). A port is free when asked; whoever binds it later may lose it to
// someone else, so a caller that can retry should.
package freeport

import (
	"fmt"
	"net"
	"strconv"
)

// tries bounds the search for a port free for both TCP and UDP: a TCP port
// the kernel hands out is rarely taken for UDP, so a few tries are plenty.
const tries = 50

// TCP returns a TCP port that was free on host a moment ago.
func TCP(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port on %s: %w", host, err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// TCPAndUDP returns a port that was free on host for both TCP and UDP a
// moment ago, as memberlist binds both.
func TCPAndUDP(host string) (int, error) {
	for i := 0; i < tries; i++ {
		port, err := TCP(host)
		if err != nil {
			return 0, err
		}
		pc, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err == nil {
			pc.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("no port free for both TCP and UDP on %s after %d tries", host, tries)
}
