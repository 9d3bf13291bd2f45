/* What an append checks against the stored stream, and how it says no, the same on every
 * backend: `expected` (any, no_stream, exists or a version) and the errors of a refused append
 * (conflict, duplicate_id, corrupt, stream_deleted), with their messages and fields. */
#ifndef CHRONICLE_REFUSAL_H
#define CHRONICLE_REFUSAL_H

#include <stddef.h>
#include <stdint.h>
#include <lua.h>
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

enum { EXPECT_ANY, EXPECT_NO_STREAM, EXPECT_EXISTS, EXPECT_VERSION };

/* Reads `expected` at idx: nil (any), a constant name ("any", "no_stream", "exists") or a
 * version >= 0, which goes to *version. Returns EXPECT_*; raises, naming `where`, on misuse. */
int refusal_check_expected(lua_State *L, int idx, const char *where, uint64_t *version);

/* Why a replay (an append of events whose ids are stored) was refused. */
enum { REPLAY_NONE, REPLAY_MIXED, REPLAY_TWICE, REPLAY_STREAM, REPLAY_TYPE, REPLAY_DATA, REPLAY_META,
       REPLAY_PLACE, REPLAY_ORDER };

typedef struct refusal {
  const char *code;            /* "conflict", "duplicate_id", "corrupt" or "stream_deleted" */
  const char *stream;          /* the refused stream's name */
  size_t stream_len;
  size_t index;                /* its place in append_many's or write's list (1-based), 0: append */
  int expected;                /* EXPECT_* of that stream ... */
  uint64_t expected_version;   /* ... and the version for EXPECT_VERSION */
  int exists;                  /* conflict: the stream exists, with actual_count events */
  uint64_t actual_count;
  const unsigned char *id;     /* duplicate_id, corrupt: the event id (16 bytes) */
  uint64_t position;           /* where that id is stored (0: twice in this append) */
  int replay;                  /* REPLAY_* */
  uint64_t replay_version;     /* the version a refused replay's first event has */
} refusal;

/* Pushes nil and the error for r (two values). */
void refusal_push(lua_State *L, const refusal *r);

#pragma GCC visibility pop
#endif
