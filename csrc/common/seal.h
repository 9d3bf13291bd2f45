/* Sealing personal data while a backend encodes an append, and opening it while a backend reads
 * (lua/chronicle/personal.lua, docs/PERSONAL.md). chronicle.crypto's keyring begins with an event_sealer; Store's write
 * passes the keyring as `ops.seal`, and the backend, which has no libsodium, calls through it
 * for each event carrying `personal` or `subject`: the event's meta goes into the record with
 * `$personal = {s = subject, c = box}`, sealed straight into the append's buffer, so no Lua
 * table or string is made per event. ring:prepare has checked the events and put every
 * subject's key in the ring before the write. */
#ifndef CHRONICLE_SEAL_H
#define CHRONICLE_SEAL_H

#include <lua.h>
#include "buf.h"
#include "codec.h"
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

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

/* Reading: Store gives read, read_all and fold a chronicle.crypto revealer (the `reveal`
 * argument; event_table.c's event_reveal calls it only for events whose meta carries
 * `$personal`). Through it the backend opens each such event in C, with no Lua call per event:
 * the revealer makes one keyring per read and calls Lua only to fetch the key row of a subject
 * its ring has not seen in this read. */
#define EVENT_REVEALER_MT "chronicle.crypto.revealer"

typedef struct event_revealer event_revealer;
struct event_revealer {
  /* Opens the event at stack index `ev` in place (takes `$personal` out of its meta, sets
   * subject, and personal or erased = true). Returns 1 with the stack as it was, or 0 with the
   * error value pushed (the revealer has then ended itself). `self` is the revealer's index. */
  int (*reveal)(lua_State *L, int self, int ev);
  /* Ends the read: wipes the keys the revealer opened. */
  void (*end)(lua_State *L, int self);
  /* The same as reveal for an event whose envelope event_table.c took out of the record's meta
   * undecoded: the subject's bytes, the box's (NULL: none), the event's 16-byte id; `strings`
   * is the read's short-string cache (codec_decode_cached) or NULL. */
  int (*open)(lua_State *L, int self, int ev, const unsigned char *subject, size_t slen, const unsigned char *box,
              size_t boxlen, const unsigned char *id, codec_strings *strings);
};

/* The revealer at `idx`, or NULL when the value is not one (a reveal function). */
static inline event_revealer *event_revealer_at(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx)) return NULL;
  lua_getfield(L, LUA_REGISTRYINDEX, EVENT_REVEALER_MT);
  int same = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return same ? (event_revealer *)lua_touserdata(L, idx) : NULL;
}

#pragma GCC visibility pop
#endif
