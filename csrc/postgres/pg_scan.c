/* Reading on PostgreSQL: read, read_all, fold, streams, kv_scan, kv_get and
 * kv_count. A scanner runs one statement per batch (one snapshot each, as
 * LMDB's scanner takes one read transaction per batch), copies the rows into
 * buffers it owns and clears the result before anything is pushed to Lua. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include "common/bytes.h"
#include "common/cerror.h"
#include "common/codec.h"
#include "common/event_batch.h"
#include "common/event_table.h"
#include "common/options.h"
#include "common/record.h"
#include "common/retention.h"
#include "common/uuid.h"
#include "pg.h"

#define PGSCAN_MT "chronicle.postgres.scanner"
#define SCAN_BATCH 256           /* rows of a scan's first batch */
#define SCAN_BATCH_MAX 4096      /* ... growing while batches stay small */
#define SCAN_BATCH_BYTES (1u << 20)
#define SCAN_MAX_TYPES 64

void pgs_push_stream_info(lua_State *L, const char *name, size_t len, int64_t count, int64_t first,
                          int64_t last, int64_t created, int64_t updated);

enum { SCAN_STREAM, SCAN_ALL, SCAN_CATEGORY, SCAN_STREAMS, SCAN_KV };

typedef struct scanner {
  int mode, backward, done;
  uint64_t next, bound;
  int has_bound;
  uint64_t until_position;
  int has_until_position;
  int64_t until_time;
  int has_until_time;
  int64_t remaining;
  unsigned char name[PGS_MAX_KEY + 1];     /* stream or category; streams/kv: the prefix */
  size_t name_len;
  unsigned char last[PGS_MAX_KEY + 1];     /* streams/kv: the last key returned */
  size_t last_len;
  int started;
  unsigned char after[RECORD_MAX_STREAM];  /* streams: `after` */
  size_t after_len;
  int has_after;
  unsigned char space[PGS_MAX_SPACE];      /* kv */
  size_t space_len;
  unsigned char from[PGS_MAX_KEY], to[PGS_MAX_KEY];
  size_t from_len, to_len;
  int has_from, has_to;
  size_t ntypes;
  unsigned char type_len[SCAN_MAX_TYPES];
  char (*types)[RECORD_MAX_TYPE];          /* malloc'd when a types filter is given */
  unsigned fields;                          /* the event fields to build (event_table.h) */
  buf records, items, sql;
  size_t at, count;
  int limit;                                /* rows per statement: grows while batches stay under 1 MiB */
  int err_status;                           /* PGS_* met after the batch's good records */
  int64_t now;                              /* the clock max_age compares against (retention.h) */
  int show_hidden;                          /* read_all{hidden = true}: metadata hides nothing */
  int64_t hidden_upto;                      /* forward stream scans: versions up to it not yielded are
                                             * hidden or scavenged: fold's last_version */
  int64_t err_position;
  int revealed;                             /* read, read_all: the reveal function (user value 2) opened an event */
  char err[600];
} scanner;

#define SCAN_ITEMS(sc) ((scan_item *)(sc)->items.data)

static void scan_release(scanner *sc) {
  sc->done = 1;
  sc->at = sc->count = 0;
  buf_free(&sc->records);
  buf_free(&sc->items);
  buf_free(&sc->sql);
  free(sc->types);
  sc->types = NULL;
}

static int scan_gc(lua_State *L) {
  scan_release(luaL_checkudata(L, 1, PGSCAN_MT));
  return 0;
}

/* A read that revealed personal data ends: its reveal function wipes the keys it opened. */
static void scan_end_reveal(lua_State *L, scanner *sc, int sc_idx) {
  if (!sc->revealed) return;
  sc->revealed = 0;
  lua_getiuservalue(L, sc_idx, 2);
  event_reveal_end(L, lua_gettop(L));
  lua_pop(L, 1);
}

/* __close (a generic for left early): also ends the reveal, which __gc cannot call. */
static int scan_close(lua_State *L) {
  scanner *sc = luaL_checkudata(L, 1, PGSCAN_MT);
  scan_end_reveal(L, sc, 1);
  scan_release(sc);
  return 0;
}

/* Pushes the event of the record p[0..len) at `pos`, opened by the read's reveal function (if
 * any) when it carries personal data; raises the reveal's error. */
static void scan_push_event(lua_State *L, scanner *sc, const unsigned char *p, size_t len, uint64_t pos) {
  int reveal = lua_getiuservalue(L, 1, 2) == LUA_TNIL ? 0 : lua_gettop(L);
  if (!event_push_open(L, p, len, pos, NULL, sc->fields, reveal, &sc->revealed)) {
    sc->revealed = 0;              /* a reveal that fails has ended itself */
    scan_release(sc);
    lua_error(L);
  }
  lua_remove(L, -2);               /* the reveal function, or nil */
}

static pgs *scan_store(lua_State *L, int idx) {
  lua_getiuservalue(L, idx, 1);
  pgs *s = pgs_check(L, -1);
  lua_pop(L, 1);
  return s;
}

/* The options table at idx, checked: its index, or 0 when absent. */
static int scan_options(lua_State *L, int idx, const char *fn, const opt_spec *allowed) {
  return opt_check(L, idx, fn, allowed);
}

static void scan_copy_name(lua_State *L, int idx, const char *fn, const char *what, unsigned char *out,
                           size_t *out_len, size_t max) {
  size_t len;
  const char *name = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &len) : NULL;
  if (name == NULL || len == 0 || len > max) luaL_error(L, "%s: %s must be a string of 1 to %d bytes", fn, what, (int)max);
  memcpy(out, name, len);
  *out_len = len;
}

static void scan_set_types(lua_State *L, scanner *sc, int opts, const char *fn) {
  lua_getfield(L, opts, "types");
  if (lua_isnil(L, -1)) { lua_pop(L, 1); return; }
  if (lua_type(L, -1) == LUA_TSTRING) {
    lua_createtable(L, 1, 0);
    lua_insert(L, -2);
    lua_rawseti(L, -2, 1);
  }
  if (!lua_istable(L, -1)) luaL_error(L, "%s: option 'types' must be a list of type names", fn);
  lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
  if (n == 0 || n > SCAN_MAX_TYPES) luaL_error(L, "%s: option 'types' must list 1 to %d type names", fn, SCAN_MAX_TYPES);
  sc->types = calloc(SCAN_MAX_TYPES, RECORD_MAX_TYPE);
  if (!sc->types) luaL_error(L, "out of memory");
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    size_t len;
    const char *t = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    if (t == NULL || len == 0 || len > RECORD_MAX_TYPE)
      luaL_error(L, "%s: types[%I] must be a string of 1 to %d bytes", fn, i, RECORD_MAX_TYPE);
    memcpy(sc->types[sc->ntypes], t, len);
    sc->type_len[sc->ntypes++] = (unsigned char)len;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

static scanner *scan_new(lua_State *L, int mode) {
  scanner *sc = lua_newuserdatauv(L, sizeof *sc, 2);   /* the store, the reveal function */
  memset(sc, 0, sizeof *sc);
  buf_init(&sc->records);
  buf_init(&sc->items);
  buf_init(&sc->sql);
  sc->mode = mode;
  sc->remaining = -1;
  sc->fields = EVENT_ALL_FIELDS;
  sc->now = retention_now();
  sc->hidden_upto = -1;
  luaL_setmetatable(L, PGSCAN_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  return sc;
}

static void scan_configure(lua_State *L, scanner *sc, int opts, int name_idx, const char *fn) {
  int backward = 0;
  if (opts) {
    sc->fields = event_fields_option(L, opts, fn);
    lua_getfield(L, opts, "backward");
    backward = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  sc->backward = backward;
  lua_Integer count = opt_integer(L, opts, fn, "count", -1, 0);
  sc->remaining = count;
  if (count == 0) sc->done = 1;
  lua_Integer until_position = opt_integer(L, opts, fn, "until_position", -1, 0);
  sc->has_until_position = until_position >= 0;
  sc->until_position = until_position >= 0 ? (uint64_t)until_position : 0;
  if (opts) {
    lua_getfield(L, opts, "until_time");
    if (!lua_isnil(L, -1)) {
      int ok;
      sc->until_time = lua_tointegerx(L, -1, &ok);
      if (!ok) luaL_error(L, "%s: option 'until_time' must be an integer (ns since the epoch)", fn);
      sc->has_until_time = 1;
    }
    lua_pop(L, 1);
  }
  lua_Integer to = opt_integer(L, opts, fn, "to", -1, 0);
  sc->has_bound = to >= 0;
  sc->bound = to >= 0 ? (uint64_t)to : 0;
  if (sc->mode == SCAN_STREAM) {
    scan_copy_name(L, name_idx, fn, "stream", sc->name, &sc->name_len, RECORD_MAX_STREAM);
    lua_Integer from = opt_integer(L, opts, fn, "from", backward ? -1 : 0, backward ? -1 : 0);
    sc->next = from < 0 ? (uint64_t)INT64_MAX : (uint64_t)from;
    return;
  }
  lua_Integer from = opt_integer(L, opts, fn, "from", backward ? -1 : 1, backward ? -1 : 0);
  sc->next = from < 0 ? (uint64_t)INT64_MAX : (uint64_t)(from == 0 && !backward ? 1 : from);
  if (opts) {
    lua_getfield(L, opts, "category");
    if (!lua_isnil(L, -1)) {
      scan_copy_name(L, lua_gettop(L), fn, "option 'category'", sc->name, &sc->name_len, RECORD_MAX_STREAM);
      if (pgs_category_len(sc->name, sc->name_len) != sc->name_len)
        luaL_error(L, "%s: option 'category' cannot contain '-'", fn);
      sc->mode = SCAN_CATEGORY;
    }
    lua_pop(L, 1);
    scan_set_types(L, sc, opts, fn);
    lua_getfield(L, opts, "hidden");       /* read_all only (fold's options have no `hidden`) */
    sc->show_hidden = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
}

static int scan_type_wanted(const scanner *sc, const record_view *v) {
  if (sc->types == NULL) return 1;
  for (size_t i = 0; i < sc->ntypes; i++)
    if (sc->type_len[i] == v->type_len && memcmp(sc->types[i], v->type, v->type_len) == 0) return 1;
  return 0;
}

static int scan_sql(scanner *sc, const char *text) { return buf_append(&sc->sql, text, strlen(text)) ? PGS_NOMEM : 0; }

static int scan_sqlf(scanner *sc, const char *fmt, int n) {
  char part[128];
  int len = snprintf(part, sizeof part, fmt, n);
  return buf_append(&sc->sql, part, (size_t)len) ? PGS_NOMEM : 0;
}

/* The lifecycle rule in a row's metadata column (NULL: none). Returns 0, or -1 when it does not parse. */
static int scan_row_rule(const PGresult *r, int col, stream_rule *rule) {
  if (PQgetisnull(r, 0, col)) {
    memset(rule, 0, sizeof *rule);
    rule->max_count = rule->max_age_ns = -1;
    return 0;
  }
  return retention_parse((const unsigned char *)PQgetvalue(r, 0, col), (size_t)PQgetlength(r, 0, col), rule);
}

static void scan_hidden_upto(scanner *sc, uint64_t upto) {
  if (sc->has_bound && upto > sc->bound) upto = sc->bound;
  if ((int64_t)upto > sc->hidden_upto) sc->hidden_upto = (int64_t)upto;
}

/* One batch of events (stream, whole log, category). Each row comes with its
 * stream's metadata row and event count (retention.h): a stream read starts
 * from the streams row, so even a stream whose events are all gone answers. */
static int scan_fill_events(scanner *sc, pgs *s) {
  sc->sql.len = 0;
  pgs_params_reset(s);
  int n = 0, st = 0, stream = sc->mode == SCAN_STREAM;
  const char *col = stream ? "version" : "e.position";
  if (stream) {
    /* The stream's metadata row and count once per statement (initplans), and one row even
     * when no event comes back (the LEFT JOIN to a one-row VALUES: a nested loop, so the
     * events keep the inner query's order). */
    st |= scan_sql(sc, "SELECT e.position, e.record, (SELECT value FROM kv WHERE space = '" RETENTION_SPACE "'::bytea"
                       " AND key = $1::bytea), (SELECT count FROM streams WHERE name = $1::bytea)"
                       " FROM (VALUES (1)) one LEFT JOIN (SELECT position, record, version FROM events"
                       " WHERE stream = $1::bytea AND ");
    st |= pgs_param_bytes(s, sc->name, sc->name_len);
    n = 1;
  } else {
    /* Per row, the stream's metadata row and count, looked up only when the store has any
     * metadata row (an initplan evaluated once: most stores pay nothing per row). */
    st |= scan_sql(sc, "SELECT e.position, e.record, CASE WHEN (SELECT EXISTS (SELECT 1 FROM kv WHERE space = '"
                       RETENTION_SPACE "'::bytea)) THEN (SELECT m.value FROM kv m WHERE m.space = '" RETENTION_SPACE
                       "'::bytea AND m.key = e.stream) END, CASE WHEN (SELECT EXISTS (SELECT 1 FROM kv WHERE space = '"
                       RETENTION_SPACE "'::bytea)) THEN (SELECT s.count FROM kv m JOIN streams s ON s.name = m.key"
                       " WHERE m.space = '" RETENTION_SPACE "'::bytea AND m.key = e.stream) END FROM events e WHERE ");
    if (sc->mode == SCAN_CATEGORY) {
      st |= scan_sqlf(sc, "e.category = $%d::bytea AND ", ++n);
      st |= pgs_param_bytes(s, sc->name, sc->name_len);
    }
  }
  st |= scan_sql(sc, col);
  st |= scan_sqlf(sc, sc->backward ? " <= $%d::int8" : " >= $%d::int8", ++n);
  st |= pgs_param_int(s, (int64_t)sc->next);
  if (sc->has_bound) {
    st |= scan_sql(sc, " AND ");
    st |= scan_sql(sc, col);
    st |= scan_sqlf(sc, sc->backward ? " >= $%d::int8" : " <= $%d::int8", ++n);
    st |= pgs_param_int(s, (int64_t)sc->bound);
  }
  /* The types filter runs in SQL unless until_time must see every event in order. */
  int sql_types = sc->types && !sc->has_until_time;
  if (sql_types) {
    st |= scan_sql(sc, stream ? " AND type IN (" : " AND e.type IN (");
    for (size_t i = 0; i < sc->ntypes; i++) {
      st |= scan_sqlf(sc, i ? ",$%d::bytea" : "$%d::bytea", ++n);
      st |= pgs_param_bytes(s, sc->types[i], sc->type_len[i]);
    }
    st |= scan_sql(sc, ")");
  }
  st |= scan_sql(sc, " ORDER BY ");
  st |= scan_sql(sc, col);
  st |= scan_sql(sc, sc->backward ? " DESC" : "");
  if (sc->limit == 0) sc->limit = SCAN_BATCH;
  int limit = sc->limit;
  if (sc->remaining > 0 && sc->remaining < limit && (sql_types || !sc->types)) limit = (int)sc->remaining;
  st |= scan_sqlf(sc, " LIMIT %d", limit);
  if (stream) st |= scan_sql(sc, ") e ON true");
  if (st || buf_append(&sc->sql, "", 1)) return PGS_NOMEM;
  /* Rows arrive one at a time (single-row mode): copying stops at SCAN_BATCH_BYTES, so a
   * batch of large events holds about that much; the rows after it are read again next time. */
  if ((st = pgs_send_rows(s, (const char *)sc->sql.data))) return st;
  int rows = 0, stop = 0, end = 0, stream_rows = 0;
  uint64_t stream_count = 0;
  PGresult *r;
  while ((r = pgs_next_row(s, &st)) != NULL) {
    if (stop) { PQclear(r); continue; }
    stream_rule rule;
    if (scan_row_rule(r, 2, &rule) != 0) {
      sc->err_status = PGS_CORRUPT;
      snprintf(sc->err, sizeof sc->err, "the stream metadata of stream '%.*s' does not decode",
               (int)(stream ? sc->name_len : 0), sc->name);
      sc->done = stop = 1;
      PQclear(r);
      continue;
    }
    uint64_t count = (uint64_t)pgs_get_int(r, 0, 3);
    if (stream) {
      stream_rows = 1;
      stream_count = count;
      if (rule.hard) {
        sc->err_status = PGS_DELETED;
        sc->done = stop = 1;
        PQclear(r);
        continue;
      }
      if (PQgetisnull(r, 0, 0)) { PQclear(r); continue; }   /* the stream has no events left here */
    }
    rows++;
    uint64_t pos = (uint64_t)pgs_get_int(r, 0, 0);
    const unsigned char *rec = (const unsigned char *)PQgetvalue(r, 0, 1);
    size_t len = (size_t)PQgetlength(r, 0, 1);
    record_view v;
    const char *why;
    if (record_parse(rec, len, &v, &why) != 0) {
      sc->err_status = PGS_CORRUPT;
      sc->err_position = (int64_t)pos;
      snprintf(sc->err, sizeof sc->err, "event at position %llu is damaged: %s", (unsigned long long)pos, why);
      sc->done = stop = 1;
      PQclear(r);
      continue;
    }
    uint64_t at = stream ? v.version : pos;
    if (stream && !sc->backward) {
      /* Versions hidden by a prefix rule are skipped unread: the next statement starts after them. */
      uint64_t first = retention_first_version(&rule, count);
      if (v.version < first) {
        scan_hidden_upto(sc, first - 1);
        sc->next = first;
        if (sc->has_bound && first > sc->bound) sc->done = 1;
        stop = 1;
        PQclear(r);
        continue;
      }
      if (v.version > sc->next) scan_hidden_upto(sc, v.version - 1);    /* scavenged before it */
    }
    /* Where the next batch starts (the statement already kept to the bound). */
    if (sc->backward) {
      if (at == 0) end = 1;
      else sc->next = at - 1;
    } else {
      sc->next = at + 1;
    }
    int wanted = 1;
    if ((sc->has_until_position && pos > sc->until_position) || (sc->has_until_time && v.time > sc->until_time)) {
      wanted = 0;
      if (!sc->backward) sc->done = stop = 1;
    }
    if (wanted && !sc->show_hidden && retention_hides(&rule, count, v.version, v.time, v.type, v.type_len, sc->now, !stream)) {
      wanted = 0;
      if (stream && !sc->backward) scan_hidden_upto(sc, v.version);
    }
    if (wanted && scan_type_wanted(sc, &v)) {
      scan_item it = { sc->records.len, len, pos };
      if (buf_append(&sc->records, rec, len) || buf_append(&sc->items, &it, sizeof it)) {
        sc->err_status = PGS_NOMEM;
        sc->done = stop = 1;
      } else {
        sc->count++;
        if (sc->remaining > 0 && --sc->remaining == 0) sc->done = stop = 1;
        else if (sc->records.len >= SCAN_BATCH_BYTES) stop = 1;
      }
    }
    if (end) stop = 1;
    PQclear(r);
  }
  if (st) return st;
  if (stream && !stream_rows) { sc->done = 1; return PGS_OK; }     /* a missing stream reads as empty */
  if (end || (!stop && rows < limit)) {
    /* The stream's end: versions after the last row were scavenged. */
    if (stream && !sc->backward && !sc->err_status && stream_count > 0 && sc->next <= stream_count - 1)
      scan_hidden_upto(sc, stream_count - 1);
    sc->done = 1;
  }
  /* The next statement fetches more rows while this batch's bytes were well under the cap,
   * fewer when over it. */
  if (sc->records.len < SCAN_BATCH_BYTES / 4 && sc->limit < SCAN_BATCH_MAX) sc->limit *= 2;
  else if (sc->records.len > SCAN_BATCH_BYTES && sc->limit > 1) sc->limit /= 2;
  return PGS_OK;
}

/* The smallest byte string above every string starting with p[0..n); 0 when none. */
static size_t scan_successor(const unsigned char *p, size_t n, unsigned char *out) {
  while (n > 0 && p[n - 1] == 0xff) n--;
  if (n == 0) return 0;
  memcpy(out, p, n);
  out[n - 1]++;
  return n;
}

/* One batch of streams (name order) or key-value rows (key order). */
static int scan_fill_rows(scanner *sc, pgs *s) {
  sc->sql.len = 0;
  pgs_params_reset(s);
  int n = 0, st = 0, kv = sc->mode == SCAN_KV;
  const char *col = kv ? "key" : "name";
  unsigned char succ[PGS_MAX_KEY + 1];
  size_t succ_len = scan_successor(sc->name, sc->name_len, succ);
  if (kv) {
    st |= scan_sql(sc, "SELECT key, value FROM kv WHERE space = $1::bytea AND key >= $2::bytea");
    st |= pgs_param_bytes(s, sc->space, sc->space_len);
    st |= pgs_param_bytes(s, sc->name, sc->name_len);
    n = 2;
  } else {
    st |= scan_sql(sc, "SELECT name, count, first_position, last_position, created, updated FROM streams"
                       " WHERE name >= $1::bytea");
    st |= pgs_param_bytes(s, sc->name, sc->name_len);
    n = 1;
  }
  if (succ_len) {
    st |= scan_sqlf(sc, kv ? " AND key < $%d::bytea" : " AND name < $%d::bytea", ++n);
    st |= pgs_param_bytes(s, succ, succ_len);
  }
  if (sc->has_after) {
    st |= scan_sqlf(sc, " AND name > $%d::bytea", ++n);
    st |= pgs_param_bytes(s, sc->after, sc->after_len);
  }
  if (sc->has_from) {
    st |= scan_sqlf(sc, " AND key >= $%d::bytea", ++n);
    st |= pgs_param_bytes(s, sc->from, sc->from_len);
  }
  if (sc->has_to) {
    st |= scan_sqlf(sc, " AND key <= $%d::bytea", ++n);
    st |= pgs_param_bytes(s, sc->to, sc->to_len);
  }
  if (sc->started) {
    char part[64];
    snprintf(part, sizeof part, " AND %s %s $%d::bytea", col, sc->backward ? "<" : ">", ++n);
    st |= scan_sql(sc, part);
    st |= pgs_param_bytes(s, sc->last, sc->last_len);
  }
  st |= scan_sql(sc, kv ? " ORDER BY key" : " ORDER BY name");
  st |= scan_sql(sc, sc->backward ? " DESC" : "");
  int limit = SCAN_BATCH;
  if (sc->remaining > 0 && sc->remaining < limit) limit = (int)sc->remaining;
  st |= scan_sqlf(sc, " LIMIT %d", limit);
  if (st || buf_append(&sc->sql, "", 1)) return PGS_NOMEM;
  PGresult *r;
  if ((st = pgs_exec(s, (const char *)sc->sql.data, &r))) return st;
  int rows = PQntuples(r);
  if (rows < limit) sc->done = 1;
  for (int k = 0; k < rows; k++) {
    size_t klen = (size_t)PQgetlength(r, k, 0);
    const char *key = PQgetvalue(r, k, 0);
    if (klen > PGS_MAX_KEY) {
      sc->err_status = PGS_CORRUPT;
      snprintf(sc->err, sizeof sc->err, "a %s of %zu bytes is stored", col, klen);
      sc->done = 1;
      break;
    }
    unsigned char len[2];
    put_u16be(len, (uint16_t)klen);
    size_t start = sc->records.len;
    int bad = buf_append(&sc->records, len, 2) || buf_append(&sc->records, key, klen);
    if (kv) {
      bad = bad || buf_append(&sc->records, PQgetvalue(r, k, 1), (size_t)PQgetlength(r, k, 1));
    } else {
      for (int c = 1; c <= 5 && !bad; c++) {
        unsigned char b[8];
        put_u64be(b, (uint64_t)pgs_get_int(r, k, c));
        bad = buf_append(&sc->records, b, 8);
      }
    }
    scan_item it = { start, sc->records.len - start, 0 };
    if (bad || buf_append(&sc->items, &it, sizeof it)) {
      sc->err_status = PGS_NOMEM;
      sc->done = 1;
      break;
    }
    memcpy(sc->last, key, klen);
    sc->last_len = klen;
    sc->started = 1;
    sc->count++;
    if (sc->remaining > 0 && --sc->remaining == 0) { sc->done = 1; break; }
  }
  PQclear(r);
  return PGS_OK;
}

static int scan_fill(lua_State *L, scanner *sc, int sc_idx) {
  sc->records.len = sc->items.len = 0;
  sc->at = sc->count = 0;
  while (!sc->done && sc->count == 0) {
    pgs *s = scan_store(L, sc_idx);
    int st = pgs_ready(s);
    if (!st) st = sc->mode == SCAN_KV || sc->mode == SCAN_STREAMS ? scan_fill_rows(sc, s) : scan_fill_events(sc, s);
    if (st) {
      sc->err_status = st;
      snprintf(sc->err, sizeof sc->err, "%s", st == PGS_NOMEM ? "out of memory" : s->err);
      sc->done = 1;
    }
  }
  return sc->count > 0;
}

static void scan_push_error(lua_State *L, scanner *sc) {
  if (sc->err_status == PGS_DELETED) {
    char name[RECORD_MAX_STREAM + 1];
    memcpy(name, sc->name, sc->name_len);
    name[sc->name_len] = '\0';
    cerr_new(L, "stream_deleted", "stream '%s' is deleted (a hard delete: it cannot be read or written again)", name);
    lua_pushlstring(L, name, sc->name_len);
    lua_setfield(L, -2, "stream");
    return;
  }
  const char *code = sc->err_status == PGS_CORRUPT ? "corrupt"
                     : sc->err_status == PGS_UNAVAILABLE ? "unavailable"
                     : sc->err_status == PGS_NOMEM ? "out_of_memory" : "storage";
  cerr_new(L, code, "read: %s", sc->err);
  if (sc->err_status == PGS_CORRUPT && sc->err_position) {
    lua_pushinteger(L, (lua_Integer)sc->err_position);
    lua_setfield(L, -2, "position");
  }
}


static int scan_push_item(lua_State *L, scanner *sc, const scan_item *it) {
  const unsigned char *p = sc->records.data + it->off;
  if (sc->mode == SCAN_KV) {
    size_t klen = get_u16be(p);
    lua_pushlstring(L, (const char *)p + 2, klen);
    const char *why;
    if (!codec_decode(L, p + 2 + klen, it->len - 2 - klen, &why)) {
      cerr_new(L, "corrupt", "kv_scan: the value of '%s' does not decode: %s", lua_tostring(L, -1), why);
      lua_error(L);
    }
    return 2;
  }
  if (sc->mode == SCAN_STREAMS) {
    size_t len = get_u16be(p);
    const unsigned char *m = p + 2 + len;
    pgs_push_stream_info(L, (const char *)p + 2, len, (int64_t)get_u64be(m), (int64_t)get_u64be(m + 8),
                         (int64_t)get_u64be(m + 16), (int64_t)get_u64be(m + 24), (int64_t)get_u64be(m + 32));
    return 1;
  }
  scan_push_event(L, sc, p, it->len, it->position);
  return 1;
}

static int scan_iter(lua_State *L) {
  scanner *sc = luaL_checkudata(L, 1, PGSCAN_MT);
  if (sc->at == sc->count && !scan_fill(L, sc, 1)) {
    scan_end_reveal(L, sc, 1);
    if (sc->err_status) {
      scan_push_error(L, sc);
      sc->err_status = 0;
      scan_release(sc);
      return lua_error(L);
    }
    scan_release(sc);
    return 0;
  }
  scan_item *it = &SCAN_ITEMS(sc)[sc->at++];
  return scan_push_item(L, sc, it);
}

/* `reveal`: the stack index of the read's reveal function (store.lua), or 0. */
static int scan_return_iterator(lua_State *L, int sc_idx, int reveal) {
  sc_idx = lua_absindex(L, sc_idx);
  if (reveal && !lua_isnoneornil(L, reveal)) {
    lua_pushvalue(L, reveal);
    lua_setiuservalue(L, sc_idx, 2);
  }
  for (int i = 1; i <= EVENT_KEYS; i++) lua_pushvalue(L, lua_upvalueindex(i));
  lua_pushcclosure(L, scan_iter, EVENT_KEYS);
  lua_pushvalue(L, sc_idx);
  lua_pushnil(L);
  lua_pushvalue(L, sc_idx);
  return 4;
}

static int scan_read(lua_State *L) {
  pgs_check(L, 1);
  lua_settop(L, 4);                    /* the reveal function's slot, before the scanner's */
  int opts = scan_options(L, 3, "read", opt_read_spec);
  scanner *sc = scan_new(L, SCAN_STREAM);
  int sc_idx = lua_gettop(L);
  scan_configure(L, sc, opts, 2, "read");
  return scan_return_iterator(L, sc_idx, 4);
}

static int scan_read_all(lua_State *L) {
  pgs_check(L, 1);
  lua_settop(L, 3);
  int opts = scan_options(L, 2, "read_all", opt_read_all_spec);
  scanner *sc = scan_new(L, SCAN_ALL);
  int sc_idx = lua_gettop(L);
  scan_configure(L, sc, opts, 0, "read_all");
  return scan_return_iterator(L, sc_idx, 3);
}

static int scan_streams(lua_State *L) {
  pgs_check(L, 1);
  int opts = scan_options(L, 2, "streams", opt_streams_spec);
  scanner *sc = scan_new(L, SCAN_STREAMS);
  int sc_idx = lua_gettop(L);
  sc->remaining = opt_integer(L, opts, "streams", "count", -1, 0);
  if (sc->remaining == 0) sc->done = 1;
  if (opts) {
    lua_getfield(L, opts, "prefix");
    if (!lua_isnil(L, -1))
      scan_copy_name(L, lua_gettop(L), "streams", "option 'prefix'", sc->name, &sc->name_len, RECORD_MAX_STREAM);
    lua_getfield(L, opts, "after");
    if (!lua_isnil(L, -1)) {
      scan_copy_name(L, lua_gettop(L), "streams", "option 'after'", sc->after, &sc->after_len, RECORD_MAX_STREAM);
      sc->has_after = 1;
    }
    lua_pop(L, 2);
  }
  return scan_return_iterator(L, sc_idx, 0);
}

static const char *kv_name(lua_State *L, int idx, const char *where, size_t *len, size_t max, const char *what) {
  const char *p = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, len) : NULL;
  if (p == NULL || *len == 0 || *len > max)
    luaL_error(L, "%s: %s must be a string of 1 to %d bytes", where, what, (int)max);
  return p;
}

static int scan_kv(lua_State *L) {
  pgs_check(L, 1);
  size_t slen;
  const char *space = kv_name(L, 2, "kv_scan", &slen, PGS_MAX_SPACE, "space");
  int opts = scan_options(L, 3, "kv_scan", opt_kv_scan_spec);
  lua_settop(L, 3);
  scanner *sc = scan_new(L, SCAN_KV);
  int sc_idx = lua_gettop(L);
  memcpy(sc->space, space, slen);
  sc->space_len = slen;
  sc->remaining = opt_integer(L, opts, "kv_scan", "count", -1, 0);
  if (sc->remaining == 0) sc->done = 1;
  if (opts) {
    lua_getfield(L, opts, "backward");
    sc->backward = lua_toboolean(L, -1);
    lua_getfield(L, opts, "prefix");
    if (!lua_isnil(L, -1))
      scan_copy_name(L, -1, "kv_scan: option 'prefix'", "key", sc->name, &sc->name_len, PGS_MAX_KEY);
    lua_getfield(L, opts, "from");
    if (!lua_isnil(L, -1)) {
      scan_copy_name(L, -1, "kv_scan: option 'from'", "key", sc->from, &sc->from_len, PGS_MAX_KEY);
      sc->has_from = 1;
    }
    lua_getfield(L, opts, "to");
    if (!lua_isnil(L, -1)) {
      scan_copy_name(L, -1, "kv_scan: option 'to'", "key", sc->to, &sc->to_len, PGS_MAX_KEY);
      sc->has_to = 1;
    }
  }
  return scan_return_iterator(L, sc_idx, 0);
}

static int scan_fold(lua_State *L) {
  pgs_check(L, 1);
  luaL_checktype(L, 4, LUA_TFUNCTION);
  lua_settop(L, 5);
  int reveal = lua_isnil(L, 5) ? 0 : 5, spread = 0;
  unsigned char order[EVENT_KEYS];     /* spread: the fields passed to fn, in order */
  scanner *sc;
  if (lua_type(L, 2) == LUA_TSTRING) {
    sc = scan_new(L, SCAN_STREAM);
    scan_configure(L, sc, 0, 2, "fold");
  } else {
    luaL_argexpected(L, lua_istable(L, 2), 2, "stream name or query table");
    opt_check(L, 2, "fold", opt_fold_spec);
    lua_getfield(L, 2, "stream");
    int has_stream = !lua_isnil(L, -1);
    sc = scan_new(L, has_stream ? SCAN_STREAM : SCAN_ALL);
    if (has_stream) {
      lua_getfield(L, 2, "category");
      lua_getfield(L, 2, "types");
      if (!lua_isnil(L, -1) || !lua_isnil(L, -2))
        luaL_error(L, "fold: a stream query cannot filter by category or types");
      lua_pop(L, 2);
    }
    scan_configure(L, sc, 2, 6, "fold");
    spread = event_spread_option(L, 2, "fold", order);
  }
  int sc_idx = lua_gettop(L);
  event_cache cache;                   /* strings kept from event to event */
  event_cache_push(L, &cache);
  fold_walk w = fold_walk_start(L, 4, 3, &cache, reveal, sc->fields, spread, order);
  while (sc->at < sc->count || scan_fill(L, sc, sc_idx)) {
    if (!fold_batch(L, &w, sc->records.data, SCAN_ITEMS(sc), &sc->at, sc->count)) {
      scan_release(sc);
      return 2;                      /* nil, the reveal function's error */
    }
  }
  if (w.revealed) event_reveal_end(L, reveal);
  if (sc->err_status) {
    lua_pushnil(L);
    scan_push_error(L, sc);
    scan_release(sc);
    return 2;
  }
  if (sc->mode == SCAN_STREAM && sc->hidden_upto > w.last_version) w.last_version = (lua_Integer)sc->hidden_upto;
  scan_release(sc);
  lua_pushvalue(L, 3);
  lua_pushinteger(L, w.n);
  lua_pushinteger(L, w.last_position);
  lua_pushinteger(L, w.last_version);
  return 4;
}

/* A kv_get's value, copied out of its result into memory Lua owns. */
typedef struct kvread { buf value; } kvread;
#define KVREAD_MT "chronicle.postgres.kvread"

static int kvread_gc(lua_State *L) {
  kvread *r = luaL_checkudata(L, 1, KVREAD_MT);
  buf_free(&r->value);
  return 0;
}

static int kv_get(lua_State *L) {
  pgs *s = pgs_check(L, 1);
  size_t slen, klen;
  const char *space = kv_name(L, 2, "kv_get", &slen, PGS_MAX_SPACE, "space");
  const char *key = kv_name(L, 3, "kv_get", &klen, PGS_MAX_KEY, "key");
  kvread *kr = lua_newuserdatauv(L, sizeof *kr, 0);
  buf_init(&kr->value);
  luaL_setmetatable(L, KVREAD_MT);
  int st = pgs_ready(s), found = 0;
  if (!st) {
    pgs_params_reset(s);
    pgs_param_bytes(s, space, slen);
    pgs_param_bytes(s, key, klen);
    PGresult *r;
    st = pgs_exec(s, "SELECT value FROM kv WHERE space = $1::bytea AND key = $2::bytea", &r);
    if (!st) {
      found = PQntuples(r) == 1;
      if (found && buf_append(&kr->value, PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0))) st = PGS_NOMEM;
      PQclear(r);
    }
  }
  if (st) return pgs_push_error(L, s, st, "kv_get");
  if (!found) { lua_pushnil(L); return 1; }
  const char *why;
  if (!codec_decode(L, kr->value.data, kr->value.len, &why))
    return cerr_result(L, "corrupt", "kv_get: the value of '%s' does not decode: %s", key, why);
  return 1;
}

static int kv_count(lua_State *L) {
  pgs *s = pgs_check(L, 1);
  size_t slen, plen = 0;
  const char *space = kv_name(L, 2, "kv_count", &slen, PGS_MAX_SPACE, "space");
  const char *prefix = "";
  if (!lua_isnoneornil(L, 3)) {
    prefix = luaL_checklstring(L, 3, &plen);
    if (plen > PGS_MAX_KEY) luaL_argerror(L, 3, "prefix too long");
  }
  unsigned char succ[PGS_MAX_KEY];
  size_t succ_len = scan_successor((const unsigned char *)prefix, plen, succ);
  int st = pgs_ready(s);
  int64_t n = 0;
  if (!st) {
    pgs_params_reset(s);
    pgs_param_bytes(s, space, slen);
    pgs_param_bytes(s, prefix, plen);
    if (succ_len) pgs_param_bytes(s, succ, succ_len);
    PGresult *r;
    st = pgs_exec(s, succ_len ? "SELECT count(*) FROM kv WHERE space = $1::bytea AND key >= $2::bytea AND key < $3::bytea"
                              : "SELECT count(*) FROM kv WHERE space = $1::bytea AND key >= $2::bytea", &r);
    if (!st) {
      n = pgs_get_int(r, 0, 0);
      PQclear(r);
    }
  }
  if (st) return pgs_push_error(L, s, st, "kv_count");
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

/* store:kv_spaces() -> a list of the spaces holding keys (one index probe per space). */
static int kv_spaces(lua_State *L) {
  pgs *s = pgs_check(L, 1);
  kvread *kr = lua_newuserdatauv(L, sizeof *kr, 0);
  buf_init(&kr->value);
  luaL_setmetatable(L, KVREAD_MT);
  int st = pgs_ready(s);
  if (!st) {
    pgs_params_reset(s);
    PGresult *r;
    st = pgs_exec(s, "WITH RECURSIVE t(s) AS ((SELECT space FROM kv ORDER BY space LIMIT 1) UNION ALL"
                     " SELECT (SELECT space FROM kv WHERE space > t.s ORDER BY space LIMIT 1) FROM t"
                     " WHERE t.s IS NOT NULL) SELECT s FROM t WHERE s IS NOT NULL", &r);
    if (!st) {
      for (int k = 0; k < PQntuples(r) && !st; k++) {
        unsigned char len = (unsigned char)(PQgetlength(r, k, 0) > 255 ? 255 : PQgetlength(r, k, 0));
        if (buf_append(&kr->value, &len, 1) || buf_append(&kr->value, PQgetvalue(r, k, 0), len)) st = PGS_NOMEM;
      }
      PQclear(r);
    }
  }
  if (st) return pgs_push_error(L, s, st, "kv_spaces");
  lua_createtable(L, 8, 0);
  lua_Integer i = 0;
  for (size_t at = 0; at < kr->value.len; at += 1 + kr->value.data[at]) {
    lua_pushlstring(L, (const char *)kr->value.data + at + 1, kr->value.data[at]);
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

/* store:position_of(id) -> the global position of the event with that id, or nil */
static int scan_position_of(lua_State *L) {
  pgs *s = pgs_check(L, 1);
  size_t len;
  const char *text = luaL_checklstring(L, 2, &len);
  unsigned char id[16];
  if (uuid_parse(text, len, id) != 0) luaL_argerror(L, 2, "an event id (a UUID string) expected");
  int st = pgs_ready(s), found = 0;
  int64_t pos = 0;
  if (!st) {
    pgs_params_reset(s);
    pgs_param_bytes(s, id, 16);
    PGresult *r;
    st = pgs_exec(s, "SELECT position FROM events WHERE id = $1::bytea", &r);
    if (!st) {
      found = PQntuples(r) == 1;
      if (found) pos = pgs_get_int(r, 0, 0);
      PQclear(r);
    }
  }
  if (st) return pgs_push_error(L, s, st, "position_of");
  if (!found) lua_pushnil(L);
  else lua_pushinteger(L, (lua_Integer)pos);
  return 1;
}

static const luaL_Reg scan_methods[] = {
  { "position_of", scan_position_of },
  { "kv_spaces", kv_spaces },
  { "read", scan_read },
  { "read_all", scan_read_all },
  { "streams", scan_streams },
  { "fold", scan_fold },
  { "kv_scan", scan_kv },
  { "kv_get", kv_get },
  { "kv_count", kv_count },
  { NULL, NULL }
};

void pgs_scan_register(lua_State *L) {
  event_push_keys(L);
  luaL_setfuncs(L, scan_methods, EVENT_KEYS);
  if (luaL_newmetatable(L, PGSCAN_MT)) {
    lua_pushcfunction(L, scan_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, scan_close);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, KVREAD_MT)) {
    lua_pushcfunction(L, kvread_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
}
