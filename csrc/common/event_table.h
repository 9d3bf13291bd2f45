/* Event tables for Lua, built from stored records: the one place every backend makes them,
 * so that an event read from any store has the same fields, and the `fields` option of
 * read, read_all and fold means the same everywhere. */
#ifndef CHRONICLE_EVENT_TABLE_H
#define CHRONICLE_EVENT_TABLE_H

#include <stddef.h>
#include <stdint.h>
#include <lua.h>
#include "codec.h"
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

/* The field names, in this order, are the first EVENT_KEYS upvalues of every C function
 * that calls event_push (push them with event_push_keys before luaL_setfuncs), so that
 * building an event does not look names up in Lua's string table. */
enum {
  EVENT_POSITION = 1, EVENT_STREAM, EVENT_VERSION, EVENT_TYPE, EVENT_TIME, EVENT_ID, EVENT_SCHEMA,
  EVENT_META, EVENT_DATA, EVENT_KEYS = EVENT_DATA
};
#define EVENT_FIELD(key) (1u << ((key) - 1))
#define EVENT_ALL_FIELDS ((1u << EVENT_KEYS) - 1)

/* Pushes the EVENT_KEYS field names. */
void event_push_keys(lua_State *L);

/* The `fields` option of the options table at `opts`: a mask of EVENT_FIELD bits,
 * EVENT_ALL_FIELDS when absent. Raises a Lua error naming `fn` for a bad list. */
unsigned event_fields_option(lua_State *L, int opts, const char *fn);

/* What a scan keeps from one event to the next (event_cache_push makes it): the last stream
 * and type strings, in stack slots `last` and `last` + 1 (consecutive events mostly share
 * them), with their bytes, and the short strings of meta and data (codec_decode_cached). */
typedef struct event_cache {
  int last;
  const char *last_s[2];
  size_t last_n[2];
  codec_strings strings;
} event_cache;
/* Pushes the three stack slots of `c` and clears it. */
void event_cache_push(lua_State *L, event_cache *c);

/* Pushes the event table for record rec[0..len) at global position `pos` (already
 * checksummed), holding the fields in `fields`; meta is left out when the record has none.
 * An event whose meta bytes hold the personal-data key also gets meta and id (what the reveal
 * function reads) whatever `fields` says: event_reveal, or event_trim when there is no
 * reveal function, takes out again those not in `fields`.
 * `cache` is NULL or the scan's event_cache. Raises a Lua error (code "corrupt") when a
 * value does not decode. Returns 1 when the event's meta (decoded) carries personal data
 * under EVENT_PERSONAL_KEY, which only the store's reveal function can open; 0 otherwise,
 * so that reads of events without personal data never call into Lua for it. */
int event_push(lua_State *L, const unsigned char *rec, size_t len, uint64_t pos, event_cache *cache, unsigned fields);

/* fold's `spread` option of the query table at `opts` (its `fields` already checked by
 * event_fields_option): 0 when absent or false; when true, the number of names in `fields`
 * (1..EVENT_KEYS, raising beyond or without fields), with order[] their keys in the order
 * named. event_push_spread then pushes those fields of a record as that many values, in
 * that order, instead of an event table (meta nil when there is none; personal data is not
 * opened: it needs an event table). */
int event_spread_option(lua_State *L, int opts, const char *fn, unsigned char order[EVENT_KEYS]);
void event_push_spread(lua_State *L, const unsigned char *rec, size_t len, uint64_t pos, event_cache *cache,
                       const unsigned char *order, int n);


/* The meta key of personal data (lua/chronicle/personal.lua's META), and as MessagePack
 * (a fixstr of 9 bytes) to look for in meta's bytes before decoding them. */
#define EVENT_PERSONAL_KEY "$personal"
#define EVENT_PERSONAL_MSGPACK "\xa9$personal"
#define EVENT_REVEAL_FIELDS (EVENT_FIELD(EVENT_META) | EVENT_FIELD(EVENT_ID))

/* The reveal function (lua/chronicle/personal.lua's revealer) is given by the store's Lua
 * layer to read, read_all and fold. event_reveal calls reveal(event) on the event at the
 * top of the stack: it opens the event's personal data in place, then trims the event to
 * `fields` (event_trim). Returns 1 (the stack as it was), or 0 with the error value pushed
 * above the event. event_reveal_end calls reveal(nil) when a read that revealed events
 * ends, so its keys are wiped at once. */
int event_reveal(lua_State *L, int reveal, unsigned fields);
/* Takes meta and id out of the event at the top when `fields` does not name them (they
 * were built for a reveal: see event_push). Needs the EVENT_KEYS upvalues. */
void event_trim(lua_State *L, unsigned fields);
void event_reveal_end(lua_State *L, int reveal);

#pragma GCC visibility pop
#endif
