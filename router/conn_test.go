package router

import "context"

// testConn is a client connection as the router sees one, that takes every
// frame and drops it: the tests here look at directories, not at frames.
type testConn struct {
	id   uint64
	user string
}

func newTestConn(id uint64, user string) *testConn { return &testConn{id: id, user: user} }

func (c *testConn) ID() uint64                           { return c.id }
func (c *testConn) User() string                         { return c.user }
func (c *testConn) Send([]byte) bool                     { return true }
func (c *testConn) Queue(...[]byte) bool                 { return true }
func (c *testConn) Answer([]byte)                        {}
func (c *testConn) QueueLimit() int                      { return 1024 }
func (c *testConn) WaitQueue(context.Context, int) error { return nil }
func (c *testConn) Cut()                                 {}
