#!/bin/bash
# bench/peers.sh: the peers' workload (../shared/peers/run.sh: chronicle, Emmett in memory,
# Emmett on PostgreSQL, SQLite from Lua) and, in the same run, chronicle's `fields` replay
# (bench/peers_fields.lua), RUNS times in turn. From the root of the checkout:
#   bash bench/peers.sh            (RUNS=3; PEERS and the sizes as run.sh takes them)
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
peers=${PEERS_DIR:-$root/../shared/peers}
[ -f "$peers/run.sh" ] || { echo "bench/peers.sh: no $peers/run.sh" >&2; exit 2; }
make -s -C "$root" build >&2 || exit 1
export LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;;" LUA_PATH_5_4="$root/lua/?.lua;$root/lua/?/init.lua;;"
export LUA_CPATH="$root/build/?.so;;" LUA_CPATH_5_4="$root/build/?.so;;"
status=0
for run in $(seq 1 "${RUNS:-3}"); do
  (cd "$root" && RUNS=1 bash "$peers/run.sh") || status=1
  lua5.4 "$root/bench/peers_fields.lua" || status=1
done
exit $status
