package store

import (
	"context"
	"fmt"
)

// SchemaMigrations are the PostgreSQL engine's migrations, for a test to
// build a database of an older version.
var SchemaMigrations = migrations

// WithBallast sets the embedded engine's ballast size, which is otherwise
// half of Options.DiskReserve.
func WithBallast(o Options, size int64) Options {
	o.diskBallast = size
	return o
}

// PostgresSocket is the type of the socket a PostgreSQL store's pool
// talks to the server through, for a test to check it is rawsys's.
func PostgresSocket(ctx context.Context, s Store) (string, error) {
	p, ok := s.(*postgres)
	if !ok {
		return "", fmt.Errorf("a %T, not the PostgreSQL engine", s)
	}
	c, err := p.pool.Acquire(ctx)
	if err != nil {
		return "", err
	}
	defer c.Release()
	return fmt.Sprintf("%T", c.Conn().PgConn().Conn()), nil
}
