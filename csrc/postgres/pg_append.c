/* store:append, append_many and write on PostgreSQL. As on LMDB, everything a
 * caller can get wrong is checked and encoded first with no transaction open
 * (common/append_input.c, the same encoder);
 * then one transaction takes the row lock on meta.head (so appends commit one
 * after another, in position order, with no gaps: a reader that has seen
 * position p never later finds an event below p), checks expected versions
 * and ids, writes every event or none, applies the key-value ops, and sends a
 * NOTIFY that commits with it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <lauxlib.h>
#include <xxhash.h>
#include "common/append_input.h"
#include "common/bytes.h"
#include "common/cerror.h"
#include "common/options.h"
#include "common/codec.h"
#include "common/record.h"
#include "common/refusal.h"
#include "common/retention.h"
#include "pg.h"


/* What the caller asked for: append, append_many or write (results and messages differ). */
typedef enum { CALL_APPEND, CALL_APPEND_MANY, CALL_WRITE } call_kind;

#define INSERT_ROWS 500          /* events per INSERT statement */
#define MAX_RETRIES 5            /* serialization failures and deadlocks are retried */

enum { KV_CHECK, KV_CLEAR, KV_DELETE, KV_PUT };

typedef struct pending_kv {
  int op;
  size_t space_off, space_len;
  size_t key_off, key_len;
  size_t val_off, val_len;
  int absent;
} pending_kv;

typedef struct append_failure {
  const char *code;            /* "conflict", "duplicate_id" or "corrupt" */
  size_t stream;
  int exists;
  int64_t actual_count;
  unsigned char id[16];
  int64_t position;
  int replay;                  /* REPLAY_*: why a replay was refused */
  uint64_t replay_version;     /* the version a refused replay's first event has */
  size_t kv_op;
} append_failure;


#define PENDING_EVENTS(s) ((pending_event *)(s)->scratch_events.data)
#define PENDING_STREAMS(s) ((pending_stream *)(s)->scratch_streams.data)
#define PENDING_KV(s) ((pending_kv *)(s)->scratch_kv.data)

static void append_nomem(lua_State *L) { luaL_error(L, "append: out of memory"); }

/* ---------------------------------------------------------------- encoding (no transaction open) */

/* The store's scratch as the place an append is encoded. */
static append_input append_input_of(pgs *s) {
  append_input in = { &s->scratch_bytes, &s->scratch_events, &s->scratch_streams, s->max_event_size, s->sealer,
                      s->seal_idx };
  return in;
}

static const char *kv_check_name(lua_State *L, int idx, const char *where, size_t *len, size_t max,
                                 const char *what) {
  const char *p = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, len) : NULL;
  if (p == NULL || *len == 0 || *len > max)
    luaL_error(L, "%s: %s must be a string of 1 to %d bytes", where, what, (int)max);
  return p;
}

static void kv_encode_list(lua_State *L, pgs *s, int ops_idx, const char *field, int op) {
  lua_getfield(L, ops_idx, field);
  if (lua_isnil(L, -1)) { lua_pop(L, 1); return; }
  if (!lua_istable(L, -1)) luaL_error(L, "write: ops.%s must be a list", field);
  int list = lua_gettop(L);
  lua_Integer n = (lua_Integer)lua_rawlen(L, list);
  for (lua_Integer i = 1; i <= n; i++) {
    char where[64];
    snprintf(where, sizeof where, "write: %s[%lld]", field, (long long)i);
    if (op == KV_CLEAR) {
      lua_rawgeti(L, list, i);
    } else {
      if (lua_rawgeti(L, list, i) != LUA_TTABLE) luaL_error(L, "%s must be a {space, key%s} table", where,
                                                            op == KV_DELETE ? "" : ", value");
      lua_rawgeti(L, -1, 1);
      lua_replace(L, -2);
    }
    size_t slen, klen = 0;
    const char *space = kv_check_name(L, -1, where, &slen, PGS_MAX_SPACE, "space");
    pending_kv pk;
    memset(&pk, 0, sizeof pk);
    pk.op = op;
    pk.space_off = s->scratch_bytes.len;
    pk.space_len = slen;
    if (buf_append(&s->scratch_bytes, space, slen)) append_nomem(L);
    pk.key_off = s->scratch_bytes.len;
    if (op != KV_CLEAR) {
      lua_rawgeti(L, list, i);
      lua_rawgeti(L, -1, 2);
      const char *key = kv_check_name(L, -1, where, &klen, PGS_MAX_KEY, "key");
      pk.key_off = s->scratch_bytes.len;
      pk.key_len = klen;
      if (buf_append(&s->scratch_bytes, key, klen)) append_nomem(L);
    }
    if (op == KV_CHECK || op == KV_PUT) {
      lua_rawgeti(L, -2, 3);
      if (lua_isnil(L, -1) && op == KV_PUT) luaL_error(L, "%s: value is nil (use deletes to remove a key)", where);
      pk.absent = lua_isnil(L, -1);
      pk.val_off = s->scratch_bytes.len;
      if (!pk.absent) codec_encode_at(L, -1, &s->scratch_bytes, field, (long long)i, "value");
      pk.val_len = s->scratch_bytes.len - pk.val_off;
      lua_pop(L, 1);
    }
    lua_settop(L, list);
    if (buf_append(&s->scratch_kv, &pk, sizeof pk)) append_nomem(L);
  }
  lua_pop(L, 1);
}

/* ---------------------------------------------------------------- the transaction (no Lua calls) */

static int64_t append_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

typedef struct stream_row {
  int exists;
  int deleted;                 /* a tombstone in its metadata row (retention.h): no appends */
  int64_t count, first_position, last_position, created, updated;
} stream_row;

static int append_get_stream(pgs *s, const void *name, size_t len, stream_row *m) {
  pgs_params_reset(s);
  pgs_param_bytes(s, name, len);
  PGresult *r;
  int st = pgs_exec(s, "SELECT s.count, s.first_position, s.last_position, s.created, s.updated, m.value"
                       " FROM streams s LEFT JOIN kv m ON m.space = '" RETENTION_SPACE "'::bytea AND m.key = s.name"
                       " WHERE s.name = $1", &r);
  if (st) return st;
  memset(m, 0, sizeof *m);
  m->exists = PQntuples(r) == 1;
  if (m->exists) {
    m->count = pgs_get_int(r, 0, 0);
    m->first_position = pgs_get_int(r, 0, 1);
    m->last_position = pgs_get_int(r, 0, 2);
    m->created = pgs_get_int(r, 0, 3);
    m->updated = pgs_get_int(r, 0, 4);
    stream_rule rule;
    m->deleted = !PQgetisnull(r, 0, 5) &&
                 (retention_parse((const unsigned char *)PQgetvalue(r, 0, 5), (size_t)PQgetlength(r, 0, 5), &rule) != 0 ||
                  rule.hard);
  }
  PQclear(r);
  return PGS_OK;
}

static int append_expected_ok(const pending_stream *ps, const stream_row *m) {
  switch (ps->expected) {
    case EXPECT_NO_STREAM: return !m->exists;
    case EXPECT_EXISTS: return m->exists;
    case EXPECT_VERSION: return m->exists && m->count == (int64_t)ps->expected_version + 1;
    default: return 1;
  }
}

/* The place `expected` names for a replay whose first event has version v0. */
static int append_replay_place_ok(const pending_stream *ps, uint64_t v0) {
  switch (ps->expected) {
    case EXPECT_NO_STREAM: return v0 == 0;
    case EXPECT_EXISTS: return v0 > 0;
    case EXPECT_VERSION: return v0 == ps->expected_version + 1;
    default: return 1;
  }
}

static int id_cmp(const void *a, const void *b) { return memcmp(a, b, 16); }

/* An id given twice among the stream's events: 1 with f filled. */
static int append_twice(pgs *s, const pending_stream *ps, append_failure *f, int *st) {
  size_t n = 0;
  unsigned char *ids = malloc(16 * ps->n_events);
  if (!ids) { *st = PGS_NOMEM; return 1; }
  for (size_t j = 0; j < ps->n_events; j++) {
    const pending_event *pe = &PENDING_EVENTS(s)[ps->first_event + j];
    if (pe->has_id) memcpy(ids + 16 * n++, pe->id, 16);
  }
  qsort(ids, n, 16, id_cmp);
  int dup = 0;
  for (size_t j = 1; j < n && !dup; j++)
    if (memcmp(ids + 16 * (j - 1), ids + 16 * j, 16) == 0) {
      dup = 1;
      f->code = "duplicate_id";
      memcpy(f->id, ids + 16 * j, 16);
      f->position = 0;
    }
  free(ids);
  return dup;
}

#define ID_CHUNK 1000           /* ids per lookup statement */

/* What the id lookups found, over all chunks, in event order. */
typedef struct replay_scan {
  size_t stored;             /* events whose id is stored */
  int partial_found;         /* the first stored event (for a partial replay) */
  unsigned char partial_id[16];
  int64_t partial_position;
  int mismatch;              /* REPLAY_*: the first stored event that differs or is twice; -1: damaged */
  unsigned char mismatch_id[16];
  int64_t mismatch_position;
  uint64_t first_version;
  int out_of_place;          /* the stored events are not consecutive in the given order */
} replay_scan;

/* Is pending event `index`'s id also the id of one of the pending events [from, upto)? */
static int append_id_among(pgs *s, size_t from, size_t upto, size_t index) {
  const pending_event *all = PENDING_EVENTS(s);
  for (size_t i = from; i < upto; i++)
    if (all[i].has_id && memcmp(all[i].id, all[index].id, 16) == 0) return 1;
  return 0;
}

/* Looks up the ids of events [from, to) of the stream (all given) in one statement. */
static int append_check_chunk(pgs *s, pending_stream *ps, size_t from, size_t to, int64_t start_head,
                              replay_scan *rs) {
  const unsigned char *bytes = s->scratch_bytes.data;
  buf *sql = &s->sql;
  sql->len = 0;
  const char *head = "SELECT id, position, record FROM events WHERE id IN (";
  if (buf_append(sql, head, strlen(head))) return PGS_NOMEM;
  pgs_params_reset(s);
  for (size_t j = from; j < to; j++) {
    char ph[24];
    int n = snprintf(ph, sizeof ph, "%s$%zu::bytea", j > from ? "," : "", j - from + 1);
    if (buf_append(sql, ph, (size_t)n) || pgs_param_bytes(s, PENDING_EVENTS(s)[ps->first_event + j].id, 16))
      return PGS_NOMEM;
  }
  if (buf_append(sql, ")", 2)) return PGS_NOMEM;
  PGresult *r;
  int st = pgs_exec(s, (const char *)sql->data, &r);
  if (st) return st;
  int rows = PQntuples(r);
  for (size_t j = from; j < to && rows > 0; j++) {
    pending_event *pe = &PENDING_EVENTS(s)[ps->first_event + j];
    int row = -1;
    for (int k = 0; k < rows; k++)
      if (PQgetlength(r, k, 0) == 16 && memcmp(PQgetvalue(r, k, 0), pe->id, 16) == 0) { row = k; break; }
    if (row < 0) continue;
    int64_t pos = pgs_get_int(r, row, 1);
    if (!rs->partial_found) {
      rs->partial_found = 1;
      memcpy(rs->partial_id, pe->id, 16);
      rs->partial_position = pos;
    }
    rs->stored++;
    if (rs->mismatch) continue;
    record_view v;
    const char *why;
    int damaged = record_parse((const unsigned char *)PQgetvalue(r, row, 2), (size_t)PQgetlength(r, row, 2), &v, &why);
    int differs = REPLAY_NONE;
    if (damaged) differs = -1;
    else if (v.stream_len != ps->name_len || memcmp(v.stream, bytes + ps->name_off, v.stream_len))
      differs = REPLAY_STREAM;
    else if (v.type_len != pe->type_len || memcmp(v.type, bytes + pe->type_off, v.type_len))
      differs = REPLAY_TYPE;
    else if (!codec_equal(v.data, v.data_len, bytes + pe->data_off, pe->data_len))
      differs = REPLAY_DATA;
    else if (!codec_equal(v.meta, v.meta_len, bytes + pe->meta_off, pe->meta_len))
      differs = REPLAY_META;
    /* written by this append, or replayed by an earlier entry of it */
    else if (pos > start_head || append_id_among(s, 0, ps->first_event, ps->first_event + j))
      differs = REPLAY_TWICE;
    if (differs) {
      rs->mismatch = differs;
      memcpy(rs->mismatch_id, pe->id, 16);
      rs->mismatch_position = pos;
      continue;
    }
    if (j == 0) rs->first_version = v.version;
    else if (v.version != rs->first_version + j) rs->out_of_place = 1;
    ps->version = v.version;
    ps->position = (uint64_t)pos;
    ps->time = v.time;
  }
  PQclear(r);
  return PGS_OK;
}

/* Looks up the stream's given ids. Returns PGS_OK when none is stored, or
 * when every event is a replay of the stored one at the place `expected`
 * names (then *replayed is set and ps holds the original result);
 * PGS_REFUSED with f filled otherwise. */
/* Refuses with duplicate_id for pending event `index`, stored at pos (REPLAY_TWICE, and no
 * position, when this append wrote it itself or names it twice). */
static int append_refuse_id(pgs *s, size_t index, int64_t pos, int64_t start_head, int why,
                            append_failure *f) {
  f->code = "duplicate_id";
  memcpy(f->id, PENDING_EVENTS(s)[index].id, 16);
  if (why == REPLAY_TWICE || pos > start_head || append_id_among(s, 0, index, index)) {
    f->replay = REPLAY_TWICE;
    f->position = 0;
  } else {
    f->replay = why;
    f->position = pos;
  }
  return PGS_REFUSED;
}

/* The pending event of stream ps with this id. */
static size_t append_event_index(pgs *s, const pending_stream *ps, const unsigned char *id) {
  for (size_t j = 0; j < ps->n_events; j++) {
    const pending_event *pe = &PENDING_EVENTS(s)[ps->first_event + j];
    if (pe->has_id && memcmp(pe->id, id, 16) == 0) return ps->first_event + j;
  }
  return ps->first_event;
}

static int append_check_ids(pgs *s, pending_stream *ps, const stream_row *m, int64_t start_head,
                            append_failure *f, int *replayed) {
  *replayed = 0;
  size_t given = 0;
  for (size_t j = 0; j < ps->n_events; j++) given += PENDING_EVENTS(s)[ps->first_event + j].has_id != 0;
  if (given == 0) return PGS_OK;
  replay_scan rs;
  memset(&rs, 0, sizeof rs);
  /* Chunks of consecutive events that all carry ids (the others cannot be stored). */
  for (size_t j = 0; j < ps->n_events;) {
    if (!PENDING_EVENTS(s)[ps->first_event + j].has_id) { j++; continue; }
    size_t end = j;
    while (end < ps->n_events && end - j < ID_CHUNK && PENDING_EVENTS(s)[ps->first_event + end].has_id) end++;
    int st = append_check_chunk(s, ps, j, end, start_head, &rs);
    if (st) return st;
    j = end;
  }
  if (rs.stored == 0) return PGS_OK;
  if (rs.stored < ps->n_events)        /* stored events mixed with new ones: no replay */
    return append_refuse_id(s, append_event_index(s, ps, rs.partial_id), rs.partial_position, start_head,
                            REPLAY_MIXED, f);
  if (rs.mismatch < 0) {
    f->code = "corrupt";
    memcpy(f->id, rs.mismatch_id, 16);
    f->position = rs.mismatch_position;
    return PGS_REFUSED;
  }
  if (rs.mismatch)
    return append_refuse_id(s, append_event_index(s, ps, rs.mismatch_id), rs.mismatch_position, start_head,
                            rs.mismatch, f);
  if (rs.out_of_place || !append_replay_place_ok(ps, rs.first_version)) {
    f->code = "conflict";
    f->replay = rs.out_of_place ? REPLAY_ORDER : REPLAY_PLACE;
    f->exists = 1;
    f->actual_count = m->exists ? m->count : 0;
    f->replay_version = rs.first_version;
    return PGS_REFUSED;
  }
  *replayed = 1;
  return PGS_OK;
}

/* Builds events [start, end) of the stream (records sealed into recs) as an INSERT into
 * s->sql, its parameters added after those already there. */
static int append_events_sql(pgs *s, pending_stream *ps, const stream_row *m, int64_t head, int64_t now,
                             buf *recs, size_t start, size_t end) {
  const unsigned char *bytes = s->scratch_bytes.data;
  const unsigned char *name = bytes + ps->name_off;
  size_t cat_len = pgs_category_len(name, ps->name_len);
  recs->len = 0;
  size_t *offs = malloc(sizeof *offs * (end - start));
  if (!offs) return PGS_NOMEM;
  for (size_t j = start; j < end; j++) {
    pending_event *pe = &PENDING_EVENTS(s)[ps->first_event + j];
    size_t len = RECORD_HEADER + ps->name_len + pe->type_len + pe->meta_len + pe->data_len;
    offs[j - start] = recs->len;
    if (buf_reserve(recs, len)) { free(offs); return PGS_NOMEM; }
    unsigned char *rec = recs->data + recs->len, *p = rec + RECORD_HEADER;
    memcpy(p, name, ps->name_len); p += ps->name_len;
    memcpy(p, bytes + pe->type_off, pe->type_len); p += pe->type_len;
    memcpy(p, bytes + pe->meta_off, pe->meta_len); p += pe->meta_len;
    memcpy(p, bytes + pe->data_off, pe->data_len);
    record_view v = { .stream_len = ps->name_len, .type_len = pe->type_len, .meta_len = pe->meta_len,
                      .id = pe->id, .version = (uint64_t)m->count + j,
                      .time = pe->has_time ? pe->time : now, .schema = pe->schema };
    record_seal(rec, len, &v);
    recs->len += len;
  }
  buf *sql = &s->sql;
  const char *ins = "INSERT INTO events (position, stream, version, category, type, id, record) VALUES ";
  int st = buf_append(sql, ins, strlen(ins)) ? PGS_NOMEM : PGS_OK;
  for (size_t j = start; j < end && !st; j++) {
    pending_event *pe = &PENDING_EVENTS(s)[ps->first_event + j];
    size_t b = (size_t)s->p.n;
    char row[200];
    int n = snprintf(row, sizeof row, "%s($%zu::int8,$%zu::bytea,$%zu::int8,$%zu::bytea,$%zu::bytea,$%zu::bytea,$%zu::bytea)",
                     j > start ? "," : "", b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7);
    size_t len = RECORD_HEADER + ps->name_len + pe->type_len + pe->meta_len + pe->data_len;
    if (buf_append(sql, row, (size_t)n) || pgs_param_int(s, head + 1 + (int64_t)j) ||
        pgs_param_bytes(s, name, ps->name_len) || pgs_param_int(s, m->count + (int64_t)j) ||
        pgs_param_bytes(s, name, cat_len) || pgs_param_bytes(s, bytes + pe->type_off, pe->type_len) ||
        pgs_param_bytes(s, pe->id, 16) || pgs_param_bytes(s, recs->data + offs[j - start], len))
      st = PGS_NOMEM;
  }
  free(offs);
  return st;
}

/* Inserts the stream's events at positions head+1.. in chunks. */
static int append_insert_events(pgs *s, pending_stream *ps, const stream_row *m, int64_t head, int64_t now,
                                buf *recs) {
  for (size_t start = 0; start < ps->n_events; start += INSERT_ROWS) {
    size_t end = start + INSERT_ROWS < ps->n_events ? start + INSERT_ROWS : ps->n_events;
    s->sql.len = 0;
    pgs_params_reset(s);
    int st = append_events_sql(s, ps, m, head, now, recs, start, end);
    if (!st && buf_append(&s->sql, "", 1)) st = PGS_NOMEM;
    if (!st) st = pgs_send(s, (const char *)s->sql.data);
    if (st) return st;
  }
  return PGS_OK;
}

static int append_put_stream(pgs *s, const pending_stream *ps, const stream_row *m) {
  pgs_params_reset(s);
  pgs_param_bytes(s, s->scratch_bytes.data + ps->name_off, ps->name_len);
  pgs_param_int(s, m->count);
  pgs_param_int(s, m->first_position);
  pgs_param_int(s, m->last_position);
  pgs_param_int(s, m->created);
  pgs_param_int(s, m->updated);
  return pgs_send(s, "INSERT INTO streams VALUES ($1::bytea, $2::int8, $3::int8, $4::int8, $5::int8, $6::int8)"
                    " ON CONFLICT (name) DO UPDATE SET count = EXCLUDED.count,"
                    " last_position = EXCLUDED.last_position, updated = EXCLUDED.updated");
}

static int kv_apply_ops(pgs *s, append_failure *f) {
  size_t n = s->scratch_kv.len / sizeof(pending_kv);
  const unsigned char *bytes = s->scratch_bytes.data;
  static const char *const sql[] = {
    "SELECT value FROM kv WHERE space = $1::bytea AND key = $2::bytea",
    "DELETE FROM kv WHERE space = $1::bytea",
    "DELETE FROM kv WHERE space = $1::bytea AND key = $2::bytea",
    "INSERT INTO kv VALUES ($1::bytea, $2::bytea, $3::bytea)"
    " ON CONFLICT (space, key) DO UPDATE SET value = EXCLUDED.value",
  };
  for (size_t i = 0; i < n; i++) {
    const pending_kv *pk = &PENDING_KV(s)[i];
    pgs_params_reset(s);
    pgs_param_bytes(s, bytes + pk->space_off, pk->space_len);
    if (pk->op != KV_CLEAR) pgs_param_bytes(s, bytes + pk->key_off, pk->key_len);
    if (pk->op == KV_PUT) pgs_param_bytes(s, bytes + pk->val_off, pk->val_len);
    if (pk->op != KV_CHECK) {          /* only a failure matters: pipelined */
      int st = pgs_send(s, sql[pk->op]);
      if (st) return st;
      continue;
    }
    PGresult *r;
    int st = pgs_exec(s, sql[pk->op], &r);
    if (st) return st;
    int found = PQntuples(r) == 1;
    int ok = pk->absent ? !found
                        : found && (size_t)PQgetlength(r, 0, 0) == pk->val_len &&
                          memcmp(PQgetvalue(r, 0, 0), bytes + pk->val_off, pk->val_len) == 0;
    PQclear(r);
    if (!ok) { f->kv_op = i; return PGS_CHECK_FAILED; }
  }
  return PGS_OK;
}

/* Everything between BEGIN and COMMIT. */
static int append_in_txn(pgs *s, size_t nstreams, append_failure *f, buf *recs, int64_t *new_head) {
  /* The transaction, and the lock that orders every write (held until it
   * ends), in one round trip; the head comes back as text. */
  PGresult *r = PQexec(s->conn, "BEGIN; SELECT value FROM meta WHERE key = 'head' FOR UPDATE");
  int st = pgs_result_status(s, r);
  if (st) { PQclear(r); return st; }
  if (PQntuples(r) != 1) {
    PQclear(r);
    snprintf(s->err, sizeof s->err, "the meta table has no head row");
    return PGS_CORRUPT;
  }
  int64_t head = strtoll(PQgetvalue(r, 0, 0), NULL, 10), start_head = head;
  PQclear(r);
  int64_t now = append_now();
  for (size_t i = 0; i < nstreams; i++) {
    pending_stream *ps = &PENDING_STREAMS(s)[i];
    f->stream = i;
    stream_row m;
    if ((st = append_get_stream(s, s->scratch_bytes.data + ps->name_off, ps->name_len, &m))) return st;
    if (m.deleted) {
      f->code = "stream_deleted";
      return PGS_REFUSED;
    }
    if (append_twice(s, ps, f, &st)) return st ? st : PGS_REFUSED;
    int replayed;
    if ((st = append_check_ids(s, ps, &m, start_head, f, &replayed))) return st;
    if (replayed) { ps->replayed = 1; continue; }
    if (!append_expected_ok(ps, &m)) {
      f->code = "conflict";
      f->exists = m.exists;
      f->actual_count = m.exists ? m.count : 0;
      return PGS_REFUSED;
    }
    if (!m.exists) {
      m.first_position = head + 1;
      m.created = now;
      m.count = 0;
    }
    if ((st = append_insert_events(s, ps, &m, head, now, recs))) return st;
    head += (int64_t)ps->n_events;
    m.count += (int64_t)ps->n_events;
    m.last_position = head;
    m.updated = now;
    if ((st = append_put_stream(s, ps, &m))) return st;
    ps->version = (uint64_t)m.count - 1;
    ps->position = (uint64_t)head;
    ps->time = now;
  }
  if ((st = kv_apply_ops(s, f))) return st;
  *new_head = head;
  if (head != start_head) {
    pgs_params_reset(s);
    pgs_param_int(s, head);
    pgs_param_text(s, s->channel);
    st = pgs_send(s, "WITH moved AS (UPDATE meta SET value = $1::int8 WHERE key = 'head' RETURNING value)"
                     " SELECT pg_notify($2::text, (SELECT value FROM moved)::text)");
    if (st) return st;
  }
  return PGS_OK;
}

/* ---------------------------------------------- one round trip, predicted */

/* An append whose head and stream counts this connection can predict (it wrote last, and
 * knows the streams' counts or is told them by `expected`) goes to the server in one flight:
 * BEGIN, the head lock checking the predicted head, the events, each stream's row checked
 * and moved, the head and NOTIFY, COMMIT. When a prediction was stale (another process wrote
 * meanwhile), the server refuses the flight (expect_fresh's CH001, or a unique violation on
 * a position, a version or an id) and the append is sent again the long way, which reads
 * what it needs under the lock; so the results, conflicts and replays are those of the long
 * way. Appends with key-value operations always go the long way. */

/* The MessagePack of the pair deleted = "hard" (retention.h): in a stream's metadata row, a
 * tombstone; a predicted append to such a stream is refused and goes the long way, which
 * refuses it with stream_deleted. (The same bytes inside a custom value only cost the long way.) */
#define TOMBSTONE_BYTES "'\\xa764656c65746564a468617264'::bytea"

#define PREDICT_STREAMS 8        /* streams of an append_many the predicted path takes */
#define PREDICT_BACKOFF_MAX 64   /* appends sent the long way after repeated misses */

static stream_count *count_slot(pgs *s, const unsigned char *name, size_t len, uint64_t *hash) {
  if (len > PGS_COUNT_NAME) return NULL;
  if (!s->counts && !(s->counts = calloc(PGS_COUNTS, sizeof *s->counts))) return NULL;
  *hash = XXH3_64bits(name, len) | 1;      /* never 0, the empty slot */
  return &s->counts[*hash % PGS_COUNTS];
}

/* The remembered count of a stream: 1 with *count, or 0 when not remembered. */
static int count_recall(pgs *s, const unsigned char *name, size_t len, int64_t *count) {
  uint64_t h;
  stream_count *c = count_slot(s, name, len, &h);
  if (!c || c->hash != h || c->len != len || memcmp(c->name, name, len)) return 0;
  *count = c->count;
  return 1;
}

static void count_remember(pgs *s, const unsigned char *name, size_t len, int64_t count) {
  uint64_t h;
  stream_count *c = count_slot(s, name, len, &h);
  if (!c) return;
  c->hash = h;
  c->len = (unsigned char)len;
  memcpy(c->name, name, len);
  c->count = count;
}

static void count_forget(pgs *s, const unsigned char *name, size_t len) {
  uint64_t h;
  stream_count *c = count_slot(s, name, len, &h);
  if (c && c->hash == h) c->hash = 0;
}

/* The count each stream starts from, when the append can take the predicted path. */
static int append_predict(pgs *s, size_t nstreams, int64_t *counts) {
  if (!s->head_known || s->scratch_kv.len || nstreams == 0 || nstreams > PREDICT_STREAMS) return 0;
  if (s->predict_skip > 0) { s->predict_skip--; return 0; }
  const unsigned char *bytes = s->scratch_bytes.data;
  for (size_t i = 0; i < nstreams; i++) {
    const pending_stream *ps = &PENDING_STREAMS(s)[i];
    const unsigned char *name = bytes + ps->name_off;
    for (size_t k = 0; k < i; k++) {          /* a stream twice: its second start depends on the first */
      const pending_stream *o = &PENDING_STREAMS(s)[k];
      if (o->name_len == ps->name_len && memcmp(bytes + o->name_off, name, ps->name_len) == 0) return 0;
    }
    int64_t known;
    int remembered = count_recall(s, name, ps->name_len, &known);
    switch (ps->expected) {
      case EXPECT_VERSION: counts[i] = (int64_t)ps->expected_version + 1; break;
      case EXPECT_NO_STREAM: counts[i] = 0; break;
      case EXPECT_EXISTS:
        if (!remembered || known == 0) return 0;
        counts[i] = known;
        break;
      default: counts[i] = remembered ? known : 0;   /* a stream not seen yet is mostly new */
    }
  }
  return 1;
}

/* The events of one stream, its row checked and moved, the head and NOTIFY: one statement
 * (data-modifying WITH clauses all run, in one executor start). */
static int append_predicted_one(pgs *s, pending_stream *ps, int64_t count, int64_t head, int64_t now,
                                buf *recs) {
  stream_row m;
  memset(&m, 0, sizeof m);
  m.exists = count > 0;
  m.count = count;
  buf *sql = &s->sql;
  sql->len = 0;
  pgs_params_reset(s);
  int st = buf_append(sql, "WITH ev AS (", 12) ? PGS_NOMEM : PGS_OK;
  if (!st) st = append_events_sql(s, ps, &m, head, now, recs, 0, ps->n_events);
  int64_t last = head + (int64_t)ps->n_events;
  int a = s->p.n + 1;                         /* $a name, $a+1 count, $a+2 last, $a+3 now, $a+4 old/first */
  if (!st && (pgs_param_bytes(s, s->scratch_bytes.data + ps->name_off, ps->name_len) ||
              pgs_param_int(s, count + (int64_t)ps->n_events) || pgs_param_int(s, last) ||
              pgs_param_int(s, now) || pgs_param_int(s, m.exists ? count : head + 1) ||
              pgs_param_text(s, s->channel)))
    st = PGS_NOMEM;
  char tail[640];
  int n = m.exists
    ? snprintf(tail, sizeof tail, "), st AS (UPDATE streams SET count = $%d::int8, last_position = $%d::int8,"
               " updated = $%d::int8 WHERE name = $%d::bytea AND count = $%d::int8 AND NOT EXISTS"
               " (SELECT 1 FROM kv WHERE space = '" RETENTION_SPACE "'::bytea AND key = $%d::bytea"
               " AND position(" TOMBSTONE_BYTES " IN value) > 0) RETURNING 1)",
               a + 1, a + 2, a + 3, a, a + 4, a)
    : snprintf(tail, sizeof tail, "), st AS (INSERT INTO streams VALUES ($%d::bytea, $%d::int8, $%d::int8,"
               " $%d::int8, $%d::int8, $%d::int8) RETURNING 1)", a, a + 1, a + 4, a + 2, a + 3, a + 3);
  n += snprintf(tail + n, sizeof tail - (size_t)n, ", hd AS (UPDATE meta SET value = $%d::int8 WHERE key = 'head'"
                " RETURNING value) SELECT expect_fresh(EXISTS (SELECT 1 FROM st)),"
                " pg_notify($%d::text, (SELECT value FROM hd)::text)", a + 2, a + 5);
  if (!st && buf_append(sql, tail, (size_t)n + 1)) st = PGS_NOMEM;
  if (st) return st;
  ps->version = (uint64_t)(count + (int64_t)ps->n_events - 1);
  ps->position = (uint64_t)last;
  ps->time = now;
  return pgs_send(s, (const char *)sql->data);
}

static int append_predicted(pgs *s, size_t nstreams, const int64_t *counts, buf *recs, int dry_run,
                            int64_t *new_head) {
  int64_t head = s->head, now = append_now();
  pgs_params_reset(s);
  int st = pgs_send(s, "BEGIN");
  pgs_params_reset(s);
  pgs_param_int(s, head);
  if (!st) st = pgs_send(s, "SELECT expect_fresh(value = $1::int8) FROM meta WHERE key = 'head' FOR UPDATE");
  if (!st && nstreams == 1 && PENDING_STREAMS(s)[0].n_events <= INSERT_ROWS) {
    st = append_predicted_one(s, PENDING_STREAMS(s), counts[0], head, now, recs);
    head += (int64_t)PENDING_STREAMS(s)[0].n_events;
    nstreams = 0;                            /* done: the head and NOTIFY came with it */
  }
  int moved = nstreams > 0;
  for (size_t i = 0; i < nstreams && !st; i++) {
    pending_stream *ps = &PENDING_STREAMS(s)[i];
    stream_row m;
    memset(&m, 0, sizeof m);
    m.exists = counts[i] > 0;
    m.count = counts[i];
    m.first_position = head + 1;
    m.created = now;
    if ((st = append_insert_events(s, ps, &m, head, now, recs))) break;
    head += (int64_t)ps->n_events;
    pgs_params_reset(s);
    pgs_param_bytes(s, s->scratch_bytes.data + ps->name_off, ps->name_len);
    pgs_param_int(s, m.count + (int64_t)ps->n_events);
    pgs_param_int(s, head);
    pgs_param_int(s, now);
    if (m.exists) {
      pgs_param_int(s, m.count);
      /* A hard-deleted stream's metadata row holds the MessagePack of deleted = "hard"
       * (retention.h): such a stream goes the long way, which refuses the append. */
      st = pgs_send(s, "WITH moved AS (UPDATE streams SET count = $2::int8, last_position = $3::int8,"
                       " updated = $4::int8 WHERE name = $1::bytea AND count = $5::int8 AND NOT EXISTS"
                       " (SELECT 1 FROM kv WHERE space = '" RETENTION_SPACE "'::bytea AND key = $1::bytea"
                       " AND position(" TOMBSTONE_BYTES " IN value) > 0) RETURNING 1)"
                       " SELECT expect_fresh(EXISTS (SELECT 1 FROM moved))");
    } else {
      pgs_param_int(s, m.first_position);
      st = pgs_send(s, "INSERT INTO streams VALUES ($1::bytea, $2::int8, $5::int8, $3::int8, $4::int8, $4::int8)");
    }
    ps->version = (uint64_t)(m.count + (int64_t)ps->n_events - 1);
    ps->position = (uint64_t)head;
    ps->time = now;
  }
  if (!st && moved) {
    pgs_params_reset(s);
    pgs_param_int(s, head);
    pgs_param_text(s, s->channel);
    st = pgs_send(s, "WITH moved AS (UPDATE meta SET value = $1::int8 WHERE key = 'head' RETURNING value)"
                     " SELECT pg_notify($2::text, (SELECT value FROM moved)::text)");
  }
  pgs_params_reset(s);
  if (!st) st = pgs_send(s, dry_run ? "ROLLBACK" : "COMMIT");
  int end = pgs_pipe_end(s);
  if (!st) st = end;
  *new_head = head;
  return st;
}

/* Did the server refuse a predicted flight because a prediction was stale? */
static int append_prediction_stale(const pgs *s, int st) {
  return st == PGS_SQL && (strcmp(s->sqlstate, "CH001") == 0 || strcmp(s->sqlstate, "23505") == 0 ||
                           strcmp(s->sqlstate, "40001") == 0 || strcmp(s->sqlstate, "40P01") == 0);
}

/* After a commit: what this connection now knows of the head and the streams' counts. */
static void append_learn(pgs *s, size_t nstreams, int64_t head) {
  s->head = head;
  s->head_known = 1;
  for (size_t i = 0; i < nstreams; i++) {
    const pending_stream *ps = &PENDING_STREAMS(s)[i];
    const unsigned char *name = s->scratch_bytes.data + ps->name_off;
    if (ps->replayed) count_forget(s, name, ps->name_len);
    else count_remember(s, name, ps->name_len, (int64_t)ps->version + 1);
  }
}

static int append_commit(pgs *s, size_t nstreams, append_failure *f, int dry_run) {
  buf recs;
  buf_init(&recs);
  int st = PGS_OK;
  int64_t counts[PREDICT_STREAMS], new_head = 0;
  if (append_predict(s, nstreams, counts)) {
    if ((st = pgs_ready(s))) { buf_free(&recs); return st; }
    st = append_predicted(s, nstreams, counts, &recs, dry_run, &new_head);
    if (st == PGS_OK) {
      s->predict_backoff = 0;
      if (!dry_run) append_learn(s, nstreams, new_head);
      buf_free(&recs);
      return PGS_OK;
    }
    s->head_known = 0;
    if (!append_prediction_stale(s, st)) {
      if (st != PGS_UNAVAILABLE && PQtransactionStatus(s->conn) != PQTRANS_IDLE) pgs_command(s, "ROLLBACK");
      buf_free(&recs);
      return st;
    }
    for (size_t i = 0; i < nstreams; i++)
      count_forget(s, s->scratch_bytes.data + PENDING_STREAMS(s)[i].name_off, PENDING_STREAMS(s)[i].name_len);
    s->predict_backoff = s->predict_backoff ? s->predict_backoff * 2 : 1;
    if (s->predict_backoff > PREDICT_BACKOFF_MAX) s->predict_backoff = PREDICT_BACKOFF_MAX;
    s->predict_skip = s->predict_backoff;
    if (PQtransactionStatus(s->conn) != PQTRANS_IDLE) pgs_command(s, "ROLLBACK");
    st = PGS_OK;                              /* and the long way */
  }
  for (int attempt = 0; attempt < MAX_RETRIES; attempt++) {
    if ((st = pgs_ready(s))) break;
    st = append_in_txn(s, nstreams, f, &recs, &new_head);
    if (st == PGS_OK) {
      pgs_params_reset(s);
      st = pgs_send(s, dry_run ? "ROLLBACK" : "COMMIT");
      int end = pgs_pipe_end(s);
      if (!st) st = end;
    } else {
      pgs_pipe_end(s);
    }
    if (st && PQstatus(s->conn) == CONNECTION_OK && PQtransactionStatus(s->conn) != PQTRANS_IDLE)
      pgs_command(s, "ROLLBACK");
    if (st == PGS_UNAVAILABLE) break;
    if (!(st == PGS_SQL && (strcmp(s->sqlstate, "40001") == 0 || strcmp(s->sqlstate, "40P01") == 0))) break;
    if (PQtransactionStatus(s->conn) != PQTRANS_IDLE) pgs_command(s, "ROLLBACK");
  }
  if (st != PGS_OK && st != PGS_UNAVAILABLE && PQtransactionStatus(s->conn) != PQTRANS_IDLE)
    pgs_command(s, "ROLLBACK");
  if (st == PGS_OK && !dry_run) append_learn(s, nstreams, new_head);
  else s->head_known = 0;
  buf_free(&recs);
  return st;
}

/* ---------------------------------------------------------------- results */

static void append_push_conflict(lua_State *L, pgs *s, const append_failure *f, call_kind kind) {
  const pending_stream *ps = &PENDING_STREAMS(s)[f->stream];
  refusal r = {
    .code = f->code, .stream = (const char *)s->scratch_bytes.data + ps->name_off, .stream_len = ps->name_len,
    .index = kind == CALL_APPEND ? 0 : f->stream + 1, .expected = ps->expected,
    .expected_version = ps->expected_version, .exists = f->exists, .actual_count = (uint64_t)f->actual_count,
    .id = f->id, .position = (uint64_t)f->position, .replay = f->replay, .replay_version = f->replay_version,
  };
  refusal_push(L, &r);
}

static void kv_push_check_failure(lua_State *L, pgs *s, size_t failed) {
  const pending_kv *pk = &PENDING_KV(s)[failed];
  const char *b = (const char *)s->scratch_bytes.data;
  lua_pushnil(L);
  lua_pushlstring(L, b + pk->space_off, pk->space_len);
  lua_pushlstring(L, b + pk->key_off, pk->key_len);
  cerr_new(L, "check_failed", "write: the check of key '%s' in space '%s' failed", lua_tostring(L, -1),
           lua_tostring(L, -2));
  lua_insert(L, -3);
  lua_setfield(L, -3, "key");
  lua_setfield(L, -2, "space");
}

static int append_finish(lua_State *L, pgs *s, size_t nstreams, call_kind kind, int dry_run) {
  append_failure f;
  memset(&f, 0, sizeof f);
  int st = append_commit(s, nstreams, &f, dry_run);
  if (st == PGS_REFUSED) { append_push_conflict(L, s, &f, kind); return 2; }
  if (st == PGS_CHECK_FAILED) { kv_push_check_failure(L, s, f.kv_op); return 2; }
  if (st) return pgs_push_error(L, s, st, kind == CALL_WRITE ? "write" : kind == CALL_APPEND_MANY ? "append_many" : "append");
  if (kind == CALL_APPEND) {
    pending_stream *ps = &PENDING_STREAMS(s)[0];
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, (lua_Integer)ps->version);
    lua_setfield(L, -2, "version");
    lua_pushinteger(L, (lua_Integer)ps->position);
    lua_setfield(L, -2, "position");
    lua_pushinteger(L, ps->time);
    lua_setfield(L, -2, "time");
    if (ps->replayed) {
      lua_pushboolean(L, 1);
      lua_setfield(L, -2, "replayed");
    }
    return 1;
  }
  lua_createtable(L, (int)nstreams, 1);
  uint64_t last = 0;
  for (size_t i = 0; i < nstreams; i++) {
    pending_stream *ps = &PENDING_STREAMS(s)[i];
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, ps->time);
    lua_setfield(L, -2, "time");
    lua_pushlstring(L, (const char *)s->scratch_bytes.data + ps->name_off, ps->name_len);
    lua_setfield(L, -2, "stream");
    lua_pushinteger(L, (lua_Integer)ps->version);
    lua_setfield(L, -2, "version");
    lua_pushinteger(L, (lua_Integer)ps->position);
    lua_setfield(L, -2, "position");
    if (ps->replayed) {
      lua_pushboolean(L, 1);
      lua_setfield(L, -2, "replayed");
    }
    lua_rawseti(L, -2, (lua_Integer)i + 1);
    if (ps->position > last) last = ps->position;
  }
  lua_pushinteger(L, (lua_Integer)last);
  lua_setfield(L, -2, "position");
  if (dry_run) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "dry_run");
  }
  return 1;
}

static pgs *append_check_store(lua_State *L) {
  pgs *s = pgs_check(L, 1);
  s->scratch_bytes.len = s->scratch_events.len = s->scratch_streams.len = s->scratch_kv.len = 0;
  s->sealer = NULL;
  s->seal_idx = 0;
  return s;
}

static int append_readonly(lua_State *L) {
  return cerr_result(L, "readonly", "the store was opened read-only");
}

static int append_one(lua_State *L) {
  pgs *s = append_check_store(L);
  lua_settop(L, 4);
  append_input in = append_input_of(s);
  append_input_stream(L, &in, "append", 2, 3, 4);
  if (s->readonly) return append_readonly(L);
  return append_finish(L, s, 1, CALL_APPEND, 0);
}

static int append_many(lua_State *L) {
  pgs *s = append_check_store(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  append_input in = append_input_of(s);
  size_t n = append_input_list(L, &in, 2, "append_many", 0);
  if (s->readonly) return append_readonly(L);
  return append_finish(L, s, n, CALL_APPEND_MANY, 0);
}

static int append_write(lua_State *L) {
  pgs *s = append_check_store(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  int dry_run = opt_write(L, 2);
  size_t n = 0;
  lua_getfield(L, 2, "seal");
  if (!lua_isnil(L, 3)) {
    if (!(s->sealer = event_sealer_at(L, 3))) luaL_error(L, "write: seal must be a chronicle.crypto keyring");
    s->seal_idx = 3;
  }
  lua_getfield(L, 2, "appends");
  if (!lua_isnil(L, 4)) {
    if (!lua_istable(L, 4)) luaL_error(L, "write: appends must be a list");
    append_input in = append_input_of(s);
    n = append_input_list(L, &in, 4, "write.appends", 1);
  }
  s->sealer = NULL;
  lua_settop(L, 2);
  kv_encode_list(L, s, 2, "checks", KV_CHECK);
  kv_encode_list(L, s, 2, "clears", KV_CLEAR);
  kv_encode_list(L, s, 2, "deletes", KV_DELETE);
  kv_encode_list(L, s, 2, "puts", KV_PUT);
  if (s->readonly) return append_readonly(L);
  return append_finish(L, s, n, CALL_WRITE, dry_run);
}

static const luaL_Reg append_methods[] = {
  { "append", append_one },
  { "append_many", append_many },
  { "write", append_write },
  { NULL, NULL }
};

/* They encode events with common/append_input.c, which needs its upvalues. */
void pgs_append_register(lua_State *L) { luaL_setfuncs(L, append_methods, append_input_push_upvalues(L)); }
