/* chronicle.core: the LMDB backend. Each source file registers its own part. */
#include <lauxlib.h>
#include <lmdb.h>
#include "common/cerror.h"
#include "common/export.h"
#include "common/lib.h"
#include "envreg.h"
#include "common/record.h"
#include "sandbox/sandbox.h"
#include "store.h"

CHRONICLE_EXPORT int luaopen_chronicle_core(lua_State *L);

int luaopen_chronicle_core(lua_State *L) {
  lua_newtable(L);
  common_lib_register(L);   /* uuid, now, hash */
  cerr_open(L);
  store_open_lib(L);
  sandbox_open(L);
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
