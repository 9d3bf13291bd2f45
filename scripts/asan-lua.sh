#!/bin/sh
# Installed by `make check` as build-asan/bin/lua5.4, first on PATH: runs the real lua5.4 with
# the ASan runtime preloaded (lua5.4 itself is not instrumented, chronicle.core is).
exec env LD_PRELOAD="@ASAN_LIB@ @GUARD@" "@LUA@" "$@"
