/* The store handle: a Lua userdata over a shared environment (envreg.h). */
#ifndef CHRONICLE_STORE_H
#define CHRONICLE_STORE_H

#include <lua.h>
#include "common/buf.h"
#include "envreg.h"
#include "logdb.h"
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

#define STORE_MT "chronicle.store"
#define STORE_DEFAULT_MAX_EVENT (4u << 20)

struct append_scratch;

typedef struct store {
  envref *e;               /* NULL once closed */
  unsigned write_flags;    /* durability: 0, MDB_NOMETASYNC or MDB_NOSYNC */
  int readonly;
  size_t max_event_size;
  struct append_scratch *scratch;  /* append.h's: where a write encodes before its transaction
                                    * (NULL until the first; append_scratch_free) */
  int watch_fd;            /* watch.c's: wait()'s inotify handle on data.mdb, opened on first
                            * use (-1: none; watch_close) */
  MDB_txn *spare_read;     /* a reset read transaction, renewed by the next read (NULL: none) */
  const char *busy;        /* "verify" or "backup" while one of this handle runs (its progress
                            * callback may read, but not write or close: NULL otherwise) */
  buf spare_records;       /* a finished scan's batch buffers, for the next scan (scan.c) */
  buf spare_items;
} store;

/* A short read transaction on the store, and its end (store_read_end): the
 * store keeps one reset handle to renew, which makes a read several times
 * cheaper to start than mdb_txn_begin (bench/README.md). */
int store_read_begin(store *s, MDB_txn **txn);
void store_read_end(store *s, MDB_txn *txn);

/* The open store at idx; raises if closed or carried across fork(). */
store *store_check(lua_State *L, int idx);
/* store_check for a call that writes (`fn` names it): also raises while this
 * thread runs a verify or backup of the same store (through any handle),
 * i.e. from its progress callback. */
store *store_check_write(lua_State *L, int idx, const char *fn);
/* Marks a verify or backup (`what`) of s as running in this thread, until
 * store_busy_end(s, b) with the same b (on the caller's stack). Never raises. */
typedef struct store_busy {
  const char *outer;       /* s->busy before: calls may nest */
  int depth;               /* this thread's mark (0: none) */
} store_busy;
void store_busy_begin(store *s, const char *what, store_busy *b);
void store_busy_end(store *s, const store_busy *b);
/* The file system path at idx: a string without NUL bytes (which the OS would cut it at). */
const char *store_check_path(lua_State *L, int idx);
/* The newest global position (0 when empty), under a short read transaction. */
int store_read_head(store *s, uint64_t *head);
/* Calls the progress function at stack index fn (0: none) with (done, total),
 * protected, so a caller holding a transaction, a thread or a pipe never
 * longjmps past them. Returns 0, or -1 with the function's error left on top
 * of the stack: the caller releases what it holds and raises it (lua_error).
 * The caller reserves 3 stack slots. */
int store_report_progress(lua_State *L, int fn, long long done, long long total);
/* Pushes the table stream_info and streams() return. */
void store_push_stream_meta(lua_State *L, const void *name, size_t len, const stream_meta *m);

/* core.open(dir [, opts]) -> a store handle | nil, err */
int store_open(lua_State *L);
/* Pushes the handle's metatable (__gc, __close, __tostring; __index is set by core.c). */
void store_push_metatable(lua_State *L);
/* Adds close, is_open, head, now, stream_info, stream_version and stats to the table on top. */
void store_register(lua_State *L);

#pragma GCC visibility pop
#endif
