/*
 * luahost.c -- a minimal Lua 5.4 interpreter for profiling (bench/profile.sh).
 *
 * Debian's /usr/bin/lua5.4 is stripped, so perf shows the interpreter's
 * internals (string interning, GC, table code) as bare addresses. Linked
 * against liblua5.4.a, which keeps its local symbols, and with -Wl,-E so that
 * chronicle.core resolves the Lua API from it, this host names them.
 *
 * Build: cc -O2 -g -I/usr/include/lua5.4 bench/luahost.c -o luahost -Wl,-E \
 *          /usr/lib/x86_64-linux-gnu/liblua5.4.a -lm -ldl
 * Run:   luahost script.lua
 */
#include <stdio.h>
#include <lua.h>
#include <lualib.h>
#include <lauxlib.h>

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: luahost script.lua\n");
    return 1;
  }
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  int rc = luaL_dofile(L, argv[1]);
  if (rc != LUA_OK) fprintf(stderr, "luahost: %s\n", lua_tostring(L, -1));
  lua_close(L);
  return rc == LUA_OK ? 0 : 1;
}
