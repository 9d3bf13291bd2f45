/* Builds the error values described in cerror.h; every C error goes through here. */
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <lauxlib.h>
#ifndef CERR_NO_LMDB      /* the PostgreSQL module builds this file without LMDB */
#include <lmdb.h>
#endif
#include "cerror.h"

#define CERR_MT "chronicle.error"

static int cerr_vnew(lua_State *L, const char *code, const char *fmt, va_list ap) {
  lua_createtable(L, 0, 4);
  lua_pushstring(L, code);
  lua_setfield(L, -2, "code");
  lua_pushvfstring(L, fmt, ap);
  lua_setfield(L, -2, "message");
  luaL_setmetatable(L, CERR_MT);
  return lua_gettop(L);
}

int cerr_new(lua_State *L, const char *code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int idx = cerr_vnew(L, code, fmt, ap);
  va_end(ap);
  return idx;
}

int cerr_result(lua_State *L, const char *code, const char *fmt, ...) {
  lua_pushnil(L);
  va_list ap;
  va_start(ap, fmt);
  cerr_vnew(L, code, fmt, ap);
  va_end(ap);
  return 2;
}

#ifndef CERR_NO_LMDB
const char *cerr_code_of(int rc) {
  switch (rc) {
    case MDB_MAP_FULL: return "map_full";
    case ENOSPC: case EDQUOT: return "disk_full";
    case EACCES: case EPERM: case EROFS: return "readonly";
    case MDB_INVALID: case MDB_VERSION_MISMATCH: return "not_a_store";
    case MDB_CORRUPTED: case MDB_PAGE_NOTFOUND: return "corrupt";
    case MDB_READERS_FULL: return "readers_full";
    case EIO: return "io";
    case ENOMEM: return "out_of_memory";
    default: return "storage";
  }
}

static void cerr_push_mdb(lua_State *L, int rc, const char *what) {
  /* After a failed write of its meta page LMDB refuses every later write. */
  cerr_new(L, cerr_code_of(rc), "%s: %s%s", what, mdb_strerror(rc),
           rc == MDB_PANIC ? " (close the store and open it again)" : "");
  lua_pushinteger(L, rc);
  lua_setfield(L, -2, "errno");
}

int cerr_mdb_result(lua_State *L, int rc, const char *what) {
  lua_pushnil(L);
  cerr_push_mdb(L, rc, what);
  return 2;
}

#endif

static int cerr_tostring(lua_State *L) {
  lua_getfield(L, 1, "code");
  lua_getfield(L, 1, "message");
  lua_pushfstring(L, "%s: %s", luaL_optstring(L, -2, "error"), luaL_optstring(L, -1, "?"));
  return 1;
}

/* core.error(code, message [, fields]): lets the Lua layer build the same values. */
static int cerr_lua_new(lua_State *L) {
  const char *code = luaL_checkstring(L, 1);
  const char *message = luaL_checkstring(L, 2);
  int has_fields = !lua_isnoneornil(L, 3);
  if (has_fields) luaL_checktype(L, 3, LUA_TTABLE);
  int err = cerr_new(L, code, "%s", message);
  if (has_fields) {
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, err);
    }
  }
  return 1;
}

static int cerr_is(lua_State *L) {
  int is = 0;
  if (lua_getmetatable(L, 1)) {
    luaL_getmetatable(L, CERR_MT);
    is = lua_rawequal(L, -1, -2);
  }
  lua_pushboolean(L, is);
  return 1;
}

void cerr_open(lua_State *L) {
  luaL_newmetatable(L, CERR_MT);
  lua_pushcfunction(L, cerr_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  lua_pushcfunction(L, cerr_lua_new);
  lua_setfield(L, -2, "error");
  lua_pushcfunction(L, cerr_is);
  lua_setfield(L, -2, "is_error");
}
