/* Sealing personal data while a backend encodes an append (lua/chronicle/personal.lua,
 * docs/PERSONAL.md). chronicle.crypto's keyring begins with an event_sealer; Store's write
 * passes the keyring as `ops.seal`, and the backend, which has no libsodium, calls through it
 * for each event carrying `personal` or `subject`: the event's meta goes into the record with
 * `$personal = {s = subject, c = box}`, sealed straight into the append's buffer, so no Lua
 * table or string is made per event. ring:prepare has checked the events and put every
 * subject's key in the ring before the write. */
#ifndef CHRONICLE_SEAL_H
#define CHRONICLE_SEAL_H

#include <lua.h>
#include "buf.h"

/* The keyring's metatable name (chronicle.crypto registers it). */
#define EVENT_SEALER_MT "chronicle.crypto.keyring"

typedef struct event_sealer event_sealer;
struct event_sealer {
  /* Appends to `out` the encoding of the meta at stack index `meta` (nil or a table) with the
   * envelope of the subject at `subject` and the personal table at `personal` (nil: the
   * envelope holds the subject only) added; `id` is the event's 16-byte id, `ring` the
   * keyring's stack index, `index` the event's number in messages. Raises on misuse (the
   * caller's buffers must be owned by something that frees them). */
  void (*seal_meta)(lua_State *L, int ring, int meta, int subject, int personal, const unsigned char *id,
                    buf *out, long long index);
};

/* The sealer of the keyring at `idx`, or NULL when the value is not one. */
static inline event_sealer *event_sealer_at(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx)) return NULL;
  lua_getfield(L, LUA_REGISTRYINDEX, EVENT_SEALER_MT);
  int same = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return same ? (event_sealer *)lua_touserdata(L, idx) : NULL;
}

#endif
