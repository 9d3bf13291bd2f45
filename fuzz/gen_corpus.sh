#!/usr/bin/env bash
# Rewrites fuzz/corpus/{value,record}/ from a store made by the real library (see gen_corpus.lua).
set -euo pipefail
cd "$(dirname "$0")/.."
make --no-print-directory build >/dev/null
rm -rf fuzz/corpus/value fuzz/corpus/record
mkdir -p fuzz/corpus/value fuzz/corpus/record
R=$PWD
LUA_PATH_5_4="$R/lua/?.lua;$R/lua/?/init.lua;;" LUA_CPATH_5_4="$R/build/?.so;;" lua5.4 fuzz/gen_corpus.lua fuzz/corpus
