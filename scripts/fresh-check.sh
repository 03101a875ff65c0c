#!/usr/bin/env bash
# Tries the README's two commands as a new user would, on a fresh Debian 12
# root: debootstrap's minbase with git, make and ca-certificates, and Go
# copied from this machine's /usr/local/go; nothing else. It clones this
# checkout at HEAD into the root, runs `make test` and a short `make run`
# there (the page and /api/cluster answer on 127.0.0.1:8000, then Ctrl-C and
# a clean exit), and prints PASS/FAIL/SKIP per package (and for promtool, the
# JavaScript client's tests and each fuzzer), what failed, and the time taken. Run as root, from a checkout:
#   scripts/fresh-check.sh
# Run it before resolving an issue that adds a dependency or a system package.
#
# FRESH_CACHE (default /var/tmp/shard-fresh) keeps, between runs, the root's
# tarball (built once, about 2 minutes), the packages apt downloaded and the
# Go modules downloaded (what is installed in the root is fresh every run),
# and each run's logs. FRESH_KEEP=1 keeps the run's root for a look inside.
#
# The chroot shares this machine's network and loopback: the tests in it use
# free ports, make run uses its fixed ones (checked free first), and the only
# processes this script stops are those whose root is its own chroot.
set -euo pipefail

# All of it is one function, read whole before it runs: a run takes a quarter
# of an hour, and bash would otherwise read an edit made meanwhile midway.
main() {
  CACHE=${FRESH_CACHE:-/var/tmp/shard-fresh}
  SUITE=bookworm
  # scripts/run-cluster.sh's fixed addresses: nginx, the nodes' HTTP, gossip
  # and link ports, PostgreSQL.
  RUN_PORTS=(8000 8081 8082 8083 7916 7917 7926 7927 7936 7937 5499)

  [ "$(id -u)" -eq 0 ] || { echo "fresh-check: run as root (debootstrap, chroot and mounts need it)" >&2; exit 2; }
  top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
  head=$(git -C "$top" rev-parse HEAD)
  [ -x /usr/local/go/bin/go ] || { echo "fresh-check: no Go in /usr/local/go to copy" >&2; exit 2; }
  start=$SECONDS
  stamp=$(date +%Y%m%d-%H%M%S)
  logs=$CACHE/logs/$stamp
  mkdir -p "$logs" "$CACHE/apt-archives/partial" "$CACHE/gomod"
  if [ -n "$(git -C "$top" status --porcelain --untracked-files=no)" ]; then
    echo "fresh-check: note: uncommitted changes in $top are not checked (HEAD is)"
  fi

  # apt_sources prints "URI SUITE" for each enabled source of this machine,
  # from both sources.list's one-line form and the deb822 .sources form.
  apt_sources() {
    shopt -s nullglob
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [ -f "$f" ] || continue
      sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" { print $2, $3 }'
    done
    for f in /etc/apt/sources.list.d/*.sources; do
      awk '
        function flush() { if (on && types ~ /(^| )deb( |$)/) { n = split(uris, u, " "); m = split(suites, s, " ");
                           for (i = 1; i <= n; i++) for (j = 1; j <= m; j++) print u[i], s[j] }
                           on = 1; types = uris = suites = "" }
        BEGIN { on = 1 }
        /^[ \t]*$/ { flush(); next }
        /^[ \t]*#/ { next }
        tolower($1) == "types:" { sub(/^[^:]*:[ \t]*/, ""); types = $0 }
        tolower($1) == "uris:" { sub(/^[^:]*:[ \t]*/, ""); uris = $0 }
        tolower($1) == "suites:" { sub(/^[^:]*:[ \t]*/, ""); suites = $0 }
        tolower($1) == "enabled:" { on = (tolower($2) != "no") }
        END { flush() }' "$f"
    done
  }
  sources=$(apt_sources)
  mirror=$(awk -v s="$SUITE" '$2 == s { print $1; exit }' <<<"$sources")
  security=$(awk -v s="$SUITE-security" '$2 == s { print $1; exit }' <<<"$sources")
  [ -n "$mirror" ] || { echo "fresh-check: no '$SUITE' source in /etc/apt/sources.list(.d) to take the mirror from" >&2; exit 2; }

  root="" status=1
  # in_root lists the processes whose root directory is the chroot: the only
  # ones this script may stop.
  in_root() {
    local p
    for p in /proc/[0-9]*; do
      [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && echo "${p#/proc/}"
    done
    return 0
  }
  stop_root_procs() {
    local sig pids
    for sig in TERM TERM TERM TERM TERM KILL; do
      pids=$(in_root)
      [ -z "$pids" ] && return 0
      kill -"$sig" $pids 2>/dev/null || true
      sleep 1
    done
  }
  # remove_tree deletes a root only once nothing is mounted under it: a bind
  # mount of /dev or of the caches would otherwise be emptied too.
  remove_tree() {
    local dir=$1
    if findmnt -rn -o TARGET | awk -v d="$dir/" 'index($0 "/", d) == 1 { found = 1 } END { exit !found }'; then
      echo "fresh-check: something is still mounted under $dir; not removing it" >&2
      return 1
    fi
    rm -rf --one-file-system "$dir"
  }
  cleanup() {
    trap - EXIT INT TERM
    if [ -n "$root" ]; then
      stop_root_procs
      # Its own mounts and any a test made in the root (ip netns mounts
      # /run/netns), the deepest first.
      local m
      for m in $(findmnt -rn -o TARGET | awk -v d="$root/" 'index($0, d) == 1' | sort -r); do
        umount "$m" 2>/dev/null || umount -l "$m" || true
      done
      if [ "${FRESH_KEEP:-}" = 1 ]; then
        echo "fresh-check: kept the root: $root"
      else
        remove_tree "$root" || true
      fi
    fi
    exit "$status"
  }
  trap cleanup EXIT
  trap 'echo "fresh-check: interrupted"; status=130; exit 130' INT TERM

  mount_in() { # mount_in TARGET mount-args...
    local target=$root$1
    shift
    mkdir -p "$target"
    mount "$@" "$target"
  }

  # The base root, built once: debootstrap minbase plus git, make and
  # ca-certificates, with the apt sources a Debian 12 install writes.
  base=$CACHE/$SUITE-minbase.tar
  if [ ! -f "$base" ]; then
    command -v debootstrap >/dev/null 2>&1 || {
      echo "fresh-check: installing debootstrap with apt-get"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    }
    build=$(mktemp -d "$CACHE/build.XXXXXX")
    echo "fresh-check: building the base root ($SUITE minbase + git, make, ca-certificates) from $mirror"
    if ! debootstrap --variant=minbase --include=git,make,ca-certificates "$SUITE" "$build" "$mirror" >"$logs/debootstrap.log" 2>&1; then
      echo "fresh-check: debootstrap failed; its log: $logs/debootstrap.log" >&2
      tail -20 "$logs/debootstrap.log" >&2
      umount "$build/proc" "$build/sys" 2>/dev/null || true
      remove_tree "$build" || true
      exit 1
    fi
    {
      echo "deb $mirror $SUITE main"
      echo "deb $mirror $SUITE-updates main"
      [ -n "$security" ] && echo "deb $security $SUITE-security main"
    } >"$build/etc/apt/sources.list"
    chroot "$build" apt-get clean
    chmod 755 "$build"
    tar -C "$build" -cf "$base.tmp" .
    mv "$base.tmp" "$base"
    remove_tree "$build"
  fi

  root=$(mktemp -d "$CACHE/root.XXXXXX")
  tar -C "$root" -xf "$base"
  # The chroot's / must be 0755, as a machine's is, and not mktemp's 0700 (which
  # tar restores from the archive's "."): no other user (postgres, nginx's
  # workers) could reach a single file.
  chmod 755 "$root"
  cp -a /usr/local/go "$root/usr/local/go"
  cat /etc/resolv.conf >"$root/etc/resolv.conf"
  # A Debian install has these; debootstrap's minbase may not.
  [ -s "$root/etc/hosts" ] || printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
  # The local certificate authorities this machine trusts are the machine's,
  # not the project's: its network may need them (a TLS-inspecting proxy).
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null 2>&1
    echo "fresh-check: the root trusts this machine's local CAs too: $(cd /usr/local/share/ca-certificates && echo *.crt)"
  fi
  git clone --quiet --no-checkout "$top" "$root/root/shard"
  git -C "$root/root/shard" checkout --quiet --detach "$head"

  mount_in /proc -t proc proc
  mount_in /sys -t sysfs sysfs
  mount_in /dev --bind /dev
  mount_in /dev/pts --bind /dev/pts
  mount_in /dev/shm -t tmpfs -o mode=1777,size=2g shm
  mount_in /tmp -t tmpfs -o mode=1777,size=8g tmp
  mount_in /var/cache/apt/archives --bind "$CACHE/apt-archives"
  mount_in /root/go/pkg/mod --bind "$CACHE/gomod"
  echo "fresh-check: root ready in $((SECONDS - start)) s: $root (Go $("$root/usr/local/go/bin/go" version | awk '{print $3}'), shard at ${head:0:12})"

  # in_chroot runs a command in the root as a new root login would, with
  # nothing of this shell's environment; GOFLAGS=-v lets the summary see each
  # test's result and skip reason.
  in_chroot() {
    nice -n 10 chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
  }

  echo "fresh-check: make test (log: $logs/test.log)"
  t0=$SECONDS
  # The loop shows each package's result as it comes, and times the installs:
  # from deps.sh's line to the next line make prints.
  install_secs=0 install_from=""
  shopt -s lastpipe
  set +e
  in_chroot GOFLAGS=-v /bin/bash -c 'cd /root/shard && make test' 2>&1 | tee "$logs/test.log" |
    while IFS= read -r line; do
      if [ -n "$install_from" ]; then
        install_secs=$((install_secs + SECONDS - install_from)) install_from=""
      fi
      case $line in
        "installing with apt-get"*) install_from=$SECONDS; echo "$line" ;;
        ok* | FAIL* | "make: ***"*) echo "$line" ;;
      esac
    done
  test_rc=${PIPESTATUS[0]}
  set -e
  test_secs=$((SECONDS - t0))

  echo "fresh-check: make run (log: $logs/run.log)"
  t0=$SECONDS
  run_result=""
  busy=()
  for port in "${RUN_PORTS[@]}"; do
    ss -Hltn "sport = :$port" | grep -q . && busy+=("$port")
  done
  if [ ${#busy[@]} -gt 0 ]; then
    run_result="FAIL (not started: port ${busy[*]} in use on this machine, and make run's ports are fixed)"
  else
    # Its own session and process group, as a terminal's foreground job: the
    # Ctrl-C below goes to the whole group, as a terminal's would.
    setsid nice -n 10 chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      /bin/bash -c 'cd /root/shard && exec make run' >"$logs/run.log" 2>&1 &
    group=$!
    answered=""
    # 300 s: make run builds shard and may install nginx, PostgreSQL and curl first.
    for _ in $(seq 600); do
      if in_chroot curl -fsS -o /dev/null http://127.0.0.1:8000/ 2>/dev/null &&
        cluster=$(in_chroot curl -fsS http://127.0.0.1:8000/api/cluster 2>/dev/null) &&
        [ "$(grep -o '"alive"' <<<"$cluster" | wc -l)" -ge 3 ] && grep -q '"store":"postgres"' <<<"$cluster"; then
        answered=1
        break
      fi
      kill -0 "$group" 2>/dev/null || break
      sleep 0.5
    done
    if [ -z "$answered" ]; then
      run_result="FAIL (no page, or no /api/cluster with 3 alive members and store postgres, on 127.0.0.1:8000)"
    fi
    kill -INT -- -"$group" 2>/dev/null || true
    gone=""
    for _ in $(seq 60); do
      if ! kill -0 -- -"$group" 2>/dev/null && [ -z "$(in_root)" ]; then gone=1; break; fi
      sleep 0.5
    done
    wait "$group" 2>/dev/null || true
    if [ -z "$run_result" ]; then
      if [ -z "$gone" ]; then
        run_result="FAIL (still running 30 s after Ctrl-C: $(in_root | xargs -r ps -o comm= -p | sort -u | xargs))"
      elif ! grep -q '^stopping' "$logs/run.log"; then
        run_result="FAIL (ended without its 'stopping...' line)"
      else
        run_result="PASS (page and /api/cluster answered: 3 alive members, store postgres; Ctrl-C stopped everything)"
      fi
    fi
  fi
  run_secs=$((SECONDS - t0))

  # The summary: one line per package (and per fuzzer) from go test -v's
  # output, the skips with their reasons, the failed tests.
  awk '
    /^(ok|FAIL|\?) *\t/ {
      pkg = $2; sub(/^github.com\/shardchat\/shard\/?/, "./", pkg)
      if (fuzz != "") { pkg = pkg " " fuzz; fuzz = "" }
      if ($1 == "?") next
      printf "  %-4s %-32s %8s%s\n", ($1 == "ok" ? "PASS" : "FAIL"), pkg, ($3 ~ /s$/ ? $3 : ""), (skipped != "" ? "  skipped: " skipped : "")
      skipped = ""; next
    }
    /^promtool (check|test) rules / { promtool = $1 " " $2 " " $3; next }
    promtool != "" && /SUCCESS|FAILED/ { printf "  %-4s %s\n", (/SUCCESS/ ? "PASS" : "FAIL"), promtool; promtool = ""; next }
    # make sdk-test: node --test writes TAP when it is not on a terminal.
    /^cd web\/sdk && .*node --test / { sdk = 1; next }
    sdk && /^# pass / { sdkpass = $3; next }
    sdk && /^# fail / { printf "  %-4s %-32s %s passed, %s failed\n", ($3 == 0 ? "PASS" : "FAIL"), "web/sdk (node --test)", sdkpass, $3; sdk = 0; next }
    sdk && /^ *not ok / { t = $0; sub(/^ *not ok [0-9]+ - /, "", t); failed = failed "--- FAIL: web/sdk: " t "\n" }
    /^go test .*-fuzz / { match($0, /Fuzz[A-Za-z0-9]+/); fuzz = substr($0, RSTART, RLENGTH) }
    /^ *--- SKIP: / { skipped = (skipped != "" ? skipped ", " : "") $3
                      r = prev; sub(/^ *[^ ]+\.go:[0-9]+: /, "", r); reasons = reasons "  SKIP " $3 ": " r "\n" }
    /^ *--- FAIL: / { failed = failed $0 "\n" }
    { prev = $0 }
    END { printf "%s%s", reasons, failed > "/dev/stderr" }
  ' "$logs/test.log" >"$logs/packages.txt" 2>"$logs/details.txt" || true

  {
    echo
    echo "fresh-check: shard ${head:0:12} on a fresh Debian 12 root ($SUITE minbase, Go $("$root/usr/local/go/bin/go" version | awk '{print $3}'), Node.js $(in_chroot node --version 2>/dev/null || echo "not installed"))"
    echo "make test: $([ "$test_rc" -eq 0 ] && echo PASS || echo "FAIL (exit $test_rc)") in $((test_secs / 60)) min $((test_secs % 60)) s, of which installing packages $((install_secs / 60)) min $((install_secs % 60)) s"
    cat "$logs/packages.txt"
    grep -h '^  SKIP' "$logs/details.txt" || true
    if grep -q -- '--- FAIL' "$logs/details.txt"; then
      echo "failed tests:"
      grep -h -- '--- FAIL' "$logs/details.txt" | sed 's/^ */  /'
    fi
    if [ "$test_rc" -ne 0 ] && ! grep -q '^FAIL' "$logs/test.log"; then
      echo "make test stopped before or after go test; the end of its log:"
      tail -15 "$logs/test.log" | sed 's/^/  | /'
    fi
    echo "make run: $run_result in $run_secs s"
    echo "total: $(((SECONDS - start) / 60)) min $(((SECONDS - start) % 60)) s; logs in $logs"
  } | tee "$logs/summary.txt"
  [ "$test_rc" -eq 0 ] && [[ $run_result == PASS* ]] && status=0
  exit "$status"
}

main "$@"
