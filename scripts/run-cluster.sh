#!/usr/bin/env bash
# Starts a 3-node shard cluster on loopback with nginx in front of it and a
# PostgreSQL server as its shared message store, prints the URL, and stops
# everything on Ctrl-C. `make run` calls it after building.
#   BIN=bin/shard  LISTEN=127.0.0.1:8000  scripts/run-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/shard}
LISTEN=${LISTEN:-127.0.0.1:8000}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
DIR=$(mktemp -d /tmp/shard-run.XXXXXX)
# nginx started as root hands its temp directories to an unprivileged worker,
# which must be able to reach them.
chmod 755 "$DIR"
pids=()

stop() {
  trap - INT TERM EXIT
  echo; echo "stopping..."
  # SIGTERM drains each node (close 1012) and stops nginx.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  declare -F stop_pg >/dev/null && stop_pg
  rm -rf "$DIR"
}
trap stop INT TERM EXIT

[ -x "$BIN" ] || { echo "no $BIN: run 'make build' first" >&2; exit 1; }

# PostgreSQL for the message store: a throwaway cluster in $DIR, run as the
# postgres user (the server refuses root), on a unix socket and 127.0.0.1.
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
store=()
if [ -n "$PGBIN" ] && id postgres >/dev/null 2>&1; then
  PGPORT=${PGPORT:-5499}
  mkdir -p "$DIR/pg" && chown postgres "$DIR/pg"
  as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
  # Its logs go with $DIR when we stop: a start that fails shows them first.
  pg_failed() { echo "PostgreSQL did not start; its log:" >&2; cat "$DIR/pg.log" "$DIR/pg/server.log" >&2 2>/dev/null; exit 1; }
  as_pg "$PGBIN/initdb" -D "$DIR/pg/data" -U postgres --auth=trust -E UTF8 --no-locale >"$DIR/pg.log" 2>&1 || pg_failed
  as_pg "$PGBIN/pg_ctl" -D "$DIR/pg/data" -l "$DIR/pg/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -c port=$PGPORT -c unix_socket_directories=$DIR/pg" start >>"$DIR/pg.log" 2>&1 || pg_failed
  stop_pg() { as_pg "$PGBIN/pg_ctl" -D "$DIR/pg/data" -m fast stop >/dev/null 2>&1 || true; }
  store=(--store "postgres://postgres@127.0.0.1:$PGPORT/postgres?sslmode=disable")
  echo "PostgreSQL on 127.0.0.1:$PGPORT keeps the messages"
else
  echo "PostgreSQL not found (scripts/deps.sh postgresql): running without a message store" >&2
fi
[ -x "$NGINX" ] || { echo "nginx not found: run 'scripts/deps.sh nginx'" >&2; exit 1; }

nodes=()
for i in 1 2 3; do
  http="127.0.0.1:808$i"
  gossip="127.0.0.1:79${i}6"
  join=()
  [ "$i" -gt 1 ] && join=(--join 127.0.0.1:7916)
  "$BIN" --name "n$i" --http "$http" --gossip "$gossip" "${join[@]}" "${store[@]}" 2>"$DIR/n$i.log" &
  pids+=($!)
  nodes+=("$http")
  ready=""
  for _ in $(seq 100); do
    if curl -fs "http://$http/readyz" >/dev/null 2>&1; then ready=1; break; fi
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$ready" ]; then
    echo "n$i did not become ready; its log:" >&2
    cat "$DIR/n$i.log" >&2
    exit 1
  fi
done

# Fill the template: the @NODE@ line once per node.
mkdir -p "$DIR"/{client_body,proxy,fastcgi,uwsgi,scgi}
sed -e "s|@DIR@|$DIR|g" -e "s|@LISTEN@|$LISTEN|g" web/nginx.conf.tmpl \
  | awk -v nodes="${nodes[*]}" '
      /@NODE@/ { n = split(nodes, a, " "); for (i = 1; i <= n; i++) { line = $0; sub(/@NODE@/, a[i], line); print line }; next }
      { print }' >"$DIR/nginx.conf"
"$NGINX" -e "$DIR/error.log" -c "$DIR/nginx.conf" -p "$DIR" &
pids+=($!)
for _ in $(seq 50); do
  curl -fs "http://$LISTEN/healthz" >/dev/null 2>&1 && break
  kill -0 "${pids[-1]}" 2>/dev/null || { echo "nginx failed to start:" >&2; cat "$DIR/error.log" >&2; exit 1; }
  sleep 0.1
done

echo "shard: 3 nodes (n1 ${nodes[0]}, n2 ${nodes[1]}, n3 ${nodes[2]}) behind nginx"
echo "open   http://$LISTEN/"
echo "logs   $DIR/n*.log  $DIR/error.log"
echo "Ctrl-C stops everything."
wait -n "${pids[@]}" || true
