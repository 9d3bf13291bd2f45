/* The write path of the LMDB backend: append.c appends (store:append, store:append_many), and
 * lends write.c (store:write) its encoding and its transaction; kv.c encodes and applies
 * write's key-value operations in the same scratch and the same transaction. */
#ifndef CHRONICLE_APPEND_H
#define CHRONICLE_APPEND_H

#include <stddef.h>
#include <lua.h>
#include "common/buf.h"
#include "common/seal.h"
#include "store.h"
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

/* What a write call encodes before its transaction opens, kept by the store between calls so
 * that the buffers are reused (made by the first call, freed with the handle). */
typedef struct append_scratch {
  buf bytes;               /* stream names, types, encoded meta and data, kv keys and values */
  buf events;              /* append.c's pending events */
  buf streams;             /* append.c's pending streams */
  buf kv;                  /* kv.c's pending key-value operations (write) */
  event_sealer *sealer;    /* write's ops.seal (common/seal.h), NULL: events carry no personal data */
  int seal_idx;            /* the keyring's stack index while the appends are encoded */
} append_scratch;

/* Frees the store's scratch (store.c, when the handle closes). */
void append_scratch_free(store *s);

/* What the caller asked for: append, append_many or write (results and messages differ). */
typedef enum { CALL_APPEND, CALL_APPEND_MANY, CALL_WRITE } call_kind;

/* The store at index 1, checked for a write by `fn`, with an empty scratch. Raises. */
store *append_begin(lua_State *L, const char *fn);
/* Encodes the list at idx of {stream=, events=, expected=} entries into the store's scratch
 * (common/append_input.h); returns how many. Must run in a closure that has
 * append_input_push_upvalues' values as its upvalues. Raises on bad input. */
size_t append_encode_list(lua_State *L, store *s, int idx, const char *fn, int allow_empty);
/* Runs the write transaction over what was encoded (nstreams streams, and the kv operations)
 * and pushes the call's results: 1 result, or 2 (nil, err). A dry run aborts instead of
 * committing. A read-only store gives nil, err(readonly). */
int append_finish(lua_State *L, store *s, size_t nstreams, call_kind kind, int dry_run);

/* Adds append, append_many to the method table on top of the stack. */
void append_register(lua_State *L);

#pragma GCC visibility pop
#endif
