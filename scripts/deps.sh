#!/usr/bin/env bash
# Installs the named system packages through apt-get when their command is
# missing: nginx (the browser path), chromium (the browser test) and
# postgresql (the message store's tests and the local cluster).
set -euo pipefail
missing=()
for pkg in "$@"; do
  case "$pkg" in
    nginx) command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx) ;;
    chromium) command -v chromium >/dev/null 2>&1 || missing+=(chromium) ;;
    iproute2) command -v ip >/dev/null 2>&1 || missing+=(iproute2) ;;
    nodejs) command -v node >/dev/null 2>&1 || missing+=(nodejs) ;;
    # The server binaries live off PATH, in /usr/lib/postgresql/N/bin.
    postgresql) ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql) ;;
    *) command -v "$pkg" >/dev/null 2>&1 || missing+=("$pkg") ;;
  esac
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
