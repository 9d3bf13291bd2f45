/*
 * benchclock.c -- a tiny Lua module for the benchmarks: a monotonic wall
 * clock and the process CPU clock (Lua's os.clock is CPU time only and
 * os.time has one-second resolution).
 *
 * Build (bench/run.sh does it):
 *   cc -O2 -fPIC -shared -I/usr/include/lua5.4 bench/benchclock.c -o DIR/benchclock.so
 */
#include <time.h>
#include <lua.h>
#include <lauxlib.h>

static double clock_secs(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* benchclock.now() -> seconds (CLOCK_MONOTONIC) */
static int bc_now(lua_State *L) {
  lua_pushnumber(L, clock_secs(CLOCK_MONOTONIC));
  return 1;
}

/* benchclock.cpu() -> seconds of CPU used by this process */
static int bc_cpu(lua_State *L) {
  lua_pushnumber(L, clock_secs(CLOCK_PROCESS_CPUTIME_ID));
  return 1;
}

int luaopen_benchclock(lua_State *L) {
  static const luaL_Reg fns[] = { { "now", bc_now }, { "cpu", bc_cpu }, { NULL, NULL } };
  luaL_newlib(L, fns);
  return 1;
}
