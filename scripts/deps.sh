#!/usr/bin/env bash
# Installs, through apt-get, the Debian packages named on the command line
# whose check below fails, and says in one line what it installs and why.
#   scripts/deps.sh gcc nginx postgresql ...
# The Makefile names what `make test` and `make run` need; this table says
# how to tell that each one is there, and what it is for. A package not in
# the table is checked as a command of the same name.
set -euo pipefail

# package | check (a shell command that succeeds when it is installed) | what needs it
table=$(cat <<'EOF'
gcc|command -v gcc|go test -race: the race detector needs cgo
libc6-dev|test -e /usr/include/stdio.h|cgo's C headers and start files, for -race
nginx|command -v nginx || test -x /usr/sbin/nginx|the browser test and make run: nginx in front of the nodes
chromium|command -v chromium|the browser test, driven by chromedp
curl|command -v curl|make run's readiness checks; the partition test
iproute2|command -v ip|the partition test's network namespace
postgresql|compgen -G '/usr/lib/postgresql/*/bin/initdb'|the PostgreSQL store's tests and make run's message store
prometheus|command -v promtool|promtool checks deploy/prometheus/alerts.yml
nodejs|command -v node|the JavaScript client's tests, node --test
npm|command -v npm|the JavaScript client's dependencies, npm ci
EOF
)

missing=() why=()
for pkg in "$@"; do
  check="command -v $pkg" reason="asked for"
  while read -r row; do
    # The check may hold '|' itself: the name is before the first, the
    # reason after the last.
    [ "${row%%|*}" = "$pkg" ] || continue
    check=${row#*|} reason=${row##*|}
    check=${check%|*}
  done <<<"$table"
  if ! bash -c "$check" >/dev/null 2>&1; then
    missing+=("$pkg")
    why+=("$pkg ($reason)")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
line=$(printf '%s; ' "${why[@]}")
echo "installing with apt-get: ${line%; }" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# apt's own chatter goes to a log, shown only when the install fails.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
