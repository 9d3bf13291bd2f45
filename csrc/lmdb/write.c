/* store:write: appends to several streams and key-value operations in one transaction, or none
 * of it. The appends are encoded and committed by append.c, the key-value operations by kv.c,
 * both in the store's scratch and in the same write transaction. */
#include <lauxlib.h>
#include "common/append_input.h"
#include "common/options.h"
#include "common/seal.h"
#include "append.h"
#include "kv.h"
#include "store.h"
#include "write.h"

/* store:write({ appends=, checks=, clears=, deletes=, puts=, dry_run=, seal= }) -> result | nil, err
 * (seal: a chronicle.crypto keyring that seals the events' personal data, common/seal.h)
 * Everything in one transaction: appends as append_many, then the key-value
 * ops in the order checks, clears, deletes, puts. */
static int write_store(lua_State *L) {
  store *s = append_begin(L, "write");
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  int dry_run = opt_write(L, 2);
  size_t n = 0;
  lua_getfield(L, 2, "seal");
  if (!lua_isnil(L, 3)) {
    if (!(s->scratch->sealer = event_sealer_at(L, 3))) luaL_error(L, "write: seal must be a chronicle.crypto keyring");
    s->scratch->seal_idx = 3;
  }
  lua_getfield(L, 2, "appends");
  if (!lua_isnil(L, 4)) {
    if (!lua_istable(L, 4)) luaL_error(L, "write: appends must be a list");
    n = append_encode_list(L, s, 4, "write.appends", 1);
  }
  s->scratch->sealer = NULL;
  lua_settop(L, 2);
  kv_encode_ops(L, s, 2);
  return append_finish(L, s, n, CALL_WRITE, dry_run);
}

void write_register(lua_State *L) {
  lua_pushcclosure(L, write_store, append_input_push_upvalues(L));   /* it encodes events as append does */
  lua_setfield(L, -2, "write");
}
