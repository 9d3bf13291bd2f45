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

/* Pushes the event table for record rec[0..len) at global position `pos` (already
 * checksummed), holding the fields in `fields`; meta is left out when the record has none.
 * `cache` is 0 or the first of three stack slots: the last stream and type strings
 * (consecutive events mostly share them), and a table of CODEC_STRING_SLOTS slots for
 * the short strings of meta and data (codec_decode_cached); EVENT_CACHE_PUSH makes them. Raises a Lua error (code "corrupt") when a
 * value does not decode. Returns 1 when the event's meta (decoded) carries personal data
 * under EVENT_PERSONAL_KEY, which only the store's reveal function can open; 0 otherwise,
 * so that reads of events without personal data never call into Lua for it. */
int event_push(lua_State *L, const unsigned char *rec, size_t len, uint64_t pos, int cache, unsigned fields);

#define EVENT_CACHE_PUSH(L) (lua_pushnil(L), lua_pushnil(L), lua_createtable(L, CODEC_STRING_SLOTS, 0))

/* The meta key of personal data (lua/chronicle/personal.lua's META). */
#define EVENT_PERSONAL_KEY "$personal"

/* The reveal function (lua/chronicle/personal.lua's revealer) is given by the store's Lua
 * layer to read, read_all and fold: a chronicle.crypto revealer, called in C (seal.h), or any
 * function (a spec's, or Store's fallback when chronicle.crypto did not load). event_reveal calls reveal(event) on the event at the
 * top of the stack: it opens the event's personal data in place. Returns 1 (the stack as
 * it was), or 0 with the error value pushed above the event. event_reveal_end calls
 * reveal(nil) when a read that revealed events ends, so its keys are wiped at once. */
int event_reveal(lua_State *L, int reveal);
void event_reveal_end(lua_State *L, int reveal);

/* event_push, then, when the event carries personal data and `reveal` (a stack index, 0: none)
 * is given, event_reveal, and *revealed = 1 (the read must call event_reveal_end when it ends).
 * With a chronicle.crypto revealer the envelope is not decoded into Lua values at all: it is
 * taken out of the record's meta and opened in C. Returns 1 with the event on top, or 0 with
 * the error value pushed above it (the revealer has ended itself). */
int event_push_open(lua_State *L, const unsigned char *rec, size_t len, uint64_t pos, int cache, unsigned fields,
                    int reveal, int *revealed);

#pragma GCC visibility pop
#endif
