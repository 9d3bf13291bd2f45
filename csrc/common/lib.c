/* uuid, now and hash for the Lua layer. Built with CHRONICLE_COMMON_MODULE, this file is also
 * chronicle.common: those three, the error values (cerror.c) and the name limits (record.h),
 * in a module that loads neither LMDB nor libpq, so that nothing above a backend needs one. */
#include <stdio.h>
#include <time.h>
#include <lauxlib.h>
#include <xxhash.h>
#include "cerror.h"
#include "export.h"
#include "lib.h"
#include "record.h"
#include "uuid.h"

/* uuid() -> a new time-ordered UUID string (version 7) */
static int lib_uuid(lua_State *L) {
  unsigned char id[16];
  char text[UUID_TEXT_LEN];
  if (uuid_v7(id) != 0) return luaL_error(L, "uuid: no randomness available");
  uuid_format(id, text);
  lua_pushlstring(L, text, UUID_TEXT_LEN);
  return 1;
}

/* hash(s) -> 16 hex digits of XXH3-64: code and definition fingerprints */
static int lib_hash(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  char hex[17];
  snprintf(hex, sizeof hex, "%016llx", (unsigned long long)XXH3_64bits(s, len));
  lua_pushstring(L, hex);
  return 1;
}

/* now() -> nanoseconds since the Unix epoch, the clock event times use */
static int lib_now(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000000000 + ts.tv_nsec);
  return 1;
}

static const luaL_Reg lib_functions[] = {
  { "uuid", lib_uuid },
  { "now", lib_now },
  { "hash", lib_hash },
  { NULL, NULL }
};

void common_lib_register(lua_State *L) {
  luaL_setfuncs(L, lib_functions, 0);
}

#ifdef CHRONICLE_COMMON_MODULE
CHRONICLE_EXPORT int luaopen_chronicle_common(lua_State *L);

int luaopen_chronicle_common(lua_State *L) {
  lua_newtable(L);
  common_lib_register(L);
  cerr_open(L);
  lua_pushinteger(L, RECORD_MAX_STREAM);
  lua_setfield(L, -2, "MAX_STREAM_NAME");
  lua_pushinteger(L, RECORD_MAX_TYPE);
  lua_setfield(L, -2, "MAX_TYPE_NAME");
  return 1;
}
#endif
