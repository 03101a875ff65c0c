package store

// SchemaMigrations are the PostgreSQL engine's migrations, for a test to
// build a database of an older version.
var SchemaMigrations = migrations

// WithBallast sets the embedded engine's ballast size, which is otherwise
// half of Options.DiskReserve.
func WithBallast(o Options, size int64) Options {
	o.diskBallast = size
	return o
}
