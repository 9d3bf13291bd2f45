#!/bin/bash
# bench/peers_pg.sh: the peers' workload (W1-W4) on PostgreSQL, chronicle's backend and Emmett's
# (P2), on one throwaway PostgreSQL 15 server (../shared/peers/pg-tmp.sh: fsync on, the
# defaults), one after the other, RUNS times in turn. From the root of the checkout, as root:
#   bash bench/peers_pg.sh            (RUNS=2; EVENTS, STREAMS, BATCH, SINGLES, LOADS as run.sh)
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
peers=${PEERS_DIR:-$root/../shared/peers}
[ -f "$peers/pg-tmp.sh" ] || { echo "bench/peers_pg.sh: no $peers/pg-tmp.sh" >&2; exit 2; }
make -s -C "$root" build >&2 || exit 1
export LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;;" LUA_PATH_5_4="$root/lua/?.lua;$root/lua/?/init.lua;;"
export LUA_CPATH="$root/build/?.so;;" LUA_CPATH_5_4="$root/build/?.so;;" PEERS_DIR=$peers
# Emmett's modules, in the scratch copy run.sh uses (shared/ may be read-only).
work=${PEERS_WORK:-${TMPDIR:-/tmp}/chronicle-peers}
mkdir -p "$work" && cp -r "$peers/node" "$work/" 2>/dev/null
[ -d "$work/node/node_modules" ] || (cd "$work/node" && npm ci --no-audit --no-fund >&2) || exit 1
. "$peers/pg-tmp.sh"
pg_tmp_start || exit 1
trap pg_tmp_stop EXIT
echo "# postgres: $(pg_tmp_settings)" >&2
status=0
for run in $(seq 1 "${RUNS:-2}"); do
  echo "# run $run" >&2
  (cd "$root" && lua5.4 bench/peers_pg.lua) || status=1
  (cd "$work" && node node/p2_emmett_pg.mjs "$PG_URL") || status=1
  # Emmett's tables are created anew by its next run
  psql -qAtX "$PG_URL" -c "DROP SCHEMA public CASCADE; CREATE SCHEMA public" >/dev/null 2>&1
done
exit $status
