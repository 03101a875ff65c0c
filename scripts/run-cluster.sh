#!/usr/bin/env bash
# Starts a 3-node shard cluster on loopback with nginx in front of it, prints
# the URL, and stops everything on Ctrl-C. `make run` calls it after building.
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
  rm -rf "$DIR"
}
trap stop INT TERM EXIT

[ -x "$BIN" ] || { echo "no $BIN: run 'make build' first" >&2; exit 1; }
[ -x "$NGINX" ] || { echo "nginx not found: run 'scripts/deps.sh nginx'" >&2; exit 1; }

nodes=()
for i in 1 2 3; do
  http="127.0.0.1:808$i"
  gossip="127.0.0.1:79${i}6"
  join=()
  [ "$i" -gt 1 ] && join=(--join 127.0.0.1:7916)
  "$BIN" --name "n$i" --http "$http" --gossip "$gossip" "${join[@]}" 2>"$DIR/n$i.log" &
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
