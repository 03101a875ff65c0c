package store

// SchemaMigrations are the PostgreSQL engine's migrations, for a test to
// build a database of an older version.
var SchemaMigrations = migrations
