/* chronicle.postgres: the PostgreSQL backend (libpq). One connection per open
 * store; every method of docs/BACKEND.md with the LMDB core's results and
 * error codes. Events keep the LMDB record layout and checksum (record.h) and
 * values the same MessagePack bytes (codec.h), stored as bytea.
 *
 * Tables, in the store's schema (search_path is set to it on connect):
 *   meta(key text primary key, value bigint, text_value text)
 *       'format', 'head' (the newest position: the row every write locks), 'store_id'
 *   events(position bigint primary key, stream bytea, version bigint,
 *          category bytea, type bytea, id bytea unique, record bytea)
 *   streams(name bytea primary key, count, first_position, last_position, created, updated)
 *   kv(space bytea, key bytea, value bytea, primary key (space, key))
 *
 * Caveat, as in the LMDB core: no Lua error may be raised while a PGresult
 * is held or a transaction is open. Results are copied into buffers the
 * handle or a scanner owns and cleared before anything is pushed to Lua; as
 * a second line, every call first rolls back a transaction left open. */
#ifndef CHRONICLE_PG_H
#define CHRONICLE_PG_H

#include <stdint.h>
#include <sys/types.h>
#include <libpq-fe.h>
#include <lua.h>
#include "common/buf.h"
#include "common/seal.h"
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

#define PGS_MT "chronicle.postgres.store"
#define PGS_FORMAT 1
#define PGS_DEFAULT_MAX_EVENT (4u << 20)
#define PGS_MAX_SCHEMA 50
#define PGS_MAX_SPACE 64
#define PGS_MAX_KEY 400
#define PGS_COUNTS 4096                   /* streams whose count a connection remembers */
#define PGS_COUNT_NAME 64                 /* ... when their name is at most this long */

#define PGS_STMTS 128                     /* statement texts a connection keeps prepared */

/* A statement text this connection ran: prepared once it is seen a second time. */
typedef struct pgs_stmt {
  uint64_t hash;                          /* XXH3 of the text; 0: empty */
  unsigned seen;
  unsigned prepared;                      /* 0, or the number in its name (unique per session) */
} pgs_stmt;

typedef struct stream_count {
  uint64_t hash;                          /* 0: empty */
  int64_t count;
  unsigned char len;
  unsigned char name[PGS_COUNT_NAME];
} stream_count;

/* Statuses of the C helpers; the Lua face turns them into `nil, err`. */
enum {
  PGS_OK = 0,
  PGS_UNAVAILABLE,     /* the connection is gone (the next call reconnects) */
  PGS_SQL,             /* the server refused a statement: s->sqlstate, s->err */
  PGS_NOMEM,
  PGS_REFUSED,         /* an append's check failed (conflict, duplicate_id) */
  PGS_CHECK_FAILED,    /* a write() check failed */
  PGS_CORRUPT,         /* a stored row is damaged: s->err */
  PGS_DELETED          /* a read or write of a hard-deleted stream */
};

typedef struct pgparams {
  int n, cap;
  const char **values;
  int *lengths, *formats;
  buf ints;            /* 8-byte big-endian integers the values point into */
} pgparams;

typedef struct pgs {
  PGconn *conn;        /* NULL once closed */
  pid_t pid;           /* the process that opened it */
  const char *busy;    /* "verify" while its progress callback runs: the store refuses any use */
  int readonly;
  int nosync;          /* durability = "nosync": synchronous_commit off */
  int listening;       /* LISTEN done on this connection */
  int piped;           /* in libpq pipeline mode, with `pending` statements sent */
  int pending;
  size_t max_event_size;
  char schema[PGS_MAX_SCHEMA + 1];
  char channel[PGS_MAX_SCHEMA + 16];
  char *conninfo;      /* the URL without `schema`, for PQconnectdb */
  char *target;        /* the URL as shown: no password */
  char store_id[37];
  buf scratch_bytes, scratch_events, scratch_streams, scratch_kv, sql;
  event_sealer *sealer;  /* write's ops.seal while its appends are encoded (common/seal.h), else NULL */
  int seal_idx;          /* the keyring's stack index then */
  /* What this connection last saw the head and some streams' counts to be, so that an
   * append can be sent in one round trip (pg_append.c's predicted path). Cleared on reconnect. */
  int head_known;
  int64_t head;
  int predict_skip, predict_backoff;      /* appends left to send the long way after a miss */
  struct stream_count *counts;            /* PGS_COUNTS entries, malloc'd on first use */
  pgs_stmt stmts[PGS_STMTS];
  int stmts_unsure;                       /* a flight that prepared failed: DEALLOCATE ALL first */
  int stmts_sent;                         /* prepares sent since the last flight ended */
  unsigned stmts_evicted, stmts_named;
  pgparams p;
  char sqlstate[6];
  char err[600];
} pgs;

pgs *pgs_check(lua_State *L, int idx);

/* Makes the connection usable: reconnects a dropped one and rolls back a
 * transaction left open. Returns PGS_OK or PGS_UNAVAILABLE. */
int pgs_ready(pgs *s);

/* Parameters: pgs_params_reset, then add in order ($1, $2, ...). Values
 * point into memory that must stay put until the statement ran. */
void pgs_params_reset(pgs *s);
int pgs_param_bytes(pgs *s, const void *p, size_t len);
int pgs_param_int(pgs *s, int64_t v);
int pgs_param_text(pgs *s, const char *text);

/* Runs sql with the parameters added; binary results. *res is set (and must
 * be cleared) only on PGS_OK. */
int pgs_exec(pgs *s, const char *sql, PGresult **res);
/* Sends sql with the parameters added without waiting for its result (libpq's
 * pipeline mode): for statements whose results only matter if they fail.
 * pgs_exec and pgs_pipe_end wait for everything sent and return the first failure. */
int pgs_send(pgs *s, const char *sql);
int pgs_pipe_end(pgs *s);
/* Sends sql with the parameters added in single-row mode; then pgs_next_row
 * returns each row as its own result (to clear), and NULL at the end or on a
 * failure (*st set). Every row must be read before the next statement. */
int pgs_send_rows(pgs *s, const char *sql);
PGresult *pgs_next_row(pgs *s, int *st);
/* A statement with no parameters and no rows wanted (text protocol). */
int pgs_command(pgs *s, const char *sql);
/* Fails the status for a result (records sqlstate and message). */
int pgs_result_status(pgs *s, PGresult *r);

int64_t pgs_get_int(const PGresult *r, int row, int col);

/* The newest position, read by one statement. */
int pgs_read_head(pgs *s, int64_t *head);

/* Pushes nil, err for a status; returns 2. */
int pgs_push_error(lua_State *L, pgs *s, int status, const char *what);

void pgs_append_register(lua_State *L);   /* append, append_many, write */
void pgs_scan_register(lua_State *L);     /* read, read_all, fold, streams, kv_scan, kv_get, kv_count */
void pgs_admin_register(lua_State *L);    /* verify, backup */
void pgs_scavenge_register(lua_State *L); /* scavenge_stream, scavenged */

/* Calls the progress function at stack index fn (0: none), protected, with s->busy set to
 * `what` (any use of the store raises meanwhile). Returns 0, or -1 when it raised: its error is
 * then on top of the stack, for the caller to raise once it released what it holds. */
int pgs_report_progress(lua_State *L, pgs *s, const char *what, int fn, long long done, long long total);

/* The category of a stream: its name up to the first '-'. */
size_t pgs_category_len(const void *name, size_t len);
/* Pushes stream_info's table (pg_store.c; pg_scan.c's streams() pushes one per stream). */
void pgs_push_stream_info(lua_State *L, const char *name, size_t len, int64_t count, int64_t first,
                          int64_t last, int64_t created, int64_t updated);

#pragma GCC visibility pop
#endif
