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
 * It opens nothing (reads that may meet personal data use event_push_open).
 * `cache` is NULL or the scan's event_cache. Raises a Lua error (code "corrupt") when a
 * value does not decode. Returns 1 when the event's meta (decoded) carries personal data
 * under EVENT_PERSONAL_KEY, which only the store's reveal function can open; 0 otherwise. */
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
 * layer to read, read_all and fold: a chronicle.crypto revealer, called in C (seal.h), or any
 * function (a spec's, or Store's fallback when chronicle.crypto did not load). event_reveal
 * calls reveal(event) on the event at the top of the stack: it opens the event's personal data
 * in place. Returns 1 (the stack as it was), or 0 with the error value pushed above the event.
 * event_reveal_end calls reveal(nil) when a read that revealed events ends, so its keys are
 * wiped at once. */
int event_reveal(lua_State *L, int reveal);
void event_reveal_end(lua_State *L, int reveal);

/* event_push, then, when the event carries personal data and `reveal` (a stack index, 0: none)
 * is given, event_reveal, and *revealed = 1 (the read must call event_reveal_end when it ends).
 * With a chronicle.crypto revealer the envelope is not decoded into Lua values at all: it is
 * taken out of the record's meta and opened in C, the event's id read from the record. Personal
 * data is opened whatever `fields` names: what opening needs and `fields` left out (meta, and
 * id for a reveal function) is built for it and taken out again after. Returns 1 with the
 * event on top, or 0 with the error value pushed above it (the revealer has ended itself). */
int event_push_open(lua_State *L, const unsigned char *rec, size_t len, uint64_t pos, event_cache *cache,
                    unsigned fields, int reveal, int *revealed);

#pragma GCC visibility pop
#endif
