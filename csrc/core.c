/* chronicle.core: the C half of chronicle. Each source file registers its own part. */
#include <lauxlib.h>
#include <lmdb.h>
#include "cerror.h"
#include "envreg.h"
#include "record.h"
#include "store.h"

int luaopen_chronicle_core(lua_State *L);

int luaopen_chronicle_core(lua_State *L) {
  lua_newtable(L);
  cerr_open(L);
  store_open_lib(L);
  lua_pushinteger(L, CHRONICLE_FORMAT);
  lua_setfield(L, -2, "FORMAT");
  lua_pushinteger(L, RECORD_MAX_STREAM);
  lua_setfield(L, -2, "MAX_STREAM_NAME");
  lua_pushinteger(L, RECORD_MAX_TYPE);
  lua_setfield(L, -2, "MAX_TYPE_NAME");
  lua_pushinteger(L, STORE_DEFAULT_MAX_EVENT);
  lua_setfield(L, -2, "DEFAULT_MAX_EVENT_SIZE");
  lua_pushstring(L, MDB_VERSION_STRING);
  lua_setfield(L, -2, "LMDB_VERSION");
  return 1;
}
