/* fold's walk over a batch of records (see event_batch.h). */
#include <lauxlib.h>
#include "event_batch.h"
#include "record.h"

fold_walk fold_walk_start(lua_State *L, int fn, int state, event_cache *cache, int reveal, unsigned fields,
                          int spread, const unsigned char *order) {
  luaL_checkstack(L, EVENT_KEYS + 4, "fold");
  fold_walk w = { fn, state, reveal, cache, fields, spread, order, 0, 0, 0, -1 };
  return w;
}

int fold_batch(lua_State *L, fold_walk *w, const unsigned char *records, const scan_item *items, size_t *at,
               size_t count) {
  lua_Integer n = w->n, last_position = w->last_position, last_version = w->last_version;
  int ok = 1;
  while (*at < count) {
    const scan_item *it = &items[(*at)++];
    lua_pushvalue(L, w->fn);
    lua_pushvalue(L, w->state);
    if (w->spread) {
      event_push_spread(L, records + it->off, it->len, it->position, w->cache, w->order, w->spread);
    } else if (!event_push_open(L, records + it->off, it->len, it->position, w->cache, w->fields, w->reveal,
                                &w->revealed)) {       /* the reveal failed, and ended itself */
      lua_pushnil(L);
      lua_insert(L, -2);
      ok = 0;
      break;
    }
    lua_call(L, w->spread ? 1 + w->spread : 2, 1);
    if (lua_isnil(L, -1)) lua_pop(L, 1);
    else lua_replace(L, w->state);
    n++;
    last_position = (lua_Integer)it->position;
    last_version = (lua_Integer)record_version(records + it->off);
  }
  w->n = n;
  w->last_position = last_position;
  w->last_version = last_version;
  return ok;
}
