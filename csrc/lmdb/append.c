/* store:append and store:append_many (and, for write.c, store:write's appends). Everything a
 * caller can get wrong is checked and encoded first (common/append_input.c), with no
 * transaction open; then one short write transaction checks expected versions and writes all
 * events or none. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <lauxlib.h>
#include "common/append_input.h"
#include "common/cerror.h"
#include "common/codec.h"
#include "common/refusal.h"
#include "append.h"
#include "kv.h"
#include "logdb.h"
#include "common/retention.h"
#include "store.h"


/* Returned by append_in_txn when a check failed; details are in append_failure. */
#define APPEND_REFUSED 0x100000
#define APPEND_MAX_GROWTHS 40

typedef struct append_failure {
  const char *code;            /* "conflict", "duplicate_id" or "corrupt" */
  size_t stream;
  int exists;
  uint64_t actual_count;
  unsigned char id[16];
  uint64_t position;
  int replay;                  /* REPLAY_*: why a replay was refused */
  uint64_t replay_version;     /* the version a refused replay's first event has */
  size_t kv_op;                /* the write() check that failed */
} append_failure;

#define PENDING_EVENTS(s) ((pending_event *)(s)->scratch->events.data)
#define PENDING_STREAMS(s) ((pending_stream *)(s)->scratch->streams.data)


/* The store's scratch as the place an append is encoded. */
static append_input append_input_of(store *s) {
  append_input in = { &s->scratch->bytes, &s->scratch->events, &s->scratch->streams, s->max_event_size,
                      s->scratch->sealer, s->scratch->seal_idx };
  return in;
}

static int64_t append_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int append_put_u64(MDB_txn *txn, MDB_dbi dbi, const void *key, size_t klen, uint64_t v,
                          unsigned flags) {
  unsigned char b[8];
  put_u64be(b, v);
  MDB_val k = { klen, (void *)key }, d = { 8, b };
  return mdb_put(txn, dbi, &k, &d, flags);
}


/* Does one of the pending events [from, upto) carry the id of pending event `index`? */
static int append_id_among(store *s, size_t from, size_t upto, size_t index) {
  const pending_event *all = PENDING_EVENTS(s);
  for (size_t i = from; i < upto; i++)
    if (all[i].has_id && memcmp(all[i].id, all[index].id, 16) == 0) return 1;
  return 0;
}

/* Is pending event `index`'s id also the id of an earlier event of this append? */
static int append_id_seen_before(store *s, size_t index) {
  return append_id_among(s, 0, index, index);
}

/* Refuses with duplicate_id for the event at `index` (of all pending events),
 * stored at pos; names the id used twice when this append wrote it itself. */
static int append_refuse_id(store *s, size_t index, uint64_t pos, uint64_t head, int why,
                            append_failure *f) {
  f->code = "duplicate_id";
  memcpy(f->id, PENDING_EVENTS(s)[index].id, 16);
  if (pos > head || append_id_seen_before(s, index)) {
    f->replay = REPLAY_TWICE;
    f->position = 0;
  } else {
    f->replay = why;
    f->position = pos;
  }
  return APPEND_REFUSED;
}

/* Looks up a stored id: 0 with *pos, MDB_NOTFOUND, or an LMDB error. */
static int append_find_id(MDB_txn *txn, envref *e, const unsigned char *id, uint64_t *pos) {
  MDB_val k = { 16, (void *)id }, d;
  int rc = mdb_get(txn, e->dbi[DB_EVENT_IDS], &k, &d);
  if (rc) return rc;
  if (d.mv_size != 8) return MDB_CORRUPTED;
  *pos = get_u64be(d.mv_data);
  return 0;
}

/* Does `expected` name the place where a replay's first event sits? */
static int append_replay_place_ok(const pending_stream *ps, uint64_t first_version) {
  switch (ps->expected) {
    case EXPECT_NO_STREAM: return first_version == 0;
    case EXPECT_EXISTS: return first_version > 0;
    case EXPECT_VERSION: return first_version == ps->expected_version + 1;
    default: return 1;
  }
}

/* Some of the stream's events carry ids that are already stored. This is a
 * replay, which succeeds without writing, only when every event is stored,
 * each is the same event (same id, stream, type, data and meta, compared as
 * values), they are consecutive in the stream in the given order, and
 * `expected` names the place of the first one (as it did for the original
 * append). Else duplicate_id (some ids new, or a stored event differs) or
 * conflict (the same events, but not at the place this append asks for). */
static int append_check_replay(store *s, MDB_txn *txn, pending_stream *ps, uint64_t head,
                               uint64_t count, append_failure *f) {
  envref *e = s->e;
  const unsigned char *bytes = s->scratch->bytes.data;
  pending_event *events = &PENDING_EVENTS(s)[ps->first_event];
  uint64_t pos;
  int rc;
  /* A mix of stored and new events is no replay: name the first stored one. */
  size_t first_stored = ps->n_events;
  int any_new = 0;
  for (size_t j = 0; j < ps->n_events; j++) {
    if (!events[j].has_id) { any_new = 1; continue; }
    rc = append_find_id(txn, e, events[j].id, &pos);
    if (rc == MDB_NOTFOUND) { any_new = 1; continue; }
    if (rc) return rc;
    if (first_stored == ps->n_events) first_stored = j;
  }
  if (any_new) {
    rc = append_find_id(txn, e, events[first_stored].id, &pos);
    if (rc) return rc;
    return append_refuse_id(s, ps->first_event + first_stored, pos, head, REPLAY_MIXED, f);
  }
  uint64_t first_version = 0;
  int in_place = 1;
  for (size_t j = 0; j < ps->n_events; j++) {
    pending_event *pe = &events[j];
    if ((rc = append_find_id(txn, e, pe->id, &pos))) return rc;
    unsigned char pk[8];
    put_u64be(pk, pos);
    MDB_val lk = { 8, pk }, rec;
    rc = mdb_get(txn, e->dbi[DB_LOG], &lk, &rec);
    if (rc) return rc == MDB_NOTFOUND ? MDB_CORRUPTED : rc;
    record_view v;
    const char *why;
    if (record_parse(rec.mv_data, rec.mv_size, &v, &why) != 0) {
      f->code = "corrupt";
      memcpy(f->id, pe->id, 16);
      f->position = pos;
      return APPEND_REFUSED;
    }
    int differs = REPLAY_NONE;
    if (v.stream_len != ps->name_len || memcmp(v.stream, bytes + ps->name_off, v.stream_len))
      differs = REPLAY_STREAM;
    else if (v.type_len != pe->type_len || memcmp(v.type, bytes + pe->type_off, v.type_len))
      differs = REPLAY_TYPE;
    else if (!codec_equal(v.data, v.data_len, bytes + pe->data_off, pe->data_len))
      differs = REPLAY_DATA;
    else if (!codec_equal(v.meta, v.meta_len, bytes + pe->meta_off, pe->meta_len))
      differs = REPLAY_META;
    if (differs) return append_refuse_id(s, ps->first_event + j, pos, head, differs, f);
    /* written by this append, or replayed by an earlier entry of it (an id twice in
     * this entry shows as events out of place, checked below) */
    if (pos > head || append_id_among(s, 0, ps->first_event, ps->first_event + j))
      return append_refuse_id(s, ps->first_event + j, pos, head, REPLAY_TWICE, f);
    if (j == 0) first_version = v.version;
    else if (v.version != first_version + j) in_place = 0;
    ps->version = v.version;                /* the original result: its last event */
    ps->position = pos;
    ps->time = v.time;
  }
  if (!in_place)
    for (size_t j = 1; j < ps->n_events; j++)
      if (append_id_seen_before(s, ps->first_event + j))
        return append_refuse_id(s, ps->first_event + j, 0, head, REPLAY_TWICE, f);
  if (!in_place || !append_replay_place_ok(ps, first_version)) {
    f->code = "conflict";
    f->replay = in_place ? REPLAY_PLACE : REPLAY_ORDER;
    f->exists = 1;
    f->actual_count = count;
    f->replay_version = first_version;
    return APPEND_REFUSED;
  }
  return 0;
}

static int append_expected_ok(const pending_stream *ps, int exists, const stream_meta *m) {
  switch (ps->expected) {
    case EXPECT_NO_STREAM: return !exists;
    case EXPECT_EXISTS: return exists;
    case EXPECT_VERSION: return exists && m->count == ps->expected_version + 1;
    default: return 1;
  }
}

static int append_write_event(store *s, MDB_txn *txn, pending_stream *ps, pending_event *pe,
                              const stream_meta *m, uint64_t pos, int64_t now, append_failure *f) {
  envref *e = s->e;
  const unsigned char *bytes = s->scratch->bytes.data;
  const unsigned char *name = bytes + ps->name_off;
  size_t len = RECORD_HEADER + ps->name_len + pe->type_len + pe->meta_len + pe->data_len;
  unsigned char key[CATEGORY_KEY_MAX];
  put_u64be(key, pos);
  MDB_val k = { 8, key }, d = { len, NULL };
  int rc = mdb_put(txn, e->dbi[DB_LOG], &k, &d, MDB_APPEND | MDB_RESERVE);
  if (rc) return rc;
  unsigned char *rec = d.mv_data, *p = rec + RECORD_HEADER;
  memcpy(p, name, ps->name_len); p += ps->name_len;
  memcpy(p, bytes + pe->type_off, pe->type_len); p += pe->type_len;
  memcpy(p, bytes + pe->meta_off, pe->meta_len); p += pe->meta_len;
  memcpy(p, bytes + pe->data_off, pe->data_len);
  record_view v = { .stream_len = ps->name_len, .type_len = pe->type_len, .meta_len = pe->meta_len,
                    .id = pe->id, .version = m->count, .time = pe->has_time ? pe->time : now,
                    .schema = pe->schema };
  record_seal(rec, len, &v);

  stream_index_key(key, m->id, m->count);
  if ((rc = append_put_u64(txn, e->dbi[DB_STREAM_INDEX], key, 16, pos, 0))) return rc;
  size_t klen = category_key(key, name, category_len(name, ps->name_len), pos);
  MDB_val ck = { klen, key }, empty = { 0, "" };
  if ((rc = mdb_put(txn, e->dbi[DB_CATEGORY_INDEX], &ck, &empty, 0))) return rc;
  rc = append_put_u64(txn, e->dbi[DB_EVENT_IDS], pe->id, 16, pos, MDB_NOOVERWRITE);
  if (rc == MDB_KEYEXIST) {
    f->code = "duplicate_id";
    memcpy(f->id, pe->id, 16);
    f->position = 0;
    return APPEND_REFUSED;
  }
  return rc;
}

/* A hard-deleted stream (a tombstone in its metadata row) takes no appends. */
static int append_check_tombstone(MDB_txn *txn, envref *e, const void *name, size_t len, append_failure *f) {
  unsigned char k[KV_KEY_MAX];
  MDB_val mk = { kv_key(k, RETENTION_SPACE, RETENTION_SPACE_LEN, name, len), k }, d;
  int rc = mdb_get(txn, e->dbi[DB_KV], &mk, &d);
  if (rc == MDB_NOTFOUND) return 0;
  if (rc) return rc;
  stream_rule rule;
  if (retention_parse(d.mv_data, d.mv_size, &rule) == 0 && !rule.hard) return 0;
  f->code = "stream_deleted";
  return APPEND_REFUSED;
}

/* All checks and writes of one append, inside `txn`. */
static int append_in_txn(store *s, MDB_txn *txn, size_t nstreams, append_failure *f) {
  envref *e = s->e;
  uint64_t head, seq = 0;
  int seq_loaded = 0;
  int64_t now = append_now();
  int rc = log_head(txn, e, &head);
  if (rc) return rc;
  const uint64_t start_head = head;     /* ids stored above it were written by this append */
  for (size_t i = 0; i < nstreams; i++) {
    pending_stream *ps = &PENDING_STREAMS(s)[i];
    pending_event *events = &PENDING_EVENTS(s)[ps->first_event];
    const void *name = s->scratch->bytes.data + ps->name_off;
    f->stream = i;
    stream_meta m;
    rc = stream_meta_get(txn, e, name, ps->name_len, &m);
    int exists = rc == 0;
    if (rc && rc != MDB_NOTFOUND) return rc;
    if (exists && (rc = append_check_tombstone(txn, e, name, ps->name_len, f))) return rc;

    int any_known_id = 0;
    for (size_t j = 0; j < ps->n_events && !any_known_id; j++) {
      if (!events[j].has_id) continue;
      MDB_val k = { 16, events[j].id }, d;
      rc = mdb_get(txn, e->dbi[DB_EVENT_IDS], &k, &d);
      if (rc == 0) any_known_id = 1;
      else if (rc != MDB_NOTFOUND) return rc;
    }
    if (any_known_id) {
      rc = append_check_replay(s, txn, ps, start_head, exists ? m.count : 0, f);
      if (rc) return rc;
      ps->replayed = 1;
      continue;                       /* already written: nothing to do */
    }
    if (!append_expected_ok(ps, exists, &m)) {
      f->code = "conflict";
      f->exists = exists;
      f->actual_count = exists ? m.count : 0;
      return APPEND_REFUSED;
    }
    if (!exists) {
      if (!seq_loaded) {
        MDB_val k = { 10, "stream_seq" }, d;
        rc = mdb_get(txn, e->dbi[DB_META], &k, &d);
        if (rc) return rc;
        if (d.mv_size != 8) return MDB_CORRUPTED;
        seq = get_u64be(d.mv_data);
        seq_loaded = 1;
      }
      memset(&m, 0, sizeof m);
      m.id = ++seq;
      m.first_position = head + 1;
      m.created = now;
    }
    for (size_t j = 0; j < ps->n_events; j++) {
      rc = append_write_event(s, txn, ps, &events[j], &m, ++head, now, f);
      if (rc) return rc;
      m.count++;
    }
    m.last_position = head;
    m.updated = now;
    unsigned char mv[STREAM_META_SIZE];
    stream_meta_encode(&m, mv);
    MDB_val k = { ps->name_len, (void *)name }, d = { STREAM_META_SIZE, mv };
    if ((rc = mdb_put(txn, e->dbi[DB_STREAMS], &k, &d, 0))) return rc;
    ps->version = m.count - 1;
    ps->position = head;
    ps->time = now;
  }
  if (seq_loaded && (rc = append_put_u64(txn, e->dbi[DB_META], "stream_seq", 10, seq, 0))) return rc;
  return kv_apply_ops(s, txn, &f->kv_op);
}

/* Runs the write transaction, growing the map and retrying on MDB_MAP_FULL.
 * A dry run does all the work and aborts instead of committing. */
static int append_commit(store *s, size_t nstreams, append_failure *f, int dry_run) {
  for (int growths = 0;; growths++) {
    MDB_txn *txn;
    int rc = envreg_txn_begin(s->e, s->write_flags, &txn);
    if (rc) return rc;
    rc = append_in_txn(s, txn, nstreams, f);
    if (rc == 0) rc = envreg_txn_finish(s->e, txn, !dry_run);
    else envreg_txn_finish(s->e, txn, 0);
    if (rc != MDB_MAP_FULL || growths >= APPEND_MAX_GROWTHS) return rc;
    if ((rc = envreg_grow(s->e))) return rc;
  }
}

void append_scratch_free(store *s) {
  append_scratch *sc = s->scratch;
  if (!sc) return;
  s->scratch = NULL;
  buf_free(&sc->bytes);
  buf_free(&sc->events);
  buf_free(&sc->streams);
  buf_free(&sc->kv);
  free(sc);
}

store *append_begin(lua_State *L, const char *fn) {
  store *s = store_check_write(L, 1, fn);
  append_scratch *sc = s->scratch;
  if (!sc) {
    if (!(sc = malloc(sizeof *sc))) luaL_error(L, "%s: out of memory", fn);
    buf_init(&sc->bytes);
    buf_init(&sc->events);
    buf_init(&sc->streams);
    buf_init(&sc->kv);
    s->scratch = sc;
  }
  sc->bytes.len = 0;
  sc->events.len = 0;
  sc->streams.len = 0;
  sc->kv.len = 0;
  sc->sealer = NULL;
  sc->seal_idx = 0;
  return s;
}

static void append_push_conflict(lua_State *L, store *s, const append_failure *f, call_kind kind) {
  const pending_stream *ps = &PENDING_STREAMS(s)[f->stream];
  refusal r = {
    .code = f->code, .stream = (const char *)s->scratch->bytes.data + ps->name_off, .stream_len = ps->name_len,
    .index = kind == CALL_APPEND ? 0 : f->stream + 1, .expected = ps->expected,
    .expected_version = ps->expected_version, .exists = f->exists, .actual_count = (uint64_t)f->actual_count,
    .id = f->id, .position = (uint64_t)f->position, .replay = f->replay, .replay_version = f->replay_version,
  };
  refusal_push(L, &r);
}

int append_finish(lua_State *L, store *s, size_t nstreams, call_kind kind, int dry_run) {
  if (s->readonly) return cerr_result(L, "readonly", "the store was opened read-only");
  append_failure f;
  memset(&f, 0, sizeof f);
  int rc = append_commit(s, nstreams, &f, dry_run);
  if (rc == APPEND_REFUSED) {
    append_push_conflict(L, s, &f, kind);
    return 2;
  }
  if (rc == KV_CHECK_FAILED) {
    kv_push_check_failure(L, s, f.kv_op);
    return 2;
  }
  if (rc) return cerr_mdb_result(L, rc, kind == CALL_WRITE ? "write" : kind == CALL_APPEND_MANY ? "append_many" : "append");
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
    lua_pushlstring(L, (const char *)s->scratch->bytes.data + ps->name_off, ps->name_len);
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

/* store:append(stream, events [, expected]) -> {version, position} | nil, err */
static int append_one(lua_State *L) {
  store *s = append_begin(L, "append");
  lua_settop(L, 4);
  append_input in = append_input_of(s);
  append_input_stream(L, &in, "append", 2, 3, 4);
  return append_finish(L, s, 1, CALL_APPEND, 0);
}

size_t append_encode_list(lua_State *L, store *s, int idx, const char *fn, int allow_empty) {
  append_input in = append_input_of(s);
  return append_input_list(L, &in, idx, fn, allow_empty);
}

/* store:append_many({ {stream=, events=, expected=}, ... }) -> results | nil, err */
static int append_many(lua_State *L) {
  store *s = append_begin(L, "append_many");
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  size_t n = append_encode_list(L, s, 2, "append_many", 0);
  return append_finish(L, s, n, CALL_APPEND_MANY, 0);
}

static const luaL_Reg append_methods[] = {
  { "append", append_one },
  { "append_many", append_many },
  { NULL, NULL }
};

void append_register(lua_State *L) {
  luaL_setfuncs(L, append_methods, append_input_push_upvalues(L));
}
