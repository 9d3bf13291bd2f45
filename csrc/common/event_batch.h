/* A batch of records as every backend's scanner copies it out of its store (one LMDB read
 * transaction, one SQL statement), and fold's walk over it: each record becomes an event table
 * (event_table.h) handed to the fold function, with no transaction open. */
#ifndef CHRONICLE_EVENT_BATCH_H
#define CHRONICLE_EVENT_BATCH_H

#include <stddef.h>
#include <stdint.h>
#include <lua.h>
#include "event_table.h"
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

/* One record of a batch: bytes [off, off + len) of the batch's buffer, at a global position. */
typedef struct scan_item {
  size_t off, len;
  uint64_t position;
} scan_item;

/* What a fold carries from batch to batch. fn and state are stack slots (the new state
 * replaces the one at `state`); cache as event_push's; reveal the reveal function's slot or 0;
 * spread 0, or fold's `spread` (event_spread_option: fn gets that many values in the order
 * of `order` instead of an event table). */
typedef struct fold_walk {
  int fn, state, reveal;
  event_cache *cache;
  unsigned fields;             /* event_table.h's EVENT_FIELD bits */
  int spread;
  const unsigned char *order;
  int revealed;                /* reveal opened an event: call event_reveal_end when the fold ends */
  lua_Integer n, last_position, last_version;
} fold_walk;

/* A walk at its start: no event folded yet (last_version -1). Checks the Lua stack has room
 * for fn, state and up to EVENT_KEYS spread values. */
fold_walk fold_walk_start(lua_State *L, int fn, int state, event_cache *cache, int reveal, unsigned fields,
                          int spread, const unsigned char *order);

/* Folds items[*at .. count) of the batch in `records`, advancing *at before each call of fn,
 * so a Lua error in fn (which propagates) leaves the scanner consistent for its __gc. Returns
 * 1, or 0 when reveal refused an event: then nil and its error are pushed (the reveal ended
 * itself) and the caller releases its scanner and returns 2. */
int fold_batch(lua_State *L, fold_walk *w, const unsigned char *records, const scan_item *items, size_t *at,
               size_t count);

#pragma GCC visibility pop
#endif
