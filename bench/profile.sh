#!/bin/sh
# bench/profile.sh: where chronicle's time goes, with perf (see README "Profiles").
#
#   bench/profile.sh append     600 appends of 1,000 events (durability "nosync")
#   bench/profile.sh fold       5 folds over 300,000 events (after an untimed load)
#
# Runs under bench/luahost (liblua5.4.a, so Lua's internals have names) and
# prints perf's inclusive ("children") report. PROFILE_REV=<git rev> profiles
# that revision instead of the working tree; PROFILE_KEEP=1 keeps the scratch
# directory (perf.data is in it) and prints its path.
set -eu
what=${1:-fold}
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cd "$root"
command -v perf >/dev/null || { echo "profile.sh: perf is not installed" >&2; exit 1; }

T=$(mktemp -d "${TMPDIR:-/tmp}/chronicle-prof.XXXXXX")
[ "${PROFILE_KEEP:-0}" = 1 ] && echo "scratch: $T" || trap 'rm -rf "$T"' EXIT INT TERM

src="$root"
if [ -n "${PROFILE_REV:-}" ]; then
  src="$T/src"; mkdir -p "$src"
  git archive "$PROFILE_REV" csrc lua Makefile | tar -x -C "$src"
fi
make -s -C "$src" build
${CC:-cc} -O2 -g -I"${LUA_INC:-/usr/include/lua5.4}" bench/luahost.c -o "$T/luahost" -Wl,-E \
  "${LUA_STATIC:-/usr/lib/x86_64-linux-gnu/liblua5.4.a}" -lm -ldl
${CC:-cc} -O2 -fPIC -shared -I"${LUA_INC:-/usr/include/lua5.4}" bench/benchclock.c -o "$T/benchclock.so"
export BENCH_TMP="$T"
export LUA_PATH="$root/bench/?.lua;$src/lua/?.lua;$src/lua/?/init.lua;;"
export LUA_CPATH="$T/?.so;$src/build/?.so;;"

case $what in
  append)
    cat > "$T/run.lua" <<'EOF'
local B = require "benchlib"
local s = assert(require("chronicle").open(B.tmp .. "/store", { durability = "nosync", map_size = 4 << 30 }))
local batches = {}
for b = 1, 10 do
  local l = {}
  for j = 1, 1000 do l[j] = { type = "Deposited", data = B.event_data(b * 1000 + j, 97) } end
  batches[b] = l
end
local t0 = B.now()
for t = 0, 599 do assert(s:append("bench-" .. (t % 10), batches[t % 10 + 1])) end
print(string.format("append: %.0f events/s (under perf)", 600000 / (B.now() - t0)))
EOF
    ;;
  fold)
    cat > "$T/load.lua" <<'EOF'
local B = require "benchlib"
local s = assert(require("chronicle").open(B.tmp .. "/store", { durability = "nosync", map_size = 4 << 30 }))
B.load(s, 300000, 1000, 1000)
EOF
    "$T/luahost" "$T/load.lua"
    cat > "$T/run.lua" <<'EOF'
local B = require "benchlib"
local s = assert(require("chronicle").open(B.tmp .. "/store", { durability = "nosync", map_size = 4 << 30 }))
local function fn(st, ev)
  st.n = st.n + 1
  st.sum = st.sum + ev.data.amount
  local bt = st.by_type
  bt[ev.type] = (bt[ev.type] or 0) + 1
end
s:fold({}, 0, function() end)
local t0 = B.now()
for _ = 1, 5 do s:fold({}, { n = 0, sum = 0, by_type = {} }, fn) end
print(string.format("fold: %.0f events/s (under perf)", 1500000 / (B.now() - t0)))
EOF
    ;;
  *) echo "usage: bench/profile.sh append|fold" >&2; exit 1 ;;
esac

perf record -q -F 2000 --call-graph dwarf,16384 -o "$T/perf.data" "$T/luahost" "$T/run.lua"
perf report -i "$T/perf.data" --children --stdio -g none --percent-limit "${PROFILE_LIMIT:-1.5}" 2>/dev/null \
  | grep -E '^ +[0-9]' | grep -v -E ' 0x0000|luaD_|luaV_execute|_start|\] main$|lua_pcallk|libc_start'
