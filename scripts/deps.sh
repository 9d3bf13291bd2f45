#!/usr/bin/env bash
# Installs the Debian packages chronicle builds and tests with, only those missing:
# with everything present it asks no network and returns at once.
set -euo pipefail

packages=(
  gcc make pkg-config
  lua5.4 liblua5.4-dev
  liblmdb-dev lmdb-utils libmsgpack-dev libxxhash-dev libsodium-dev
  lua-busted lua-cjson lua-argparse lua-filesystem lua-readline lua-term lua-luv tmux
  lua-http lua-cqueues curl chromium chromium-driver wrk
  luarocks lua-ldoc lua-discount
  valgrind clang libclang-rt-14-dev
  postgresql libpq-dev
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$status" = installed ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "deps: installing ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo -n env DEBIAN_FRONTEND=noninteractive)
else
  echo "deps: not root and no sudo; install as root: apt-get install ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q
"${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
