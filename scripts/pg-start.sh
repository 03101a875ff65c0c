#!/usr/bin/env bash
# A local PostgreSQL for trying `shard --store` by hand, and the throwaway one
# the JavaScript client's tests start (web/sdk/test/cluster.js; `make run`
# starts its own in scripts/run-cluster.sh): its data in DIR, listening on
# 127.0.0.1:PORT only, with a database `shard`. Prints the URL to pass to
# --store.
#   scripts/pg-start.sh [DIR] [PORT]     start (initializes DIR the first time)
#   scripts/pg-start.sh stop [DIR]       stop it
# Defaults: DIR=/tmp/shard-pg PORT=5433 (not 5432: leaves a system server be).
# Needs the server binaries: scripts/deps.sh postgresql.
set -euo pipefail
if [ "${1:-}" = stop ]; then
  DIR=${2:-/tmp/shard-pg}
  STOP=1
else
  DIR=${1:-/tmp/shard-pg}
  PORT=${2:-5433}
  STOP=""
fi
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$BIN" ] && [ -x "$BIN/initdb" ] || { echo "no PostgreSQL server binaries: run 'scripts/deps.sh postgresql'" >&2; exit 1; }

# PostgreSQL refuses to run as root: run it as the postgres user then.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ -n "$STOP" ]; then
  as_pg "$BIN/pg_ctl" -D "$DIR/data" -m fast -w stop
  exit 0
fi

mkdir -p "$DIR"
[ "$(id -u)" -eq 0 ] && chown postgres: "$DIR"
if [ ! -f "$DIR/data/PG_VERSION" ]; then
  as_pg "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust -E UTF8 --no-locale >/dev/null
fi
if ! as_pg "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
  as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/postgres.log" -w \
    -o "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$DIR -c max_connections=200" start >/dev/null
fi
if ! as_pg "$BIN/psql" -h "$DIR" -p "$PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'shard'" | grep -q 1; then
  as_pg "$BIN/createdb" -h "$DIR" -p "$PORT" -U postgres shard
fi
echo "postgres://postgres@127.0.0.1:$PORT/shard?sslmode=disable"
