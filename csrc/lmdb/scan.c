/* Reading the log: store:read, store:read_all, store:fold and store:streams.
 *
 * A scanner copies records out of LMDB a batch at a time, each batch under
 * its own short read transaction, then decodes them into Lua with no
 * transaction open. So no Lua error can leak a transaction or a cursor, a
 * long scan never pins old pages, and the map can grow between batches. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include "common/cerror.h"
#include "common/codec.h"
#include "common/event_batch.h"
#include "common/event_table.h"
#include "scan.h"
#include "kv.h"
#include "logdb.h"
#include "common/options.h"
#include "common/retention.h"
#include "store.h"
#include "common/uuid.h"

#define SCANNER_MT "chronicle.scanner"
#define SCAN_BATCH_ITEMS 256
#define SCAN_BATCH_BYTES (1u << 20)
#define SCAN_BATCH_VISITS 4096   /* bounds a batch that filters most records out */
#define SCAN_MAX_TYPES 64

enum { SCAN_STREAM, SCAN_ALL, SCAN_CATEGORY, SCAN_STREAMS, SCAN_KV };

/* The parts of a scanner that only some scans need, allocated when they do.
 * A scanner is made for every read, fold and aggregate load: kept under 1 KB
 * it is a small malloc, where a larger one makes glibc consolidate its fast
 * bins first (that cost 6% of `execute`, bench/README.md). */
typedef struct scan_types {            /* the `types` filter */
  size_t n;
  unsigned char len[SCAN_MAX_TYPES];
  char name[SCAN_MAX_TYPES][RECORD_MAX_TYPE];
} scan_types;

typedef struct scan_kv_range {         /* SCAN_KV */
  unsigned char prefix[KV_KEY_MAX];    /* `space|prefix`, which every key returned starts with */
  size_t prefix_len;
  unsigned char edge[KV_KEY_MAX];      /* the far bound (to, or from when backward) */
  size_t edge_len;
  int has_edge;
} scan_kv_range;

/* The lifecycle rule of the stream a log-order scan last met, for the
 * current batch (retention.h): allocated once such a scan meets a store
 * that has stream metadata. */
typedef struct scan_rule_cache {
  int valid;                           /* for this batch's transaction */
  unsigned char name[RECORD_MAX_STREAM];
  size_t name_len;
  stream_rule rule;
  uint64_t count;                      /* the stream's event count, when max_count needs it */
} scan_rule_cache;

typedef struct scanner {
  int mode;
  int backward;
  int done;                /* nothing more to fetch from LMDB */
  uint64_t next;           /* next version (stream) or position to visit */
  uint64_t bound;          /* last position (or stream version) to visit; the lower one when backward */
  int has_bound;
  uint64_t until_position; /* forward scans stop after this position ... */
  int has_until_position;
  int64_t until_time;      /* ... or at the first event later than this time */
  int has_until_time;
  int64_t remaining;       /* events still to yield, -1 for no limit */
  unsigned char name[KV_KEY_MAX + 1];   /* stream, category, or (streams, kv) the prefix then last key */
  size_t name_len;
  size_t prefix_len;       /* SCAN_STREAMS, SCAN_KV: the prefix part of name */
  int started;             /* SCAN_STREAMS, SCAN_KV: name holds the last key returned */
  int from_last;           /* SCAN_KV backward with no bound: start at the end of the database */
  scan_kv_range *kv;       /* SCAN_KV only */
  scan_types *types;       /* NULL: every type */
  unsigned fields;         /* the event fields to build (event_table.h) */
  buf records;             /* the current batch's bytes */
  buf items;               /* scan_item[] */
  size_t at, count;        /* next item to hand out, items in the batch */
  int err_rc;              /* a failure met after the batch's good records */
  uint64_t err_position;
  const char *err_why;
  int64_t now;             /* the clock max_age compares against, read when the scan began */
  scan_rule_cache *rules;  /* log-order scans of a store with stream metadata */
  int any_rules;           /* this batch: the store has stream metadata */
  int show_hidden;         /* read_all{hidden = true}: metadata hides nothing (chronicle copy) */
  int64_t hidden_upto;     /* forward stream scans: every version up to it that was not
                            * yielded is hidden (or removed): fold's last_version */
  int revealed;            /* read, read_all: the reveal function (user value 2) opened an event */
  store *home;             /* the store the batch buffers came from (held by user value 1), NULL once given back */
} scanner;

_Static_assert(sizeof(scanner) < 1000, "a scanner must stay a small allocation (see scan_types)");

#define SCAN_ITEMS(sc) ((scan_item *)(sc)->items.data)
#define SCAN_CORRUPT 1       /* err_rc for a damaged record */
#define SCAN_DELETED 0x200001   /* err_rc: a stream read of a hard-deleted stream */
#define SCAN_BAD_RULE 0x200002  /* err_rc: a stream's metadata row does not parse */

/* A scan's batch buffers are lent by its store and go back to it: a new scan
 * growing its own for every 100-event load spent 8% of the load in realloc and
 * in the fast-bin consolidation glibc does before a first large allocation
 * (callgrind, bench/README.md). A closed store takes nothing back; nor is a
 * buffer kept that grew beyond a batch and a large record. */
#define SCAN_SPARE_MAX (4u << 20)

static void scan_lend(buf *from, buf *to) {
  *to = *from;
  to->len = 0;
  buf_init(from);
}

static void scan_give_back(buf *b, buf *spare, int open) {
  if (open && spare->data == NULL && b->cap <= SCAN_SPARE_MAX) scan_lend(b, spare);
  else buf_free(b);
}

static void scan_release(scanner *sc) {
  sc->done = 1;
  sc->at = sc->count = 0;
  store *s = sc->home;
  sc->home = NULL;
  scan_give_back(&sc->records, s ? &s->spare_records : NULL, s && s->e);
  scan_give_back(&sc->items, s ? &s->spare_items : NULL, s && s->e);
  free(sc->types);
  sc->types = NULL;
  free(sc->kv);
  sc->kv = NULL;
  free(sc->rules);
  sc->rules = NULL;
}

/* calloc, or a Lua memory error (the scanner's __gc frees what it holds). */
static void *scan_calloc(lua_State *L, size_t size) {
  void *p = calloc(1, size);
  if (p == NULL) luaL_error(L, "out of memory");
  return p;
}

static int scan_gc(lua_State *L) {
  scan_release(luaL_checkudata(L, 1, SCANNER_MT));
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
  scanner *sc = luaL_checkudata(L, 1, SCANNER_MT);
  scan_end_reveal(L, sc, 1);
  scan_release(sc);
  return 0;
}

/* The store a scanner reads, checked open on every batch. */
static store *scan_store(lua_State *L, int idx) {
  lua_getiuservalue(L, idx, 1);
  store *s = store_check(L, -1);
  lua_pop(L, 1);
  return s;
}

/* The options table at idx, checked: its index, or 0 when absent. */
static int scan_options(lua_State *L, int idx, const char *fn, const opt_spec *allowed) {
  return opt_check(L, idx, fn, allowed);
}

static void scan_set_name(lua_State *L, scanner *sc, int idx, const char *fn, const char *what) {
  size_t len;
  const char *name = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &len) : NULL;
  if (name == NULL || len == 0 || len > RECORD_MAX_STREAM)
    luaL_error(L, "%s: %s must be a string of 1 to %d bytes", fn, what, RECORD_MAX_STREAM);
  memcpy(sc->name, name, len);
  sc->name_len = len;
}

static void scan_set_types(lua_State *L, scanner *sc, int opts, const char *fn) {
  lua_getfield(L, opts, "types");
  if (lua_isnil(L, -1)) { lua_pop(L, 1); return; }
  if (lua_type(L, -1) == LUA_TSTRING) {     /* one type may be given alone */
    lua_createtable(L, 1, 0);
    lua_insert(L, -2);
    lua_rawseti(L, -2, 1);
  }
  if (!lua_istable(L, -1)) luaL_error(L, "%s: option 'types' must be a list of type names", fn);
  lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
  if (n == 0 || n > SCAN_MAX_TYPES)
    luaL_error(L, "%s: option 'types' must list 1 to %d type names", fn, SCAN_MAX_TYPES);
  scan_types *types = sc->types = scan_calloc(L, sizeof *sc->types);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    size_t len;
    const char *t = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    if (t == NULL || len == 0 || len > RECORD_MAX_TYPE)
      luaL_error(L, "%s: types[%I] must be a string of 1 to %d bytes", fn, i, RECORD_MAX_TYPE);
    memcpy(types->name[types->n], t, len);
    types->len[types->n++] = (unsigned char)len;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* Pushes a new scanner over the store at index 1. */
static scanner *scan_new(lua_State *L, int mode) {
  scanner *sc = lua_newuserdatauv(L, sizeof *sc, 2);   /* the store, the reveal function */
  memset(sc, 0, sizeof *sc);
  buf_init(&sc->records);
  buf_init(&sc->items);
  sc->mode = mode;
  sc->remaining = -1;
  sc->fields = EVENT_ALL_FIELDS;
  sc->now = retention_now();
  sc->hidden_upto = -1;
  store *s = lua_touserdata(L, 1);      /* checked by the caller */
  if (s->e) {
    sc->home = s;
    scan_lend(&s->spare_records, &sc->records);
    scan_lend(&s->spare_items, &sc->items);
  }
  luaL_setmetatable(L, SCANNER_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  return sc;
}

static void scan_configure(lua_State *L, scanner *sc, int opts, int name_idx, const char *fn) {
  if (opts) luaL_checktype(L, opts, LUA_TTABLE);
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
    scan_set_name(L, sc, name_idx, fn, "stream");
    lua_Integer from = opt_integer(L, opts, fn, "from", backward ? -1 : 0, backward ? -1 : 0);
    sc->next = from < 0 ? UINT64_MAX : (uint64_t)from;
    return;
  }
  lua_Integer from = opt_integer(L, opts, fn, "from", backward ? -1 : 1, backward ? -1 : 0);
  sc->next = from < 0 ? UINT64_MAX : (uint64_t)(from == 0 && !backward ? 1 : from);
  if (opts) {
    lua_getfield(L, opts, "category");
    if (!lua_isnil(L, -1)) {
      scan_set_name(L, sc, lua_gettop(L), fn, "option 'category'");
      if (category_len(sc->name, sc->name_len) != sc->name_len)
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
  const scan_types *types = sc->types;
  if (types == NULL) return 1;
  for (size_t i = 0; i < types->n; i++)
    if (types->len[i] == v->type_len && memcmp(types->name[i], v->type, v->type_len) == 0) return 1;
  return 0;
}

/* Reads the lifecycle rule of stream `name` in txn (no row: nothing hidden);
 * *count is the stream's event count when the rule needs it. */
static int scan_rule_get(MDB_txn *txn, const envref *e, const void *name, size_t len, stream_rule *rule,
                         uint64_t *count) {
  unsigned char k[KV_KEY_MAX];
  MDB_val mk = { kv_key(k, RETENTION_SPACE, RETENTION_SPACE_LEN, name, len), k }, d;
  memset(rule, 0, sizeof *rule);
  rule->max_count = rule->max_age_ns = -1;
  *count = 0;
  int rc = mdb_get(txn, e->dbi[DB_KV], &mk, &d);
  if (rc == MDB_NOTFOUND) return 0;
  if (rc) return rc;
  if (retention_parse(d.mv_data, d.mv_size, rule)) return SCAN_BAD_RULE;
  if (rule->max_count >= 0) {
    stream_meta m;
    rc = stream_meta_get(txn, e, name, len, &m);
    if (rc == 0) *count = m.count;
    else if (rc != MDB_NOTFOUND) return rc;
  }
  return 0;
}

/* Does the store hold any stream metadata? (Most stores have none: their
 * log-order reads then look up no rule per event.) */
static int scan_any_rules(MDB_txn *txn, const envref *e, int *any) {
  MDB_cursor *c;
  int rc = mdb_cursor_open(txn, e->dbi[DB_KV], &c);
  if (rc) return rc;
  unsigned char k[KV_KEY_MAX];
  size_t plen = kv_key(k, RETENTION_SPACE, RETENTION_SPACE_LEN, "", 0);
  MDB_val mk = { plen, k }, d;
  rc = mdb_cursor_get(c, &mk, &d, MDB_SET_RANGE);
  *any = rc == 0 && mk.mv_size > plen && memcmp(mk.mv_data, k, plen) == 0;
  mdb_cursor_close(c);
  return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Log-order scans: is the record `v` hidden by its stream's rule? Returns 0
 * or 1, or an error code (> 1) with sc->err_* set. */
static int scan_log_hidden(scanner *sc, MDB_txn *txn, const envref *e, const record_view *v) {
  if (!sc->any_rules) return 0;
  scan_rule_cache *rc = sc->rules;
  if (rc == NULL) {
    rc = sc->rules = calloc(1, sizeof *sc->rules);
    if (rc == NULL) return ENOMEM;
  }
  if (!rc->valid || rc->name_len != v->stream_len || memcmp(rc->name, v->stream, v->stream_len) != 0) {
    int err = scan_rule_get(txn, e, v->stream, v->stream_len, &rc->rule, &rc->count);
    if (err) { rc->valid = 0; return err; }
    memcpy(rc->name, v->stream, v->stream_len);
    rc->name_len = v->stream_len;
    rc->valid = 1;
  }
  return retention_hides(&rc->rule, rc->count, v->version, v->time, v->type, v->type_len, sc->now, 1);
}

/* Takes one record into the batch. Returns 1 to go on, 0 to stop the batch.
 * `rule` (stream scans) or the store's rules (log-order scans, txn given)
 * may hide it. */
static int scan_take_ruled(scanner *sc, const MDB_val *rec, uint64_t pos, const stream_rule *rule,
                           uint64_t count, MDB_txn *txn, const envref *e) {
  record_view v;
  const char *why;
  if (record_parse(rec->mv_data, rec->mv_size, &v, &why) != 0) {
    sc->err_rc = SCAN_CORRUPT;
    sc->err_position = pos;
    sc->err_why = why;
    sc->done = 1;
    return 0;
  }
  if ((sc->has_until_position && pos > sc->until_position) || (sc->has_until_time && v.time > sc->until_time)) {
    if (sc->backward) return 1;
    sc->done = 1;
    return 0;
  }
  if (rule && retention_hides(rule, count, v.version, v.time, v.type, v.type_len, sc->now, 0)) {
    if (!sc->backward && (int64_t)v.version > sc->hidden_upto) sc->hidden_upto = (int64_t)v.version;
    return 1;
  }
  if (txn) {
    int hidden = scan_log_hidden(sc, txn, e, &v);
    if (hidden == 1) return 1;
    if (hidden) {
      sc->err_rc = hidden;
      sc->err_position = pos;
      sc->done = 1;
      return 0;
    }
  }
  if (!scan_type_wanted(sc, &v)) return 1;
  scan_item it = { sc->records.len, rec->mv_size, pos };
  if (buf_append(&sc->records, rec->mv_data, rec->mv_size) || buf_append(&sc->items, &it, sizeof it)) {
    sc->err_rc = ENOMEM;
    sc->done = 1;
    return 0;
  }
  sc->count++;
  if (sc->remaining > 0 && --sc->remaining == 0) { sc->done = 1; return 0; }
  return sc->count < SCAN_BATCH_ITEMS && sc->records.len < SCAN_BATCH_BYTES;
}

/* Advances sc->next past `at` in the scan's direction; returns 0 at the end. */
static int scan_step(scanner *sc, uint64_t at) {
  if (sc->backward) {
    if (at == 0 || (sc->has_bound && at <= sc->bound)) return 0;
    sc->next = at - 1;
  } else {
    if ((sc->has_bound && at >= sc->bound) || at == UINT64_MAX) return 0;
    sc->next = at + 1;
  }
  return 1;
}

static int scan_in_range(const scanner *sc, uint64_t at) {
  if (!sc->has_bound) return 1;
  return sc->backward ? at >= sc->bound : at <= sc->bound;
}

/* Looks up the record at `pos` through `log`, a cursor on the log kept for
 * the whole batch: an index visits positions close together, and LMDB's
 * MDB_SET looks on the cursor's current page before it descends the tree. */
static int scan_get_record(MDB_cursor *log, uint64_t pos, MDB_val *rec) {
  unsigned char k[8];
  put_u64be(k, pos);
  MDB_val key = { 8, k };
  int rc = mdb_cursor_get(log, &key, rec, MDB_SET);
  return rc == MDB_NOTFOUND ? MDB_CORRUPTED : rc;   /* an index names a missing record */
}

/* Positions cursor c at the first key >= key (forward) or <= key (backward)
 * among keys sharing its first `plen` bytes. Returns 0, MDB_NOTFOUND or an error. */
static int scan_seek(MDB_cursor *c, const unsigned char *key, size_t klen, size_t plen, int backward,
                     MDB_val *k, MDB_val *d) {
  k->mv_size = klen;
  k->mv_data = (void *)key;
  int rc = mdb_cursor_get(c, k, d, MDB_SET_RANGE);
  if (backward) {
    if (rc == MDB_NOTFOUND) rc = mdb_cursor_get(c, k, d, MDB_LAST);
    else if (rc == 0 && (k->mv_size != klen || memcmp(k->mv_data, key, klen) > 0))
      rc = mdb_cursor_get(c, k, d, MDB_PREV);
  }
  if (rc) return rc;
  if (k->mv_size < plen || memcmp(k->mv_data, key, plen) != 0) return MDB_NOTFOUND;
  return 0;
}

/* A log-order batch starts: does the store have stream metadata now? */
static int scan_begin_log_batch(scanner *sc, MDB_txn *txn, const envref *e) {
  if (sc->rules) sc->rules->valid = 0;
  if (sc->show_hidden) { sc->any_rules = 0; return 0; }
  return scan_any_rules(txn, e, &sc->any_rules);
}

static int scan_fill_log(scanner *sc, MDB_txn *txn, const envref *e) {
  MDB_cursor *c;
  int rc = mdb_cursor_open(txn, e->dbi[DB_LOG], &c);
  if (rc) return rc;
  unsigned char key[8];
  put_u64be(key, sc->next);
  MDB_val k, d;
  if ((rc = scan_begin_log_batch(sc, txn, e))) { mdb_cursor_close(c); return rc; }
  rc = scan_seek(c, key, 8, 0, sc->backward, &k, &d);
  for (int visits = 0; rc == 0; visits++) {
    if (k.mv_size != 8) { rc = MDB_CORRUPTED; break; }
    uint64_t pos = get_u64be(k.mv_data);
    if (!scan_in_range(sc, pos)) { sc->done = 1; break; }
    int more = scan_take_ruled(sc, &d, pos, NULL, 0, txn, e);
    if (!scan_step(sc, pos)) { sc->done = 1; break; }
    if (!more || visits >= SCAN_BATCH_VISITS) break;
    rc = mdb_cursor_get(c, &k, &d, sc->backward ? MDB_PREV : MDB_NEXT);
  }
  if (rc == MDB_NOTFOUND) { sc->done = 1; rc = 0; }
  mdb_cursor_close(c);
  return rc;
}

static int scan_fill_category(scanner *sc, MDB_txn *txn, const envref *e) {
  MDB_cursor *c, *log;
  int rc = mdb_cursor_open(txn, e->dbi[DB_CATEGORY_INDEX], &c);
  if (rc) return rc;
  if ((rc = mdb_cursor_open(txn, e->dbi[DB_LOG], &log))) {
    mdb_cursor_close(c);
    return rc;
  }
  unsigned char key[CATEGORY_KEY_MAX];
  size_t klen = category_key(key, sc->name, sc->name_len, sc->next), plen = klen - 8;
  MDB_val k, d, rec;
  rc = scan_begin_log_batch(sc, txn, e);
  if (rc == 0) rc = scan_seek(c, key, klen, plen, sc->backward, &k, &d);
  for (int visits = 0; rc == 0; visits++) {
    if (k.mv_size != klen) { rc = MDB_CORRUPTED; break; }
    uint64_t pos = get_u64be((unsigned char *)k.mv_data + plen);
    if (!scan_in_range(sc, pos)) { sc->done = 1; break; }
    if ((rc = scan_get_record(log, pos, &rec))) break;
    int more = scan_take_ruled(sc, &rec, pos, NULL, 0, txn, e);
    if (!scan_step(sc, pos)) { sc->done = 1; break; }
    if (!more || visits >= SCAN_BATCH_VISITS) break;
    rc = mdb_cursor_get(c, &k, &d, sc->backward ? MDB_PREV : MDB_NEXT);
    if (rc == 0 && (k.mv_size < plen || memcmp(k.mv_data, key, plen) != 0)) rc = MDB_NOTFOUND;
  }
  if (rc == MDB_NOTFOUND) { sc->done = 1; rc = 0; }
  mdb_cursor_close(log);
  mdb_cursor_close(c);
  return rc;
}

static int scan_fill_stream(scanner *sc, MDB_txn *txn, const envref *e) {
  stream_meta m;
  int rc = stream_meta_get(txn, e, sc->name, sc->name_len, &m);
  if (rc == MDB_NOTFOUND) { sc->done = 1; return 0; }   /* a missing stream reads as empty */
  if (rc) return rc;
  stream_rule rule;
  uint64_t count;
  if ((rc = scan_rule_get(txn, e, sc->name, sc->name_len, &rule, &count))) return rc;
  if (rule.hard) return SCAN_DELETED;
  count = m.count;
  if (!sc->backward) {
    /* Versions below the first visible one are hidden: skip them unread. */
    uint64_t first = retention_first_version(&rule, count);
    if (sc->next < first) {
      if (sc->has_bound && first > sc->bound) first = sc->bound + 1;
      if ((int64_t)first - 1 > sc->hidden_upto) sc->hidden_upto = (int64_t)first - 1;
      sc->next = first;
      if (sc->has_bound && first > sc->bound) { sc->done = 1; return 0; }
    }
  }
  MDB_cursor *c, *log;
  if ((rc = mdb_cursor_open(txn, e->dbi[DB_STREAM_INDEX], &c))) return rc;
  if ((rc = mdb_cursor_open(txn, e->dbi[DB_LOG], &log))) {
    mdb_cursor_close(c);
    return rc;
  }
  unsigned char key[16];
  stream_index_key(key, m.id, sc->next);
  MDB_val k, d, rec;
  int stopped = 0;             /* by until_position, until_time or count, not by the stream's end */
  rc = scan_seek(c, key, 16, 8, sc->backward, &k, &d);
  for (int visits = 0; rc == 0; visits++) {
    if (k.mv_size != 16 || d.mv_size != 8) { rc = MDB_CORRUPTED; break; }
    uint64_t version = get_u64be((unsigned char *)k.mv_data + 8);
    uint64_t pos = get_u64be(d.mv_data);
    /* A forward scan that finds a version missing before this one: it was
     * hidden and scavenged. */
    if (!sc->backward && version > sc->next) {
      uint64_t upto = sc->has_bound && version - 1 > sc->bound ? sc->bound : version - 1;
      if ((int64_t)upto > sc->hidden_upto) sc->hidden_upto = (int64_t)upto;
    }
    if (!scan_in_range(sc, version)) { sc->done = 1; stopped = 1; break; }
    if ((rc = scan_get_record(log, pos, &rec))) break;
    int more = scan_take_ruled(sc, &rec, pos, rule.hides ? &rule : NULL, count, NULL, NULL);
    if (sc->done) stopped = 1;
    if (!scan_step(sc, version)) { sc->done = 1; stopped = 1; break; }
    if (!more || visits >= SCAN_BATCH_VISITS) break;
    rc = mdb_cursor_get(c, &k, &d, sc->backward ? MDB_PREV : MDB_NEXT);
    if (rc == 0 && (k.mv_size < 8 || memcmp(k.mv_data, key, 8) != 0)) rc = MDB_NOTFOUND;
  }
  if (rc == MDB_NOTFOUND) {
    /* The stream's end: versions after the last index entry were scavenged. */
    if (!sc->backward && !stopped && count > 0 && sc->next <= count - 1) {
      uint64_t upto = sc->has_bound && count - 1 > sc->bound ? sc->bound : count - 1;
      if ((int64_t)upto > sc->hidden_upto) sc->hidden_upto = (int64_t)upto;
    }
    sc->done = 1;
    rc = 0;
  }
  mdb_cursor_close(log);
  mdb_cursor_close(c);
  return rc;
}

/* SCAN_STREAMS batches hold (name length u16, name, stream_meta bytes) records. */
static int scan_fill_streams(scanner *sc, MDB_txn *txn, const envref *e) {
  MDB_cursor *c;
  int rc = mdb_cursor_open(txn, e->dbi[DB_STREAMS], &c);
  if (rc) return rc;
  MDB_val k = { sc->name_len, sc->name }, d;
  rc = sc->name_len ? mdb_cursor_get(c, &k, &d, MDB_SET_RANGE) : mdb_cursor_get(c, &k, &d, MDB_FIRST);
  if (rc == 0 && sc->started && k.mv_size == sc->name_len && memcmp(k.mv_data, sc->name, sc->name_len) == 0)
    rc = mdb_cursor_get(c, &k, &d, MDB_NEXT);
  while (rc == 0) {
    if (k.mv_size < sc->prefix_len || memcmp(k.mv_data, sc->name, sc->prefix_len) != 0) { sc->done = 1; break; }
    if (k.mv_size > RECORD_MAX_STREAM || d.mv_size < STREAM_META_SIZE) { rc = MDB_CORRUPTED; break; }
    unsigned char len[2];
    put_u16be(len, (uint16_t)k.mv_size);
    scan_item it = { sc->records.len, 2 + k.mv_size + STREAM_META_SIZE, 0 };
    if (buf_append(&sc->records, len, 2) || buf_append(&sc->records, k.mv_data, k.mv_size) ||
        buf_append(&sc->records, d.mv_data, STREAM_META_SIZE) || buf_append(&sc->items, &it, sizeof it)) {
      rc = ENOMEM;
      break;
    }
    memcpy(sc->name + sc->prefix_len, (unsigned char *)k.mv_data + sc->prefix_len, k.mv_size - sc->prefix_len);
    sc->name_len = k.mv_size;
    sc->started = 1;
    sc->count++;
    if (sc->remaining > 0 && --sc->remaining == 0) { sc->done = 1; break; }
    if (sc->count >= SCAN_BATCH_ITEMS) break;
    rc = mdb_cursor_get(c, &k, &d, MDB_NEXT);
  }
  if (rc == MDB_NOTFOUND) { sc->done = 1; rc = 0; }
  mdb_cursor_close(c);
  return rc;
}

/* SCAN_KV batches hold (key length u16, key without the space, value) records.
 * name holds where to start, then the last key returned once started. */
static int scan_kv_beyond_edge(const scanner *sc, const MDB_val *k) {
  const scan_kv_range *r = sc->kv;
  if (!r->has_edge) return 0;
  size_t n = k->mv_size < r->edge_len ? k->mv_size : r->edge_len;
  int c = memcmp(k->mv_data, r->edge, n);
  if (c == 0) c = k->mv_size < r->edge_len ? -1 : k->mv_size > r->edge_len;
  return sc->backward ? c < 0 : c > 0;
}

static int scan_fill_kv(scanner *sc, MDB_txn *txn, const envref *e) {
  MDB_cursor *c;
  int rc = mdb_cursor_open(txn, e->dbi[DB_KV], &c);
  if (rc) return rc;
  MDB_val k = { sc->name_len, sc->name }, d;
  if (sc->from_last) {
    rc = mdb_cursor_get(c, &k, &d, MDB_LAST);
    sc->from_last = 0;
  } else {
    rc = mdb_cursor_get(c, &k, &d, MDB_SET_RANGE);
    int same = rc == 0 && k.mv_size == sc->name_len && memcmp(k.mv_data, sc->name, sc->name_len) == 0;
    if (sc->backward) {
      if (rc == MDB_NOTFOUND) rc = mdb_cursor_get(c, &k, &d, MDB_LAST);
      else if (rc == 0 && (!same || sc->started)) rc = mdb_cursor_get(c, &k, &d, MDB_PREV);
    } else if (same && sc->started) {
      rc = mdb_cursor_get(c, &k, &d, MDB_NEXT);
    }
  }
  const scan_kv_range *r = sc->kv;
  size_t skip = 1 + r->prefix[0];            /* the space part of every key */
  while (rc == 0) {
    if (k.mv_size < r->prefix_len || memcmp(k.mv_data, r->prefix, r->prefix_len) != 0 ||
        scan_kv_beyond_edge(sc, &k)) {
      sc->done = 1;
      break;
    }
    unsigned char len[2];
    put_u16be(len, (uint16_t)(k.mv_size - skip));
    scan_item it = { sc->records.len, 2 + k.mv_size - skip + d.mv_size, 0 };
    if (buf_append(&sc->records, len, 2) || buf_append(&sc->records, (unsigned char *)k.mv_data + skip, k.mv_size - skip) ||
        buf_append(&sc->records, d.mv_data, d.mv_size) || buf_append(&sc->items, &it, sizeof it)) {
      rc = ENOMEM;
      break;
    }
    memcpy(sc->name, k.mv_data, k.mv_size);
    sc->name_len = k.mv_size;
    sc->started = 1;
    sc->count++;
    if (sc->remaining > 0 && --sc->remaining == 0) { sc->done = 1; break; }
    if (sc->count >= SCAN_BATCH_ITEMS || sc->records.len >= SCAN_BATCH_BYTES) break;
    rc = mdb_cursor_get(c, &k, &d, sc->backward ? MDB_PREV : MDB_NEXT);
  }
  if (rc == MDB_NOTFOUND) { sc->done = 1; rc = 0; }
  mdb_cursor_close(c);
  return rc;
}

/* Loads the next batch. Returns 0 when the batch is empty and the scan is over. */
static int scan_fill(lua_State *L, scanner *sc, int sc_idx) {
  sc->records.len = sc->items.len = 0;
  sc->at = sc->count = 0;
  while (!sc->done && sc->count == 0) {
    store *s = scan_store(L, sc_idx);
    MDB_txn *txn;
    int rc = store_read_begin(s, &txn);
    if (rc == 0) {
      switch (sc->mode) {
        case SCAN_ALL: rc = scan_fill_log(sc, txn, s->e); break;
        case SCAN_CATEGORY: rc = scan_fill_category(sc, txn, s->e); break;
        case SCAN_STREAM: rc = scan_fill_stream(sc, txn, s->e); break;
        case SCAN_KV: rc = scan_fill_kv(sc, txn, s->e); break;
        default: rc = scan_fill_streams(sc, txn, s->e); break;
      }
      store_read_end(s, txn);
    }
    if (rc) {
      sc->err_rc = rc;
      sc->done = 1;
    }
  }
  return sc->count > 0;
}

/* Pushes the error object for a failure the scan met. */
static void scan_push_error(lua_State *L, scanner *sc) {
  if (sc->err_rc == SCAN_CORRUPT) {
    cerr_new(L, "corrupt", "event at position %I is damaged: %s", (lua_Integer)sc->err_position, sc->err_why);
    lua_pushinteger(L, (lua_Integer)sc->err_position);
    lua_setfield(L, -2, "position");
  } else if (sc->err_rc == SCAN_DELETED) {
    char name[RECORD_MAX_STREAM + 1];
    memcpy(name, sc->name, sc->name_len);
    name[sc->name_len] = '\0';
    cerr_new(L, "stream_deleted", "stream '%s' is deleted (a hard delete: it cannot be read or written again)", name);
    lua_pushlstring(L, name, sc->name_len);
    lua_setfield(L, -2, "stream");
  } else if (sc->err_rc == SCAN_BAD_RULE) {
    cerr_new(L, "corrupt", "read: the stream metadata of the event at position %I does not decode",
             (lua_Integer)sc->err_position);
  } else {
    cerr_new(L, cerr_code_of(sc->err_rc), "read: %s", mdb_strerror(sc->err_rc));
  }
}

static void scan_push_stream_item(lua_State *L, const unsigned char *p) {
  size_t len = get_u16be(p);
  stream_meta sm;
  stream_meta_decode(p + 2 + len, &sm);
  store_push_stream_meta(L, p + 2, len, &sm);
}

/* Pushes key, value of a SCAN_KV item; returns 2. */
static int scan_push_kv_item(lua_State *L, scanner *sc, const scan_item *it) {
  const unsigned char *p = sc->records.data + it->off;
  size_t klen = get_u16be(p);
  lua_pushlstring(L, (const char *)p + 2, klen);
  const char *why;
  if (!codec_decode(L, p + 2 + klen, it->len - 2 - klen, &why)) {
    cerr_new(L, "corrupt", "kv_scan: the value of '%s' does not decode: %s", lua_tostring(L, -1), why);
    lua_error(L);
  }
  return 2;
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

/* The generic-for step: the next item, or nil at the end (releasing the batch). */
static int scan_iter(lua_State *L) {
  scanner *sc = luaL_checkudata(L, 1, SCANNER_MT);
  if (sc->at == sc->count && !scan_fill(L, sc, 1)) {
    scan_end_reveal(L, sc, 1);
    if (sc->err_rc) {
      scan_push_error(L, sc);
      sc->err_rc = 0;
      scan_release(sc);
      return lua_error(L);
    }
    scan_release(sc);
    return 0;
  }
  scan_item *it = &SCAN_ITEMS(sc)[sc->at++];
  const unsigned char *p = sc->records.data + it->off;
  if (sc->mode == SCAN_KV) return scan_push_kv_item(L, sc, it);
  if (sc->mode == SCAN_STREAMS) scan_push_stream_item(L, p);
  else scan_push_event(L, sc, p, it->len, it->position);
  return 1;
}

/* Returns the four values of a generic for: step, scanner, nil, scanner (to close).
 * `reveal` is the stack index of the read's reveal function (store.lua), or 0. */
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

/* store:read(stream [, {from, count, backward}] [, reveal]) -> iterator */
static int scan_read(lua_State *L) {
  store_check(L, 1);
  lua_settop(L, 4);                    /* the reveal function's slot, before the scanner's */
  int opts = scan_options(L, 3, "read", opt_read_spec);
  scanner *sc = scan_new(L, SCAN_STREAM);
  int sc_idx = lua_gettop(L);
  scan_configure(L, sc, opts, 2, "read");
  return scan_return_iterator(L, sc_idx, 4);
}

/* store:read_all([{from, to, count, backward, category, types}] [, reveal]) -> iterator */
static int scan_read_all(lua_State *L) {
  store_check(L, 1);
  lua_settop(L, 3);
  int opts = scan_options(L, 2, "read_all", opt_read_all_spec);
  scanner *sc = scan_new(L, SCAN_ALL);
  int sc_idx = lua_gettop(L);
  scan_configure(L, sc, opts, 0, "read_all");
  return scan_return_iterator(L, sc_idx, 3);
}

/* store:streams([{prefix, after, count}]) -> iterator of stream_info tables, by name */
static int scan_streams(lua_State *L) {
  store_check(L, 1);
  int opts = scan_options(L, 2, "streams", opt_streams_spec);
  scanner *sc = scan_new(L, SCAN_STREAMS);
  int sc_idx = lua_gettop(L);
  sc->remaining = opt_integer(L, opts, "streams", "count", -1, 0);
  if (sc->remaining == 0) sc->done = 1;
  if (opts) {
    lua_getfield(L, opts, "prefix");
    if (!lua_isnil(L, -1)) {
      scan_set_name(L, sc, lua_gettop(L), "streams", "option 'prefix'");
      sc->prefix_len = sc->name_len;
    }
    lua_getfield(L, opts, "after");
    if (!lua_isnil(L, -1)) {
      size_t plen = sc->prefix_len;
      scan_set_name(L, sc, lua_gettop(L), "streams", "option 'after'");
      if (sc->name_len < plen) sc->name_len = plen;   /* after is before the prefix: start at the prefix */
      sc->prefix_len = plen;
      sc->started = 1;
    }
    lua_pop(L, 2);
  }
  return scan_return_iterator(L, sc_idx, 0);
}

/* Sets `out` to the smallest key greater than every key starting with p[0..n);
 * returns 0 when there is none (p is all 0xff). */
static size_t scan_prefix_successor(const unsigned char *p, size_t n, unsigned char *out) {
  while (n > 0 && p[n - 1] == 0xff) n--;
  if (n == 0) return 0;
  memcpy(out, p, n);
  out[n - 1]++;
  return n;
}

/* store:kv_scan(space [, {prefix, from, to, count, backward}]) -> iterator of key, value in key order */
static int scan_kv(lua_State *L) {
  /* Keys are checked by kv_check_key. */
  store_check(L, 1);
  size_t slen;
  const char *space = kv_check_space(L, 2, "kv_scan", &slen);
  int opts = scan_options(L, 3, "kv_scan", opt_kv_scan_spec);
  lua_settop(L, 3);
  scanner *sc = scan_new(L, SCAN_KV);
  int sc_idx = lua_gettop(L);
  sc->remaining = opt_integer(L, opts, "kv_scan", "count", -1, 0);
  if (sc->remaining == 0) sc->done = 1;
  const char *prefix = "", *from = NULL, *to = NULL;
  size_t plen = 0, flen = 0, tlen = 0;
  if (opts) {
    lua_getfield(L, opts, "backward");
    sc->backward = lua_toboolean(L, -1);
    lua_getfield(L, opts, "prefix");
    if (!lua_isnil(L, -1)) prefix = kv_check_key(L, -1, "kv_scan: option 'prefix'", &plen);
    lua_getfield(L, opts, "from");
    if (!lua_isnil(L, -1)) from = kv_check_key(L, -1, "kv_scan: option 'from'", &flen);
    lua_getfield(L, opts, "to");
    if (!lua_isnil(L, -1)) to = kv_check_key(L, -1, "kv_scan: option 'to'", &tlen);
  }
  scan_kv_range *r = sc->kv = scan_calloc(L, sizeof *sc->kv);
  r->prefix_len = kv_key(r->prefix, space, slen, prefix, plen);
  memcpy(sc->name, r->prefix, r->prefix_len);
  sc->name_len = r->prefix_len;
  const char *start = sc->backward ? to : from, *edge = sc->backward ? from : to;
  size_t start_len = sc->backward ? tlen : flen, edge_len = sc->backward ? flen : tlen;
  if (edge) {
    r->edge_len = kv_key(r->edge, space, slen, edge, edge_len);
    r->has_edge = 1;
  }
  if (start) {
    unsigned char k[KV_KEY_MAX];
    size_t klen = kv_key(k, space, slen, start, start_len);
    /* A start before the prefix (forward) or after it (backward) clamps to the prefix. */
    int c = memcmp(k, r->prefix, klen < r->prefix_len ? klen : r->prefix_len);
    if (sc->backward ? c <= 0 : c >= 0) {
      memcpy(sc->name, k, klen);
      sc->name_len = klen;
    } else if (sc->backward) {
      start = NULL;
    }
  }
  if (sc->backward && !start) {
    unsigned char succ[KV_KEY_MAX];
    size_t n = scan_prefix_successor(r->prefix, r->prefix_len, succ);
    if (n == 0) sc->from_last = 1;
    else {
      memcpy(sc->name, succ, n);
      sc->name_len = n;
      sc->started = 1;         /* step back from the successor, which is outside the range */
    }
  }
  return scan_return_iterator(L, sc_idx, 0);
}

/* store:fold(query, state, fn [, reveal]) -> state, count, last_position, last_version
 * query: a stream name, or a table of read_all options plus `stream`.
 * fn(state, event) returns the new state, or nil to keep the (mutated) one.
 * reveal (store.lua) opens the events that carry personal data before fn sees them. */
static int scan_fold(lua_State *L) {
  store_check(L, 1);
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
  if (sc->err_rc) {
    lua_pushnil(L);
    scan_push_error(L, sc);
    scan_release(sc);
    return 2;
  }
  /* Hidden (or scavenged) versions count as read: the state is at the version after them. */
  if (sc->mode == SCAN_STREAM && sc->hidden_upto > w.last_version) w.last_version = (lua_Integer)sc->hidden_upto;
  scan_release(sc);
  lua_pushvalue(L, 3);
  lua_pushinteger(L, w.n);
  lua_pushinteger(L, w.last_position);
  lua_pushinteger(L, w.last_version);
  return 4;
}

/* store:position_of(id) -> the global position of the event with that id, or nil */
static int scan_position_of(lua_State *L) {
  store *s = store_check(L, 1);
  size_t len;
  const char *text = luaL_checklstring(L, 2, &len);
  unsigned char id[16];
  if (uuid_parse(text, len, id) != 0) luaL_argerror(L, 2, "an event id (a UUID string) expected");
  MDB_txn *txn;
  int rc = store_read_begin(s, &txn);
  uint64_t pos = 0;
  if (rc == 0) {
    MDB_val k = { 16, id }, d;
    rc = mdb_get(txn, s->e->dbi[DB_EVENT_IDS], &k, &d);
    if (rc == 0 && d.mv_size != 8) rc = MDB_CORRUPTED;
    if (rc == 0) pos = get_u64be(d.mv_data);
    store_read_end(s, txn);
  }
  if (rc == MDB_NOTFOUND) {
    lua_pushnil(L);
    return 1;
  }
  if (rc) {
    lua_pushnil(L);
    cerr_new(L, cerr_code_of(rc), "position_of: %s", mdb_strerror(rc));
    return 2;
  }
  lua_pushinteger(L, (lua_Integer)pos);
  return 1;
}

static const luaL_Reg scan_methods[] = {
  { "position_of", scan_position_of },
  { "read", scan_read },
  { "read_all", scan_read_all },
  { "streams", scan_streams },
  { "fold", scan_fold },
  { "kv_scan", scan_kv },
  { NULL, NULL }
};

void scan_register(lua_State *L) {
  event_push_keys(L);
  luaL_setfuncs(L, scan_methods, EVENT_KEYS);
  if (luaL_newmetatable(L, SCANNER_MT)) {
    lua_pushcfunction(L, scan_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, scan_close);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
}
