/* chronicle.core: the C half of chronicle. Each source file registers its own part. */
#include <stdio.h>
#include <time.h>
#include <lauxlib.h>
#include <lmdb.h>
#include <xxhash.h>
#include "common/cerror.h"
#include "envreg.h"
#include "common/record.h"
#include "sandbox/sandbox.h"
#include "store.h"
#include "common/uuid.h"

int luaopen_chronicle_core(lua_State *L);

/* core.uuid() -> a new time-ordered UUID string (version 7) */
static int core_uuid(lua_State *L) {
  unsigned char id[16];
  char text[UUID_TEXT_LEN];
  if (uuid_v7(id) != 0) return luaL_error(L, "uuid: no randomness available");
  uuid_format(id, text);
  lua_pushlstring(L, text, UUID_TEXT_LEN);
  return 1;
}

/* core.hash(s) -> 16 hex digits of XXH3-64: code and definition fingerprints */
static int core_hash(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  char hex[17];
  snprintf(hex, sizeof hex, "%016llx", (unsigned long long)XXH3_64bits(s, len));
  lua_pushstring(L, hex);
  return 1;
}

/* core.now() -> nanoseconds since the Unix epoch, the clock event times use */
static int core_now(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000000000 + ts.tv_nsec);
  return 1;
}

static const luaL_Reg core_functions[] = {
  { "uuid", core_uuid },
  { "now", core_now },
  { "hash", core_hash },
  { NULL, NULL }
};

int luaopen_chronicle_core(lua_State *L) {
  luaL_newlib(L, core_functions);
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
