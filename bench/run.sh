#!/bin/sh
# bench/run.sh: builds chronicle and the benchmark helpers, runs every
# benchmark, and prints a table of ratios measured in the same run.
#
#   bench/run.sh                 full sizes (a few minutes)
#   QUICK=1 bench/run.sh         small sizes (under a minute)
#   BENCH_ONLY="append fold" bench/run.sh      a subset (append, fold, read,
#                                aggregate, projection, latency)
#
# Sizes (environment; defaults in brackets, QUICK=1 values after the slash):
#   BENCH_ROUNDS            rounds per comparison, alternating sides [3 / 2]
#   BENCH_APPEND_TXNS       batched appends of BENCH_BATCH events [200 / 20]
#   BENCH_BATCH             events per batched append [1000 / 1000]
#   BENCH_APPEND_SYNCS      durabilities of the batched case ["nosync full"]
#   BENCH_DURABLE_COMMITS   single-event durable appends [2000 / 300]
#   BENCH_EVENTS            events in the fold store [1000000 / 50000]
#   BENCH_STREAMS           streams in the fold store [1000 / 100]
#   BENCH_FOLD_BASE_ROWS    prebuilt rows the fold baseline cycles over [10000]
#   BENCH_READ_STREAMS      100-event streams in the read store [1000 / 100]
#   BENCH_READ_LOADS        stream loads per measurement [20000 / 2000]
#   BENCH_AGG_STREAMS       100-event aggregates in the load store [1000 / 100]
#   BENCH_AGG_LOADS         aggregate loads per measurement [20000 / 2000]
#   BENCH_AGG_BIG           aggregates of 9,999 and of 10,000 events [10 / 2]
#   BENCH_EXEC_AGGS         aggregates the execute benchmark writes to [500 / 300]
#   BENCH_EXEC_EVENTS       commands (events) per aggregate there [10 / 10]
#   (projection.lua uses BENCH_EVENTS and BENCH_STREAMS, like fold.lua)
#   BENCH_LATENCY_SAMPLES   pings per latency case [200 / 50]
#   BENCH_SCAVENGE_EVENTS   events in the scavenge store, half hidden [100000 / 20000]
#                           (scavenge runs only when BENCH_ONLY names it)
#   BENCH_LATENCY_SYNCS     the appender's durabilities ["nosync full"]
#   BENCH_REV               build and measure this git revision (e.g. HEAD),
#                           exported into the scratch dir, instead of the
#                           working tree (which others may be editing)
#   BENCH_LOG               also append the raw output to this file
#   TMPDIR                  where the scratch directory goes [/tmp]; keep it
#                           on the same filesystem as the stores you care about
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cd "$root"

if [ "${QUICK:-0}" = 1 ]; then
  : "${BENCH_ROUNDS:=2}" "${BENCH_APPEND_TXNS:=20}" "${BENCH_DURABLE_COMMITS:=300}"
  : "${BENCH_EVENTS:=50000}" "${BENCH_STREAMS:=100}"
  : "${BENCH_READ_STREAMS:=100}" "${BENCH_READ_LOADS:=2000}"
  : "${BENCH_AGG_STREAMS:=100}" "${BENCH_AGG_LOADS:=2000}" "${BENCH_AGG_BIG:=2}" "${BENCH_EXEC_AGGS:=300}"
  : "${BENCH_LATENCY_SAMPLES:=50}" "${BENCH_TRANSFER_EVENTS:=50000}" "${BENCH_SCAVENGE_EVENTS:=20000}"
fi
: "${BENCH_ROUNDS:=3}" "${BENCH_APPEND_TXNS:=200}" "${BENCH_BATCH:=1000}" "${BENCH_DURABLE_COMMITS:=2000}"
: "${BENCH_EVENTS:=1000000}" "${BENCH_STREAMS:=1000}" "${BENCH_FOLD_BASE_ROWS:=10000}"
: "${BENCH_READ_STREAMS:=1000}" "${BENCH_READ_LOADS:=20000}" "${BENCH_APPEND_SYNCS:=nosync full}"
: "${BENCH_AGG_STREAMS:=1000}" "${BENCH_AGG_LOADS:=20000}" "${BENCH_AGG_BIG:=10}" "${BENCH_EXEC_AGGS:=500}"
: "${BENCH_EXEC_EVENTS:=10}" "${BENCH_LATENCY_SAMPLES:=200}" "${BENCH_LATENCY_SYNCS:=nosync full}"
: "${BENCH_TRANSFER_EVENTS:=1000000}" "${BENCH_SCAVENGE_EVENTS:=100000}"
: "${BENCH_ONLY:=append fold read aggregate projection latency transfer groups}"
export BENCH_TRANSFER_EVENTS BENCH_SCAVENGE_EVENTS
export BENCH_ROUNDS BENCH_APPEND_TXNS BENCH_BATCH BENCH_DURABLE_COMMITS BENCH_EVENTS BENCH_STREAMS \
  BENCH_FOLD_BASE_ROWS BENCH_READ_STREAMS BENCH_READ_LOADS BENCH_APPEND_SYNCS \
  BENCH_AGG_STREAMS BENCH_AGG_LOADS BENCH_AGG_BIG BENCH_EXEC_AGGS BENCH_EXEC_EVENTS \
  BENCH_LATENCY_SAMPLES BENCH_LATENCY_SYNCS

BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/chronicle-bench.XXXXXX")
export BENCH_TMP
trap 'rm -rf "$BENCH_TMP"' EXIT INT TERM

if [ "$(stat -c %d "$BENCH_TMP")" != "$(stat -c %d "$root")" ]; then
  echo "note: $BENCH_TMP is not on the filesystem of $root (set TMPDIR to change)" >&2
fi

# Build: the module with the project's Makefile, the helpers into the scratch dir.
src="$root"
rev_label="$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- csrc lua Makefile 2>/dev/null || echo '+dirty')"
if [ -n "${BENCH_REV:-}" ]; then
  src="$BENCH_TMP/src"
  mkdir -p "$src"
  git archive "$BENCH_REV" csrc lua Makefile | tar -x -C "$src"
  rev_label="$(git rev-parse --short "$BENCH_REV")"
fi
make -s -C "$src" build
bin="$BENCH_TMP/bin"
mkdir -p "$bin"
${CC:-cc} -O2 -Wall -Wextra -Werror -o "$bin/raw_lmdb" bench/raw_lmdb.c -llmdb
${CC:-cc} -O2 -Wall -Wextra -Werror -fPIC -shared -I"${LUA_INC:-/usr/include/lua5.4}" \
  bench/benchclock.c -o "$bin/benchclock.so"
export BENCH_RAW="$bin/raw_lmdb"
# (lua5.4 prefers LUA_PATH_5_4 over LUA_PATH, and `make bench` sets both: set both here too.)
export LUA_PATH="$root/bench/?.lua;$src/lua/?.lua;$src/lua/?/init.lua;;" LUA_PATH_5_4="$root/bench/?.lua;$src/lua/?.lua;$src/lua/?/init.lua;;"
export LUA_CPATH="$bin/?.so;$src/build/?.so;;" LUA_CPATH_5_4="$bin/?.so;$src/build/?.so;;"
LUA=${LUA:-lua5.4}

out="$BENCH_TMP/out.txt"
{
  echo "# chronicle benchmarks $(date -u +%Y-%m-%dT%H:%M:%SZ) chronicle $rev_label"
  echo "# $(uname -srm), $(nproc) cores, $($LUA -v 2>&1 | cut -d' ' -f1-2), liblmdb $(dpkg-query -W -f '${Version}' liblmdb0 2>/dev/null || echo '?')"
  echo "# sizes: rounds=$BENCH_ROUNDS append_txns=$BENCH_APPEND_TXNS batch=$BENCH_BATCH durable=$BENCH_DURABLE_COMMITS events=$BENCH_EVENTS streams=$BENCH_STREAMS read_streams=$BENCH_READ_STREAMS read_loads=$BENCH_READ_LOADS"
  echo "# sizes: agg_streams=$BENCH_AGG_STREAMS agg_loads=$BENCH_AGG_LOADS agg_big=$BENCH_AGG_BIG exec_aggs=$BENCH_EXEC_AGGS exec_events=$BENCH_EXEC_EVENTS latency_samples=$BENCH_LATENCY_SAMPLES latency_syncs=\"$BENCH_LATENCY_SYNCS\""
} | tee "$out"

status=0
for b in $BENCH_ONLY; do
  echo "## $b"
  if ! "$LUA" "bench/$b.lua" 2>&1 | tee -a "$out"; then status=1; fi
done
# (tee hides a failing benchmark's status: check that each one printed results)
for b in $BENCH_ONLY; do
  case $b in
    append) want=append_durable_full ;; fold) want=read_all_iter ;; read) want=fold_stream100 ;;
    aggregate) want=agg_execute_cpu ;; projection) want=projection_vs_fold_types ;; latency) want=latency_runner_ ;;
    transfer) want=import ;; serve) want=serve ;; scavenge) want=scavenge_half ;; groups) want=subscription_ack_many ;;
    *) want=$b ;;
  esac
  if [ "$BENCH_DURABLE_COMMITS" = 0 ] && [ "$b" = append ]; then want=append_batch; fi
  grep -q "^result name=$want" "$out" || { echo "benchmark $b did not finish" >&2; status=1; }
done

echo
echo "ratio = chronicle / baseline throughput (= baseline time / chronicle time); best of $BENCH_ROUNDS rounds each side"
echo "(unit us: latencies in microseconds, lower is better, ratio = baseline latency / chronicle latency)"
awk '
  BEGIN { printf "%-34s %14s %14s %-10s %7s %7s %7s %s\n", "benchmark", "chronicle", "baseline", "unit", "ratio", "median", "target", "status" }
  /^result / {
    delete f
    for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    printf "%-34s %14.0f %14.0f %-10s %7.3f %7s %7s %s\n", f["name"], f["subject"], f["baseline"], f["unit"],
           f["ratio"], (f["median_ratio"] == "" ? "-" : f["median_ratio"]), f["target"], f["status"]
  }' "$out"

if [ -n "${BENCH_LOG:-}" ]; then cat "$out" >> "$BENCH_LOG"; fi
exit $status
