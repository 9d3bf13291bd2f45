/* One LMDB environment per store directory per process, shared by every
 * handle that opens it (LMDB's locks break if a process opens a file twice),
 * plus the map-size bookkeeping that lets the map grow by itself. */
#ifndef CHRONICLE_ENVREG_H
#define CHRONICLE_ENVREG_H

#include <pthread.h>
#include <sys/types.h>
#include <lmdb.h>
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

/* Named databases; see the on-disk format in README.md. */
enum {
  DB_META, DB_LOG, DB_STREAMS, DB_STREAM_INDEX, DB_CATEGORY_INDEX, DB_EVENT_IDS, DB_KV, DB_COUNT
};

/* The on-disk format this build writes and the newest it can read. */
#define CHRONICLE_FORMAT 1

typedef struct envref {
  MDB_env *env;
  MDB_dbi dbi[DB_COUNT];
  dev_t dev;
  ino_t ino;
  pid_t pid;           /* the process that opened it: no use after fork() */
  int refs;
  int readonly;        /* opened with MDB_RDONLY */
  unsigned char store_id[16];
  /* Held shared by every transaction of this process and exclusively while
   * the map is resized: LMDB allows a resize only with no transaction active. */
  pthread_rwlock_t map_lock;
  pthread_mutex_t write_lock;   /* durability flags + write begin, see envreg_txn_begin */
  /* Nonzero (the error) once a resize failed after LMDB had unmapped the map:
   * the environment has no map left, and every use fails with this code
   * instead of touching it (set under map_lock held exclusively). */
  int broken;
  struct envref *next;
  char path[];
} envref;

typedef struct envopts {
  int readonly;
  size_t map_size;     /* initial map size in bytes (0: default) */
} envopts;

/* Opens (or shares) the store in `dir`. On failure returns an LMDB/errno code
 * or one of the ENVREG_* codes below, with a message in why[256]. */
int envreg_open(const char *dir, const envopts *opts, envref **out, char why[256]);
#define ENVREG_NOT_A_STORE (-1)
#define ENVREG_NEWER_FORMAT (-2)
#define ENVREG_NOT_FOUND (-3)
#define ENVREG_READONLY_SHARED (-4)
#define ENVREG_BROKEN (-5)      /* shared with a handle whose map could not be resized */

/* Drops one reference; the last closes the environment (unless after fork). */
void envreg_release(envref *e);

/* Begins a transaction (flags: 0, MDB_RDONLY, MDB_NOSYNC, MDB_NOMETASYNC),
 * adopting a map grown by another process. On success the map lock is held
 * shared until envreg_txn_finish. */
int envreg_txn_begin(envref *e, unsigned flags, MDB_txn **txn);
/* Commits (commit != 0) or aborts, then releases the map lock; returns the commit's code. */
int envreg_txn_finish(envref *e, MDB_txn *txn, int commit);
/* A read transaction that reuses *spare (a handle reset by envreg_read_end)
 * when there is one: mdb_txn_renew instead of mdb_txn_begin, so no
 * allocation and no search for a reader slot. The map lock is held shared
 * until envreg_read_end. */
int envreg_read_begin(envref *e, MDB_txn **spare, MDB_txn **txn);
/* Ends a read transaction: reset and kept in *spare when that is empty,
 * else aborted; then releases the map lock. */
void envreg_read_end(envref *e, MDB_txn **spare, MDB_txn *txn);
/* Holds the map as a transaction does (shared lock), for LMDB work outside
 * a transaction of ours such as a backup's copy, until envreg_unpin. */
void envreg_pin(envref *e);
void envreg_unpin(envref *e);
/* Grows the map after MDB_MAP_FULL; call with no transaction of ours active.
 * When the address space has no room for the larger map it returns ENOMEM
 * and leaves the map as it was (usable). */
int envreg_grow(envref *e);

#pragma GCC visibility pop
#endif
