/* chronicle.core: the LMDB backend, and its one registration point. Each feature's file adds
 * its methods to the handle's method table (its header says which); store.c knows none of them. */
#include <lauxlib.h>
#include <lmdb.h>
#include "common/cerror.h"
#include "common/export.h"
#include "common/lib.h"
#include "append.h"
#include "backup.h"
#include "envreg.h"
#include "kv.h"
#include "common/record.h"
#include "scan.h"
#include "scavenge.h"
#include "store.h"
#include "verify.h"
#include "watch.h"
#include "write.h"

CHRONICLE_EXPORT int luaopen_chronicle_core(lua_State *L);

/* The store handle's methods (docs/BACKEND.md lists them all), one table. */
static void core_methods(lua_State *L) {
  lua_createtable(L, 0, 24);
  store_register(L);     /* close, is_open, head, now, stream_info, stream_version, stats */
  append_register(L);    /* append, append_many */
  write_register(L);     /* write */
  scan_register(L);      /* read, read_all, fold, streams, kv_scan, position_of */
  kv_register(L);        /* kv_get, kv_count, kv_spaces */
  verify_register(L);    /* verify */
  watch_register(L);     /* wait, wait_fd */
  backup_register(L);    /* backup */
  scavenge_register(L);  /* scavenge_stream, scavenged */
}

int luaopen_chronicle_core(lua_State *L) {
  lua_newtable(L);
  common_lib_register(L);   /* uuid, now, hash */
  cerr_open(L);
  store_push_metatable(L);
  core_methods(L);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_pushcfunction(L, store_open);
  lua_setfield(L, -2, "open");
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
