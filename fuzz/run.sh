#!/usr/bin/env bash
# Builds the libFuzzer targets and runs each for a bounded time.
#
#   bash fuzz/run.sh                 build, replay fuzz/regress/, fuzz each target FUZZ_SECONDS
#   FUZZ_SECONDS=600 bash fuzz/run.sh
#   FUZZ_TARGETS=value bash fuzz/run.sh
#   FUZZ_SECONDS=0 bash fuzz/run.sh  build and replay the corpus and regressions only
#   FUZZ_FLAGS='-use_value_profile=1' bash fuzz/run.sh   more libFuzzer flags
#
# Targets: fuzz_value (csrc/common/codec.c: decode arbitrary bytes, round trip what decodes) and
# fuzz_record (csrc/common/record.c: parse arbitrary records, decode their meta and data).
# The seed corpus is fuzz/corpus/<target>/ (regenerate with fuzz/gen_corpus.sh); what a run
# learns goes to fuzz/work/<target>/ (not committed). A crash is written to fuzz/crashes/ and
# the script exits 1. Once fixed, move the input to fuzz/regress/<target>/ so every run replays it.
# Needs clang with libFuzzer (Debian: clang, libclang-rt-14-dev).
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_TARGETS=${FUZZ_TARGETS:-"value record"}
CLANG=${CLANG:-clang}
LUA_INC=${LUA_INC:-/usr/include/lua5.4}
OUT=fuzz/build
mkdir -p "$OUT" fuzz/crashes fuzz/work

command -v "$CLANG" >/dev/null || { echo "fuzz: $CLANG not found (apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }

CFLAGS="-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
        -Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE -Icsrc -I$LUA_INC"
LIBS="-llua5.4 -lxxhash -llmdb -lm"
declare -A SOURCES=(
  [value]="fuzz/fuzz_value.c csrc/common/codec.c csrc/common/buf.c"
  [record]="fuzz/fuzz_record.c csrc/common/record.c csrc/common/codec.c csrc/common/buf.c csrc/common/uuid.c"
)

status=0
for t in $FUZZ_TARGETS; do
  [ -n "${SOURCES[$t]:-}" ] || { echo "fuzz: no target '$t'" >&2; exit 2; }
  bin="$OUT/fuzz_$t"
  # shellcheck disable=SC2086
  $CLANG $CFLAGS ${SOURCES[$t]} -o "$bin" $LIBS
  mkdir -p "fuzz/work/$t" "fuzz/regress/$t"

  # Replay the seed corpus and every input that once crashed (must all pass now).
  replay=$(find "fuzz/corpus/$t" "fuzz/regress/$t" -type f | LC_ALL=C sort)
  if [ -n "$replay" ]; then
    # shellcheck disable=SC2086
    if ! "$bin" -rss_limit_mb=2048 $replay >"fuzz/work/$t.replay.log" 2>&1; then
      echo "fuzz: $t: replaying corpus and regressions FAILED (fuzz/work/$t.replay.log)"; status=1; continue
    fi
    echo "fuzz: $t: replayed $(echo "$replay" | wc -l) corpus and regression inputs"
  fi
  [ "$FUZZ_SECONDS" -gt 0 ] || continue

  log="fuzz/work/$t.log"
  rc=0
  "$bin" "fuzz/work/$t" "fuzz/corpus/$t" \
    -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -max_len=4096 -timeout=10 \
    -artifact_prefix="fuzz/crashes/$t-" -print_final_stats=1 ${FUZZ_FLAGS:-} >"$log" 2>&1 || rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{s += $2} END {print s + 0}' || true)
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  cov=$(echo "$last" | grep -o 'cov: [0-9]*' | awk '{print $2}' || true)
  ft=$(echo "$last" | grep -o 'ft: [0-9]*' | awk '{print $2}' || true)
  corp=$(echo "$last" | grep -o 'corp: [0-9]*' | awk '{print $2}' || true)
  if [ $rc -ne 0 ]; then
    echo "fuzz: $t: FOUND A CRASH after $execs executions (see $log and fuzz/crashes/)"
    grep -E 'ERROR|SUMMARY|runtime error|abort|Test unit written' "$log" | head -n 10 || true
    status=1
  else
    echo "fuzz: $t: ${FUZZ_SECONDS}s, $execs executions, coverage ${cov:-?} edges, ${ft:-?} features, corpus ${corp:-?} inputs, no crash"
  fi
done
exit $status
