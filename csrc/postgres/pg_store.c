/* chronicle.postgres: opening a store (URL, connection, schema creation and
 * format check), the connection helpers, and the small queries (head,
 * stream_info, stream_version, stats, wait). */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <lauxlib.h>
#include <xxhash.h>
#include "common/bytes.h"
#include "common/cerror.h"
#include "common/export.h"
#include "common/options.h"
#include "common/record.h"
#include "common/uuid.h"
#include "pg.h"

CHRONICLE_EXPORT int luaopen_chronicle_postgres(lua_State *L);

#define PGS_POLL_MS 1000   /* wait(): re-check the head this often even without a notification */

size_t pgs_category_len(const void *name, size_t len) { return record_category_len(name, len); }

/* ---------------------------------------------------------------- parameters */

void pgs_params_reset(pgs *s) {
  s->p.n = 0;
  s->p.ints.len = 0;
}

static int pgs_param_slot(pgs *s) {
  pgparams *p = &s->p;
  if (p->n == p->cap) {
    int cap = p->cap ? p->cap * 2 : 64;
    const char **v = realloc(p->values, sizeof *v * (size_t)cap);
    if (!v) return -1;
    p->values = v;
    int *l = realloc(p->lengths, sizeof *l * (size_t)cap);
    if (!l) return -1;
    p->lengths = l;
    int *f = realloc(p->formats, sizeof *f * (size_t)cap);
    if (!f) return -1;
    p->formats = f;
    p->cap = cap;
  }
  return p->n++;
}

int pgs_param_bytes(pgs *s, const void *data, size_t len) {
  int i = pgs_param_slot(s);
  if (i < 0) return PGS_NOMEM;
  s->p.values[i] = len ? data : "";
  s->p.lengths[i] = (int)len;
  s->p.formats[i] = 1;
  return PGS_OK;
}

int pgs_param_text(pgs *s, const char *text) {
  int i = pgs_param_slot(s);
  if (i < 0) return PGS_NOMEM;
  s->p.values[i] = text;
  s->p.lengths[i] = (int)strlen(text);
  s->p.formats[i] = 0;
  return PGS_OK;
}

/* Integers are kept by offset until the statement runs: the buffer may move
 * while more are added, so pgs_exec fixes the pointers up. */
int pgs_param_int(pgs *s, int64_t v) {
  unsigned char b[8];
  put_u64be(b, (uint64_t)v);
  size_t off = s->p.ints.len;
  if (buf_append(&s->p.ints, b, 8)) return PGS_NOMEM;
  int i = pgs_param_slot(s);
  if (i < 0) return PGS_NOMEM;
  s->p.values[i] = (const char *)(uintptr_t)(off + 1);   /* fixed up in pgs_exec */
  s->p.lengths[i] = -8;
  s->p.formats[i] = 1;
  return PGS_OK;
}

/* ---------------------------------------------------------------- statements */

static void pgs_note_conn_error(pgs *s, const char *what) {
  snprintf(s->err, sizeof s->err, "%s: %s", what, s->conn ? PQerrorMessage(s->conn) : "closed");
  size_t n = strlen(s->err);
  while (n && (s->err[n - 1] == '\n' || s->err[n - 1] == ' ')) s->err[--n] = '\0';
}

int pgs_result_status(pgs *s, PGresult *r) {
  ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return PGS_OK;
  const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  snprintf(s->sqlstate, sizeof s->sqlstate, "%s", state ? state : "");
  const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
  if (msg) snprintf(s->err, sizeof s->err, "%s", msg);
  else pgs_note_conn_error(s, "postgres");
  if (PQstatus(s->conn) == CONNECTION_BAD || (state && strncmp(state, "08", 2) == 0) ||
      (state && strncmp(state, "57P", 3) == 0))
    return PGS_UNAVAILABLE;
  return PGS_SQL;
}

static void pgs_params_fix(pgs *s) {
  pgparams *p = &s->p;
  for (int i = 0; i < p->n; i++)
    if (p->lengths[i] == -8) {
      p->values[i] = (const char *)s->p.ints.data + ((uintptr_t)p->values[i] - 1);
      p->lengths[i] = 8;
    }
}

/* ---------------------------------------------------------- prepared statements */

/* Statement texts that come back (every fixed statement, and the scanners' few shapes) are
 * prepared on the connection, so the server plans them once. A text is prepared the second
 * time it is seen (those built for one call, such as a multi-row INSERT, mostly never are).
 * A flight that fails after sending a prepare leaves it unsure which exist: the next
 * pgs_ready deallocates them all. Returns the name to use, or NULL for an unnamed statement;
 * *prepare says it must be prepared first. */
#define PGS_EVICTIONS_MAX 1024

static const char *pgs_stmt_name(pgs *s, const char *sql, int *prepare, char *name, size_t size) {
  *prepare = 0;
  uint64_t h = XXH3_64bits(sql, strlen(sql)) | 1;
  pgs_stmt *st = &s->stmts[h % PGS_STMTS];
  if (st->hash != h) {
    if (st->prepared && ++s->stmts_evicted > PGS_EVICTIONS_MAX) s->stmts_unsure = 1;
    st->hash = h;
    st->seen = 0;
    st->prepared = 0;
  }
  if (!st->prepared) {
    if (++st->seen < 2) return NULL;
    st->prepared = ++s->stmts_named;      /* an evicted text prepared again gets a new name */
    *prepare = 1;
    s->stmts_sent++;
  }
  snprintf(name, size, "c%u", st->prepared);
  return name;
}

static void pgs_stmts_forget(pgs *s) {
  memset(s->stmts, 0, sizeof s->stmts);
  s->stmts_unsure = s->stmts_sent = 0;
  s->stmts_evicted = s->stmts_named = 0;
}

/* After a flight or statement: a failure while prepares were in it makes them unsure. */
static int pgs_flight_done(pgs *s, int st) {
  if (st && s->stmts_sent) s->stmts_unsure = 1;
  s->stmts_sent = 0;
  return st;
}

/* Sends sql with the parameters added, as the prepared statement `name` or unnamed;
 * libpq's answer (0: not sent). */
static int pgs_send_query(pgs *s, const char *name, const char *sql) {
  pgparams *p = &s->p;
  return name ? PQsendQueryPrepared(s->conn, name, p->n, p->values, p->lengths, p->formats, 1)
              : PQsendQueryParams(s->conn, sql, p->n, NULL, p->values, p->lengths, p->formats, 1);
}

int pgs_send(pgs *s, const char *sql) {
  pgs_params_fix(s);
  if (!s->piped) {
    if (!PQenterPipelineMode(s->conn)) { pgs_note_conn_error(s, "postgres"); return PGS_UNAVAILABLE; }
    s->piped = 1;
    s->pending = 0;
  }
  pgparams *p = &s->p;
  char buf[24];
  int prepare;
  const char *name = pgs_stmt_name(s, sql, &prepare, buf, sizeof buf);
  if (prepare) {
    if (!PQsendPrepare(s->conn, name, sql, p->n, NULL)) goto failed;
    s->pending++;
  }
  if (!pgs_send_query(s, name, sql)) goto failed;
  s->pending++;
  return PGS_OK;
failed:
  pgs_note_conn_error(s, "postgres");
  s->sqlstate[0] = '\0';
  s->stmts_unsure = 1;
  return PQstatus(s->conn) == CONNECTION_BAD ? PGS_UNAVAILABLE : PGS_SQL;
}

/* Prepares a statement outside a pipeline (one round trip, once per text). */
static int pgs_prepare_now(pgs *s, const char *name, const char *sql) {
  PGresult *r = PQprepare(s->conn, name, sql, s->p.n, NULL);
  int st = pgs_result_status(s, r);
  PQclear(r);
  return pgs_flight_done(s, st);
}

int pgs_pipe_end(pgs *s) {
  if (!s->piped) return PGS_OK;
  int st = PGS_OK;
  if (!PQpipelineSync(s->conn)) {
    pgs_note_conn_error(s, "postgres");
    st = PGS_UNAVAILABLE;
  } else {
    /* Each statement's results end with a NULL; the sync's result ends it all. */
    for (int nulls = 0;;) {
      PGresult *r = PQgetResult(s->conn);
      if (r == NULL) {
        if (PQstatus(s->conn) == CONNECTION_BAD || ++nulls > s->pending + 1) {
          pgs_note_conn_error(s, "postgres");
          if (!st) st = PGS_UNAVAILABLE;
          break;
        }
        continue;
      }
      ExecStatusType es = PQresultStatus(r);
      if (es == PGRES_PIPELINE_SYNC) { PQclear(r); break; }
      if (es != PGRES_PIPELINE_ABORTED && st == PGS_OK) st = pgs_result_status(s, r);
      PQclear(r);
    }
  }
  if (PQstatus(s->conn) != CONNECTION_BAD) PQexitPipelineMode(s->conn);
  s->piped = 0;
  s->pending = 0;
  return pgs_flight_done(s, st);
}

/* Makes sql ready to run outside a pipeline: ends one under way, fixes the parameters up and
 * prepares the statement when it is due; *name is its prepared name, or NULL. */
static int pgs_statement_ready(pgs *s, const char *sql, char *buf, size_t size, const char **name) {
  if (s->piped) {
    int st = pgs_pipe_end(s);
    if (st) return st;
  }
  pgs_params_fix(s);
  int prepare;
  *name = pgs_stmt_name(s, sql, &prepare, buf, size);
  return prepare ? pgs_prepare_now(s, *name, sql) : PGS_OK;
}

int pgs_exec(pgs *s, const char *sql, PGresult **res) {
  char buf[24];
  const char *name;
  int st = pgs_statement_ready(s, sql, buf, sizeof buf, &name);
  if (st) return st;
  pgparams *p = &s->p;
  PGresult *r = name ? PQexecPrepared(s->conn, name, p->n, p->values, p->lengths, p->formats, 1)
                     : PQexecParams(s->conn, sql, p->n, NULL, p->values, p->lengths, p->formats, 1);
  st = pgs_result_status(s, r);
  if (st) { PQclear(r); return st; }
  *res = r;
  return PGS_OK;
}

int pgs_send_rows(pgs *s, const char *sql) {
  char buf[24];
  const char *name;
  int st = pgs_statement_ready(s, sql, buf, sizeof buf, &name);
  if (st) return st;
  if (!pgs_send_query(s, name, sql)) {
    pgs_note_conn_error(s, "postgres");
    s->sqlstate[0] = '\0';
    return PQstatus(s->conn) == CONNECTION_BAD ? PGS_UNAVAILABLE : PGS_SQL;
  }
  PQsetSingleRowMode(s->conn);
  return PGS_OK;
}

PGresult *pgs_next_row(pgs *s, int *st) {
  PGresult *r;
  while ((r = PQgetResult(s->conn)) != NULL) {
    ExecStatusType es = PQresultStatus(r);
    if (es == PGRES_SINGLE_TUPLE) return r;
    if (es != PGRES_TUPLES_OK && *st == PGS_OK) *st = pgs_result_status(s, r);
    PQclear(r);
  }
  if (*st == PGS_OK && PQstatus(s->conn) == CONNECTION_BAD) {
    pgs_note_conn_error(s, "postgres");
    *st = PGS_UNAVAILABLE;
  }
  return NULL;
}

int pgs_command(pgs *s, const char *sql) {
  if (s->piped) {
    int st = pgs_pipe_end(s);
    if (st) return st;
  }
  PGresult *r = PQexec(s->conn, sql);
  int st = pgs_result_status(s, r);
  PQclear(r);
  return st;
}

int64_t pgs_get_int(const PGresult *r, int row, int col) {
  if (PQgetisnull(r, row, col) || PQgetlength(r, row, col) != 8) return 0;
  return (int64_t)get_u64be((const unsigned char *)PQgetvalue(r, row, col));
}

static void pgs_quiet(void *arg, const char *message) {
  (void)arg;
  (void)message;
}

/* Session settings, after every (re)connection. */
static int pgs_session(pgs *s) {
  PQsetNoticeProcessor(s->conn, pgs_quiet, NULL);
  char *q = PQescapeIdentifier(s->conn, s->schema, strlen(s->schema));
  if (!q) { pgs_note_conn_error(s, "connect"); return PGS_UNAVAILABLE; }
  char sql[256];
  /* jit off: chronicle's statements are index lookups, which JIT compilation only slows
   * (a read's estimate, counting lookups that an initplan skips, passed jit_above_cost). */
  snprintf(sql, sizeof sql, "SET search_path TO %s; SET client_min_messages TO warning; SET jit TO off%s", q,
           s->nosync ? "; SET synchronous_commit TO off" : "");
  PQfreemem(q);
  s->listening = 0;
  s->piped = 0;
  s->head_known = 0;                      /* another server, or others wrote meanwhile */
  pgs_stmts_forget(s);                    /* a new session has none prepared */
  if (s->counts) memset(s->counts, 0, sizeof *s->counts * PGS_COUNTS);
  return pgs_command(s, sql);
}

int pgs_ready(pgs *s) {
  if (s->piped) pgs_pipe_end(s);
  if (PQstatus(s->conn) != CONNECTION_OK) {
    PQreset(s->conn);
    if (PQstatus(s->conn) != CONNECTION_OK) {
      pgs_note_conn_error(s, "cannot reconnect");
      return PGS_UNAVAILABLE;
    }
    int st = pgs_session(s);
    if (st) return st;
  }
  if (PQtransactionStatus(s->conn) != PQTRANS_IDLE) {
    int st = pgs_command(s, "ROLLBACK");
    if (st) return st;
  }
  if (s->stmts_unsure) {
    int st = pgs_command(s, "DEALLOCATE ALL");
    if (st) return st;
    pgs_stmts_forget(s);
  }
  return PGS_OK;
}

int pgs_read_head(pgs *s, int64_t *head) {
  pgs_params_reset(s);
  PGresult *r;
  int st = pgs_exec(s, "SELECT value FROM meta WHERE key = 'head'", &r);
  if (st) return st;
  if (PQntuples(r) != 1) {
    PQclear(r);
    snprintf(s->err, sizeof s->err, "the meta table has no head row");
    return PGS_CORRUPT;
  }
  *head = pgs_get_int(r, 0, 0);
  PQclear(r);
  return PGS_OK;
}

/* ---------------------------------------------------------------- errors */

static const char *pgs_code_of(pgs *s, int status) {
  switch (status) {
    case PGS_UNAVAILABLE: return "unavailable";
    case PGS_NOMEM: return "out_of_memory";
    case PGS_CORRUPT: return "corrupt";
    default: break;
  }
  const char *st = s->sqlstate;
  if (strcmp(st, "53100") == 0) return "disk_full";
  if (strcmp(st, "53200") == 0) return "out_of_memory";
  if (strcmp(st, "25006") == 0 || strcmp(st, "42501") == 0) return "readonly";
  if (strcmp(st, "40001") == 0 || strcmp(st, "40P01") == 0) return "busy";
  return "storage";
}

int pgs_push_error(lua_State *L, pgs *s, int status, const char *what) {
  lua_pushnil(L);
  if (status == PGS_NOMEM) snprintf(s->err, sizeof s->err, "out of memory");
  cerr_new(L, pgs_code_of(s, status), "%s: %s", what, s->err);
  if (status == PGS_SQL && s->sqlstate[0]) {
    lua_pushstring(L, s->sqlstate);
    lua_setfield(L, -2, "sqlstate");
  }
  return 2;
}

/* ---------------------------------------------------------------- the handle */

pgs *pgs_check(lua_State *L, int idx) {
  pgs *s = luaL_checkudata(L, idx, PGS_MT);
  if (s->conn == NULL) luaL_error(L, "attempt to use a closed store");
  /* The callback runs inside the check's transaction, on the connection every call uses. */
  if (s->busy)
    luaL_error(L, "cannot use the store while its %s runs (on PostgreSQL a progress callback may not use the store)",
               s->busy);
  if (s->pid != getpid())
    luaL_error(L, "store was opened by process %d and cannot be used after fork(); open it again", (int)s->pid);
  return s;
}

static void pgs_release(pgs *s) {
  if (s->conn) {
    /* In a forked child the connection is the parent's: closing it would end
     * the parent's session, so the child leaves it alone. */
    if (s->pid == getpid()) PQfinish(s->conn);
    s->conn = NULL;
  }
  free(s->conninfo);
  s->conninfo = NULL;
  free(s->target);
  s->target = NULL;
  buf_free(&s->scratch_bytes);
  buf_free(&s->scratch_events);
  buf_free(&s->scratch_streams);
  buf_free(&s->scratch_kv);
  buf_free(&s->sql);
  free(s->counts);
  s->counts = NULL;
  free(s->p.values);
  free(s->p.lengths);
  free(s->p.formats);
  s->p.values = NULL;
  s->p.lengths = s->p.formats = NULL;
  s->p.n = s->p.cap = 0;
  buf_free(&s->p.ints);
}

static int pgs_close(lua_State *L) {
  pgs *s = luaL_checkudata(L, 1, PGS_MT);
  if (s->busy) return luaL_error(L, "close: cannot close the store while its %s runs (from its progress callback)", s->busy);
  pgs_release(s);
  return 0;
}

static int pgs_is_open(lua_State *L) {
  pgs *s = luaL_checkudata(L, 1, PGS_MT);
  lua_pushboolean(L, s->conn != NULL);
  return 1;
}

static int pgs_tostring(lua_State *L) {
  pgs *s = luaL_checkudata(L, 1, PGS_MT);
  if (s->conn) lua_pushfstring(L, "chronicle store (%s)", s->target);
  else lua_pushliteral(L, "chronicle store (closed)");
  return 1;
}

/* ---------------------------------------------------------------- the URL */

static int pgs_hex(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Splits `url` into the conninfo without the schema parameter (malloc'd) and
 * the schema name. Returns NULL with *why set for a bad schema. */
static char *pgs_split_url(const char *url, char schema[PGS_MAX_SCHEMA + 1], const char **why) {
  size_t len = strlen(url);
  char *out = malloc(len + 1);
  if (!out) { *why = "out of memory"; return NULL; }
  snprintf(schema, PGS_MAX_SCHEMA + 1, "chronicle");
  const char *q = strchr(url, '?');
  if (!q) { memcpy(out, url, len + 1); return out; }
  size_t n = (size_t)(q - url);
  memcpy(out, url, n);
  int first = 1;
  const char *p = q + 1;
  while (*p) {
    const char *amp = strchr(p, '&');
    size_t plen = amp ? (size_t)(amp - p) : strlen(p);
    if (plen > 7 && strncmp(p, "schema=", 7) == 0) {
      size_t k = 0;
      for (size_t i = 7; i < plen; i++) {
        int c = (unsigned char)p[i];
        if (c == '%' && i + 2 < plen + 1 && pgs_hex(p[i + 1]) >= 0 && pgs_hex(p[i + 2]) >= 0) {
          c = pgs_hex(p[i + 1]) * 16 + pgs_hex(p[i + 2]);
          i += 2;
        }
        if (k == PGS_MAX_SCHEMA) { free(out); *why = "the schema name is longer than 50 bytes"; return NULL; }
        schema[k++] = (char)c;
      }
      schema[k] = '\0';
    } else if (plen == 7 && strncmp(p, "schema=", 7) == 0) {
      free(out);
      *why = "the schema parameter is empty";
      return NULL;
    } else if (plen) {
      out[n++] = first ? '?' : '&';
      first = 0;
      memcpy(out + n, p, plen);
      n += plen;
    }
    p += plen + (amp ? 1 : 0);
  }
  out[n] = '\0';
  for (const char *c = schema; *c; c++)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_') || (c == schema && *c >= '0' && *c <= '9')) {
      free(out);
      *why = "the schema name must be lowercase letters, digits and '_', not starting with a digit";
      return NULL;
    }
  return out;
}

/* The URL as shown in messages and stats: the password left out. */
static char *pgs_display_url(const char *url) {
  char *out = strdup(url);
  if (!out) return NULL;
  char *auth = strstr(out, "://");
  if (!auth) return out;
  auth += 3;
  char *at = strchr(auth, '@'), *slash = strchr(auth, '/');
  if (!at || (slash && slash < at)) return out;
  char *colon = memchr(auth, ':', (size_t)(at - auth));
  if (colon) memmove(colon, at, strlen(at) + 1);
  return out;
}

/* ---------------------------------------------------------------- schema */

static const char *const pgs_ddl =
  "CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value bigint NOT NULL, text_value text);"
  "CREATE TABLE IF NOT EXISTS events (position bigint PRIMARY KEY, stream bytea NOT NULL,"
  " version bigint NOT NULL, category bytea NOT NULL, type bytea NOT NULL, id bytea NOT NULL UNIQUE,"
  " record bytea NOT NULL, UNIQUE (stream, version));"
  "CREATE INDEX IF NOT EXISTS events_category ON events (category, position);"
  "CREATE TABLE IF NOT EXISTS streams (name bytea PRIMARY KEY, count bigint NOT NULL,"
  " first_position bigint NOT NULL, last_position bigint NOT NULL, created bigint NOT NULL,"
  " updated bigint NOT NULL);"
  "CREATE TABLE IF NOT EXISTS kv (space bytea NOT NULL, key bytea NOT NULL, value bytea NOT NULL,"
  " PRIMARY KEY (space, key));"
  /* An append sent in one round trip checks what it predicted with this: false aborts the
   * transaction with SQLSTATE CH001, and the append is sent again the long way. */
  "CREATE OR REPLACE FUNCTION expect_fresh(ok boolean) RETURNS boolean LANGUAGE plpgsql AS"
  " $f$BEGIN IF ok IS NOT TRUE THEN RAISE EXCEPTION 'a predicted head or stream count was stale'"
  " USING ERRCODE = 'CH001'; END IF; RETURN true; END$f$;";

enum { OPEN_OK, OPEN_NOT_FOUND, OPEN_NOT_A_STORE, OPEN_NEWER, OPEN_FAIL };

/* Reads the format and store id; creates the schema first unless readonly.
 * Two processes creating at once are serialized by an advisory lock. */
static int pgs_prepare_schema(pgs *s, int *status) {
  *status = PGS_OK;
  int st = PGS_OK;
  if (!s->readonly) {
    char *q = PQescapeIdentifier(s->conn, s->schema, strlen(s->schema));
    char *lit = PQescapeLiteral(s->conn, s->schema, strlen(s->schema));
    unsigned char id[16];
    char idtext[UUID_TEXT_LEN + 1];
    if (uuid_v7(id) != 0) memset(id, 0, sizeof id);
    uuid_format(id, idtext);
    idtext[UUID_TEXT_LEN] = '\0';
    size_t need = strlen(pgs_ddl) + 1024;
    char *sql = q && lit ? malloc(need) : NULL;
    if (sql) {
      snprintf(sql, need,
               "BEGIN; SELECT pg_advisory_xact_lock(hashtext('chronicle schema ' || %s));"
               "CREATE SCHEMA IF NOT EXISTS %s; SET LOCAL search_path TO %s; %s"
               "INSERT INTO meta VALUES ('format', %d, NULL), ('head', 0, NULL), ('store_id', 0, '%s')"
               " ON CONFLICT (key) DO NOTHING; COMMIT",
               lit, q, q, pgs_ddl, PGS_FORMAT, idtext);
      st = pgs_command(s, sql);
      free(sql);
    } else {
      pgs_note_conn_error(s, "open");
      st = PGS_NOMEM;
    }
    PQfreemem(q);
    PQfreemem(lit);
    if (st) { pgs_ready(s); *status = st; return OPEN_FAIL; }
  }
  pgs_params_reset(s);
  pgs_param_text(s, s->schema);
  PGresult *r;
  st = pgs_exec(s, "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = $1),"
                   " (SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = 'meta')", &r);
  if (st) { *status = st; return OPEN_FAIL; }
  int64_t has_schema = pgs_get_int(r, 0, 0), has_meta = pgs_get_int(r, 0, 1);
  PQclear(r);
  if (!has_schema) return OPEN_NOT_FOUND;
  if (!has_meta) return OPEN_NOT_A_STORE;
  pgs_params_reset(s);
  st = pgs_exec(s, "SELECT (SELECT value FROM meta WHERE key = 'format'),"
                   " convert_to((SELECT text_value FROM meta WHERE key = 'store_id'), 'UTF8')", &r);
  if (st) { *status = st; return OPEN_FAIL; }
  int ok = PQntuples(r) == 1 && !PQgetisnull(r, 0, 0);
  int64_t format = ok ? pgs_get_int(r, 0, 0) : 0;
  if (ok && !PQgetisnull(r, 0, 1) && PQgetlength(r, 0, 1) == UUID_TEXT_LEN)
    memcpy(s->store_id, PQgetvalue(r, 0, 1), UUID_TEXT_LEN);
  PQclear(r);
  if (!ok) return OPEN_NOT_A_STORE;
  if (format > PGS_FORMAT) {
    snprintf(s->err, sizeof s->err, "schema '%s' has format %lld; this build reads format %d",
             s->schema, (long long)format, PGS_FORMAT);
    return OPEN_NEWER;
  }
  return OPEN_OK;
}

/* The code for a failed connection, from libpq's message. */
static const char *pgs_connect_code(const char *msg) {
  if (strstr(msg, "password authentication failed") || strstr(msg, "no password supplied") ||
      strstr(msg, "authentication failed") || strstr(msg, "no pg_hba.conf entry"))
    return "auth_failed";
  if (strstr(msg, "does not exist") && strstr(msg, "database")) return "not_found";
  if (strstr(msg, "invalid") || strstr(msg, "unexpected") || strstr(msg, "missing"))
    return strstr(msg, "could not") ? "unavailable" : "invalid_url";
  return "unavailable";
}

/* postgres.open(url, opts) -> handle | nil, err */
static int pgs_open(lua_State *L) {
  const char *url = luaL_checkstring(L, 1);
  static const opt_spec options[] = {
    { "durability", OPT_STRING }, { "readonly", OPT_BOOLEAN }, { "map_size", OPT_INTEGER },
    { "max_event_size", OPT_INTEGER }, { NULL, 0 }
  };
  if (lua_isnoneornil(L, 2)) { lua_settop(L, 1); lua_newtable(L); }
  opt_check(L, 2, "open", options);
  lua_getfield(L, 2, "readonly");
  int readonly = lua_toboolean(L, -1);
  lua_getfield(L, 2, "durability");
  const char *dur = lua_tostring(L, -1);
  if (!lua_isnil(L, -1) && (lua_type(L, -1) != LUA_TSTRING ||
      (strcmp(dur, "full") && strcmp(dur, "nometasync") && strcmp(dur, "nosync"))))
    luaL_error(L, "open: option 'durability' must be \"full\", \"nometasync\" or \"nosync\" (got %s)",
               dur ? dur : luaL_typename(L, -1));
  int nosync = dur && strcmp(dur, "nosync") == 0;
  lua_getfield(L, 2, "max_event_size");
  lua_Integer max_event = PGS_DEFAULT_MAX_EVENT;
  if (!lua_isnil(L, -1)) {
    int ok;
    max_event = lua_tointegerx(L, -1, &ok);
    if (!ok || max_event < 256) luaL_error(L, "open: option 'max_event_size' must be an integer >= 256");
    if (max_event > 0x3fffffff) luaL_error(L, "open: option 'max_event_size' must be below 1 GiB");
  }
  lua_pop(L, 3);

  pgs *s = lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  luaL_setmetatable(L, PGS_MT);
  buf_init(&s->scratch_bytes);
  buf_init(&s->scratch_events);
  buf_init(&s->scratch_streams);
  buf_init(&s->scratch_kv);
  buf_init(&s->sql);
  buf_init(&s->p.ints);
  s->pid = getpid();
  s->readonly = readonly;
  s->nosync = nosync;
  s->max_event_size = (size_t)max_event;

  const char *why = NULL;
  s->conninfo = pgs_split_url(url, s->schema, &why);
  s->target = pgs_display_url(url);
  if (!s->conninfo || !s->target) {
    const char *shown = s->target ? s->target : "";
    lua_pushnil(L);
    cerr_new(L, "invalid_url", "cannot open %s: %s", shown, why ? why : "out of memory");
    pgs_release(s);
    return 2;
  }
  snprintf(s->channel, sizeof s->channel, "chronicle.%s", s->schema);
  char *perr = NULL;
  PQconninfoOption *opts = PQconninfoParse(s->conninfo, &perr);
  if (!opts) {
    lua_pushnil(L);
    cerr_new(L, "invalid_url", "cannot open %s: %s", s->target, perr ? perr : "out of memory");
    PQfreemem(perr);
    pgs_release(s);
    return 2;
  }
  PQconninfoFree(opts);
  s->conn = PQconnectdb(s->conninfo);
  if (!s->conn || PQstatus(s->conn) != CONNECTION_OK) {
    char msg[600];
    snprintf(msg, sizeof msg, "%s", s->conn ? PQerrorMessage(s->conn) : "out of memory");
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' ')) msg[--n] = '\0';
    lua_pushnil(L);
    cerr_new(L, pgs_connect_code(msg), "cannot open %s: %s", s->target, msg);
    pgs_release(s);
    return 2;
  }
  int st = pgs_session(s);
  int rc = OPEN_FAIL;
  if (!st) rc = pgs_prepare_schema(s, &st);
  if (rc == OPEN_OK) return 1;
  lua_pushnil(L);
  switch (rc) {
    case OPEN_NOT_FOUND:
      cerr_new(L, "not_found", "cannot open %s: schema '%s' does not exist (opened read-only, it is not created)",
               s->target, s->schema);
      break;
    case OPEN_NOT_A_STORE:
      cerr_new(L, "not_a_store", "cannot open %s: schema '%s' holds no chronicle store", s->target, s->schema);
      break;
    case OPEN_NEWER:
      cerr_new(L, "unsupported_format", "cannot open %s: %s", s->target, s->err);
      break;
    default:
      lua_pop(L, 1);                 /* pgs_push_error pushes its own nil */
      pgs_push_error(L, s, st, strcmp(s->sqlstate, "25006") == 0
                                   ? "open (the server is read-only, a hot standby? open with readonly = true)"
                                   : "open");
  }
  pgs_release(s);
  return 2;
}

/* ---------------------------------------------------------------- small queries */

static int pgs_head(lua_State *L) {
  pgs *s = pgs_check(L, 1);
  int64_t head = 0;
  int st = pgs_ready(s);
  if (!st) st = pgs_read_head(s, &head);
  if (st) return pgs_push_error(L, s, st, "head");
  lua_pushinteger(L, (lua_Integer)head);
  return 1;
}

/* now() -> ns since the epoch by the server's clock, the one clock every host of the store shares. */
static int pgs_now(lua_State *L) {
  pgs *s = pgs_check(L, 1);
  int st = pgs_ready(s);
  PGresult *r = NULL;
  if (!st) {
    pgs_params_reset(s);
    st = pgs_exec(s, "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint", &r);
  }
  if (st) return pgs_push_error(L, s, st, "now");
  int64_t us = PQntuples(r) == 1 ? pgs_get_int(r, 0, 0) : 0;
  PQclear(r);
  lua_pushinteger(L, (lua_Integer)us * 1000);
  return 1;
}

typedef struct pgs_stream_row {
  int64_t count, first_position, last_position, created, updated;
} pgs_stream_row;

static const char *pgs_check_stream(lua_State *L, int idx, size_t *len) {
  luaL_checktype(L, idx, LUA_TSTRING);
  const char *name = lua_tolstring(L, idx, len);
  if (*len == 0 || *len > RECORD_MAX_STREAM) luaL_argerror(L, idx, "stream name must be 1 to 200 bytes");
  return name;
}

/* Returns PGS_OK with *found set. */
static int pgs_stream_row_get(pgs *s, const char *name, size_t len, pgs_stream_row *m, int *found) {
  int st = pgs_ready(s);
  if (st) return st;
  pgs_params_reset(s);
  pgs_param_bytes(s, name, len);
  PGresult *r;
  st = pgs_exec(s, "SELECT count, first_position, last_position, created, updated FROM streams WHERE name = $1", &r);
  if (st) return st;
  *found = PQntuples(r) == 1;
  if (*found) {
    m->count = pgs_get_int(r, 0, 0);
    m->first_position = pgs_get_int(r, 0, 1);
    m->last_position = pgs_get_int(r, 0, 2);
    m->created = pgs_get_int(r, 0, 3);
    m->updated = pgs_get_int(r, 0, 4);
  }
  PQclear(r);
  return PGS_OK;
}

void pgs_push_stream_info(lua_State *L, const char *name, size_t len, int64_t count, int64_t first,
                          int64_t last, int64_t created, int64_t updated) {
  lua_createtable(L, 0, 8);
  lua_pushlstring(L, name, len);
  lua_setfield(L, -2, "stream");
  lua_pushlstring(L, name, pgs_category_len(name, len));
  lua_setfield(L, -2, "category");
  lua_pushinteger(L, (lua_Integer)count - 1);
  lua_setfield(L, -2, "version");
  lua_pushinteger(L, (lua_Integer)count);
  lua_setfield(L, -2, "count");
  lua_pushinteger(L, (lua_Integer)first);
  lua_setfield(L, -2, "first_position");
  lua_pushinteger(L, (lua_Integer)last);
  lua_setfield(L, -2, "last_position");
  lua_pushinteger(L, (lua_Integer)created);
  lua_setfield(L, -2, "created");
  lua_pushinteger(L, (lua_Integer)updated);
  lua_setfield(L, -2, "updated");
}

static int pgs_stream_info(lua_State *L) {
  pgs *s = pgs_check(L, 1);
  size_t len;
  const char *name = pgs_check_stream(L, 2, &len);
  pgs_stream_row m;
  int found = 0;
  int st = pgs_stream_row_get(s, name, len, &m, &found);
  if (st) return pgs_push_error(L, s, st, "stream_info");
  if (!found) {
    cerr_result(L, "not_found", "stream '%s' does not exist", name);
    lua_pushvalue(L, 2);
    lua_setfield(L, -2, "stream");
    return 2;
  }
  pgs_push_stream_info(L, name, len, m.count, m.first_position, m.last_position, m.created, m.updated);
  return 1;
}

static int pgs_stream_version(lua_State *L) {
  pgs *s = pgs_check(L, 1);
  size_t len;
  const char *name = pgs_check_stream(L, 2, &len);
  pgs_stream_row m;
  int found = 0;
  int st = pgs_stream_row_get(s, name, len, &m, &found);
  if (st) return pgs_push_error(L, s, st, "stream_version");
  lua_pushinteger(L, found ? (lua_Integer)m.count - 1 : -1);
  return 1;
}

static int pgs_stats(lua_State *L) {
  pgs *s = pgs_check(L, 1);
  int st = pgs_ready(s);
  PGresult *r = NULL;
  if (!st) {
    pgs_params_reset(s);
    st = pgs_exec(s, "SELECT (SELECT value FROM meta WHERE key = 'head')"
                     " - coalesce((SELECT value FROM meta WHERE key = 'scavenged'), 0), (SELECT count(*) FROM streams),"
                     " (SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c"
                     "   JOIN pg_namespace n ON n.oid = c.relnamespace"
                     "   WHERE n.nspname = current_schema() AND c.relkind = 'r'),"
                     " current_setting('block_size')::bigint", &r);
  }
  if (st) return pgs_push_error(L, s, st, "stats");
  int64_t events = pgs_get_int(r, 0, 0), streams = pgs_get_int(r, 0, 1), bytes = pgs_get_int(r, 0, 2),
          page = pgs_get_int(r, 0, 3);
  PQclear(r);
  int64_t head = 0;
  if ((st = pgs_read_head(s, &head))) return pgs_push_error(L, s, st, "stats");
  lua_createtable(L, 0, 10);
  lua_pushinteger(L, (lua_Integer)events);    /* positions are given out gap-free: what scavenging left */
  lua_setfield(L, -2, "events");
  lua_pushinteger(L, (lua_Integer)head);
  lua_setfield(L, -2, "head");
  lua_pushinteger(L, (lua_Integer)streams);
  lua_setfield(L, -2, "streams");
  lua_pushinteger(L, (lua_Integer)bytes);
  lua_setfield(L, -2, "bytes");
  lua_pushinteger(L, (lua_Integer)bytes);
  lua_setfield(L, -2, "file_size");
  lua_pushinteger(L, (lua_Integer)bytes);
  lua_setfield(L, -2, "used_bytes");
  lua_pushinteger(L, (lua_Integer)page);
  lua_setfield(L, -2, "page_size");
  lua_pushinteger(L, PGS_FORMAT);
  lua_setfield(L, -2, "format");
  lua_pushstring(L, s->store_id);
  lua_setfield(L, -2, "store_id");
  lua_pushstring(L, s->target);
  lua_setfield(L, -2, "path");
  lua_pushliteral(L, "postgres");
  lua_setfield(L, -2, "backend");
  lua_pushstring(L, s->schema);
  lua_setfield(L, -2, "schema");
  return 1;
}

/* ---------------------------------------------------------------- wait */

static double pgs_clock(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int pgs_listen(pgs *s) {
  if (s->listening) return PGS_OK;
  char *q = PQescapeIdentifier(s->conn, s->channel, strlen(s->channel));
  if (!q) return PGS_NOMEM;
  char sql[160];
  snprintf(sql, sizeof sql, "LISTEN %s", q);
  PQfreemem(q);
  int st = pgs_command(s, sql);
  /* A hot standby refuses LISTEN: wait polls there instead. */
  if (st == PGS_SQL) { s->listening = -1; return PGS_OK; }
  if (!st) s->listening = 1;
  return st;
}

/* Frees the notifications libpq has read (or reads now without blocking). */
static void pgs_drain_notifies(pgs *s) {
  PGnotify *n;
  if (!s->conn || PQstatus(s->conn) != CONNECTION_OK) return;
  PQconsumeInput(s->conn);
  while ((n = PQnotifies(s->conn)) != NULL) PQfreemem(n);
}

/* store:wait_fd() -> the connection's socket, which becomes readable when a NOTIFY of an
 * append arrives, for an event loop to poll; store:wait(after, 0) drains it. nil where
 * appends notify nothing (a hot standby: wait polls there). The socket changes when the
 * connection is made again: ask again after every wake. */
static int pgs_wait_fd(lua_State *L) {
  pgs *s = pgs_check(L, 1);
  int st = pgs_ready(s);
  if (!st) st = pgs_listen(s);
  if (st) return pgs_push_error(L, s, st, "wait_fd");
  int fd = s->listening == 1 ? PQsocket(s->conn) : -1;
  if (fd < 0) lua_pushnil(L);
  else lua_pushinteger(L, fd);
  return 1;
}

/* store:wait(after [, timeout]) -> head (> after) | false on timeout | nil, err.
 * Woken by the NOTIFY every append sends in its transaction. */
static int pgs_wait(lua_State *L) {
  pgs *s = pgs_check(L, 1);
  lua_Integer after = luaL_checkinteger(L, 2);
  luaL_argcheck(L, after >= 0, 2, "position must be >= 0");
  /* No timeout waits for ever; a negative or NaN one is a mistake, not "for ever". */
  double timeout = luaL_optnumber(L, 3, -1);
  if (!lua_isnoneornil(L, 3))
    luaL_argcheck(L, timeout >= 0, 3, "timeout must be a number of seconds >= 0 (nil: no timeout)");
  double deadline = timeout < 0 ? -1 : pgs_clock() + timeout;
  pgs_drain_notifies(s);                  /* what woke an event loop polling wait_fd */
  int64_t head = 0;
  int st;
  for (;;) {
    if ((st = pgs_ready(s))) break;
    if ((st = pgs_listen(s))) break;
    if ((st = pgs_read_head(s, &head))) break;
    if (head > after) break;
    int wait_ms = s->listening == 1 ? PGS_POLL_MS : 50;
    if (deadline >= 0) {
      double left = deadline - pgs_clock();
      if (left <= 0) break;
      if (left * 1000 < wait_ms) wait_ms = (int)(left * 1000) + 1;
    }
    /* Drain notifications already read, then sleep on the socket. */
    PGnotify *n;
    int got = 0;
    PQconsumeInput(s->conn);
    while ((n = PQnotifies(s->conn)) != NULL) { PQfreemem(n); got = 1; }
    if (got) continue;
    struct pollfd p = { PQsocket(s->conn), POLLIN, 0 };
    if (p.fd < 0) { st = PGS_UNAVAILABLE; pgs_note_conn_error(s, "wait"); break; }
    if (poll(&p, 1, wait_ms) > 0) {
      if (!PQconsumeInput(s->conn)) { pgs_note_conn_error(s, "wait"); st = PGS_UNAVAILABLE; break; }
      while ((n = PQnotifies(s->conn)) != NULL) PQfreemem(n);
    }
  }
  if (st) return pgs_push_error(L, s, st, "wait");
  if (head > after) lua_pushinteger(L, (lua_Integer)head);
  else lua_pushboolean(L, 0);
  return 1;
}

static const luaL_Reg pgs_methods[] = {
  { "close", pgs_close },
  { "is_open", pgs_is_open },
  { "head", pgs_head },
  { "now", pgs_now },
  { "stream_info", pgs_stream_info },
  { "stream_version", pgs_stream_version },
  { "stats", pgs_stats },
  { "wait", pgs_wait },
  { "wait_fd", pgs_wait_fd },
  { NULL, NULL }
};

static const luaL_Reg pgs_metamethods[] = {
  { "__gc", pgs_close },
  { "__close", pgs_close },
  { "__tostring", pgs_tostring },
  { "__index", NULL },
  { NULL, NULL }
};

int luaopen_chronicle_postgres(lua_State *L) {
  lua_newtable(L);
  cerr_open(L);
  luaL_newmetatable(L, PGS_MT);
  luaL_setfuncs(L, pgs_metamethods, 0);
  luaL_newlibtable(L, pgs_methods);
  luaL_setfuncs(L, pgs_methods, 0);
  pgs_append_register(L);
  pgs_scan_register(L);
  pgs_admin_register(L);
  pgs_scavenge_register(L);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_pushcfunction(L, pgs_open);
  lua_setfield(L, -2, "open");
  lua_pushinteger(L, PGS_FORMAT);
  lua_setfield(L, -2, "FORMAT");
  lua_pushinteger(L, PQlibVersion());
  lua_setfield(L, -2, "LIBPQ_VERSION");
  return 1;
}
