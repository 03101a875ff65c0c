#!/usr/bin/env bash
# Starts a 3-node shard cluster on loopback with nginx in front of it, prints
# the URL, and stops everything on Ctrl-C. `make run` calls it after building.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/shard}
LISTEN=${LISTEN:-127.0.0.1:8000}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
DIR=$(mktemp -d /tmp/shard-run.XXXXXX)
pids=()

stop() {
  trap - INT TERM EXIT
  echo; echo "stopping..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap stop INT TERM EXIT

upstreams=""
for i in 1 2 3; do
  http="127.0.0.1:808$i"
  gossip="127.0.0.1:79${i}6"
  join=""
  [ "$i" -gt 1 ] && join="--join 127.0.0.1:7916"
  # shellcheck disable=SC2086
  "$BIN" --name "n$i" --http "$http" --gossip "$gossip" $join 2>"$DIR/n$i.log" &
  pids+=($!)
  upstreams+="        server $http max_fails=2 fail_timeout=5s;"$'\n'
  for _ in $(seq 100); do
    curl -fs "http://$http/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
done

mkdir -p "$DIR"/{client_body,proxy,fastcgi,uwsgi,scgi}
sed -e "s|@DIR@|$DIR|g" -e "s|@LISTEN@|$LISTEN|g" web/nginx.conf.tmpl \
  | awk -v ups="$upstreams" '{ if ($0 ~ /@UPSTREAMS@/) printf "%s", ups; else print }' > "$DIR/nginx.conf"
"$NGINX" -c "$DIR/nginx.conf" -p "$DIR" &
pids+=($!)

echo "shard: 3 nodes (n1 127.0.0.1:8081, n2 :8082, n3 :8083) behind nginx"
echo "open   http://$LISTEN/"
echo "logs   $DIR/n*.log"
echo "Ctrl-C stops everything."
wait -n "${pids[@]}" || true
