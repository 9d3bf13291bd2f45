/* The arguments of an append, checked and encoded before any transaction opens, the same on
 * every backend: (stream, events, expected) triples, one alone (append) or a list of
 * {stream=, events=, expected=} entries (append_many, write's appends), become pending streams
 * and pending events whose names, types, meta and data are bytes in one buffer. Everything a
 * caller can get wrong raises here, naming the argument; a backend's transaction then only reads
 * what was encoded. */
#ifndef CHRONICLE_APPEND_INPUT_H
#define CHRONICLE_APPEND_INPUT_H

#include <stddef.h>
#include <stdint.h>
#include <lua.h>
#include "buf.h"
#include "seal.h"
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

typedef struct pending_event {
  size_t type_off, type_len;   /* offsets into the input's bytes */
  size_t meta_off, meta_len;
  size_t data_off, data_len;
  unsigned char id[16];
  int has_id;                  /* the caller chose the id: idempotency applies */
  unsigned schema;
  int has_time;                /* the caller set the time (imports, aggregates) */
  int64_t time;
} pending_event;

typedef struct pending_stream {
  size_t name_off, name_len;
  int expected;                /* EXPECT_* (common/refusal.h) */
  uint64_t expected_version;
  size_t first_event, n_events;
  uint64_t version, position;  /* results, filled by the backend's transaction */
  int64_t time;
  int replayed;                /* every event was already stored: nothing written */
} pending_stream;

/* Where an append is encoded: the backend's scratch buffers (reused from call to call), and
 * the store's max_event_size. */
typedef struct append_input {
  buf *bytes;                  /* stream names, types, encoded meta and data */
  buf *events;                 /* pending_event, in call order */
  buf *streams;                /* pending_stream, in call order */
  size_t max_event_size;
  event_sealer *sealer;        /* write's ops.seal (common/seal.h), NULL: events carry no personal data */
  int seal_idx;                /* the keyring's stack index while the appends are encoded */
} append_input;

/* The C functions that call append_input_stream or append_input_list must have these as
 * their first upvalues (luaL_setfuncs / lua_pushcclosure with this count): an event's keys
 * are matched against them by identity, with no string lookups per event. Returns how many. */
int append_input_push_upvalues(lua_State *L);

/* Checks and encodes one (stream, events, expected) triple at the given stack slots; `where`
 * names the call in messages. Raises on misuse (and "append: out of memory"). */
void append_input_stream(lua_State *L, const append_input *in, const char *where, int name_idx,
                         int events_idx, int expected_idx);

/* Checks and encodes the list at idx of {stream=, events=, expected=} entries (`fn` names the
 * call; an empty list raises unless allow_empty); returns how many entries. */
size_t append_input_list(lua_State *L, const append_input *in, int idx, const char *fn, int allow_empty);

#pragma GCC visibility pop
#endif
