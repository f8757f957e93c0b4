#!/usr/bin/env bash
# System packages the test suite drives for real: HAProxy (the rolling-restart test
# puts two Sluice instances behind it), Debian's Chromium (the playground's browser
# test), redis-server (state.redis: each test starts its own on loopback), Node.js
# and npm (the JavaScript client's tests). Installs what is missing with apt-get when
# run as root; otherwise says what to install and fails.
set -euo pipefail
missing=()
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
else
  echo "the test suite needs: ${missing[*]} (Debian: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
