/* store:verify(): reads every record and every index entry in one read
 * transaction and checks that they agree. No Lua call happens while the
 * transaction is open; findings are collected in C and pushed afterwards. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <lauxlib.h>
#include "common/cerror.h"
#include "common/options.h"
#include "common/codec.h"
#include "verify.h"
#include "logdb.h"
#include "store.h"

typedef struct verify_state {
  MDB_txn *txn;
  const envref *e;
  buf problems;            /* NUL-separated messages */
  size_t nproblems;
  size_t max_problems;
  uint64_t events, streams;
  lua_State *L;            /* for the progress callback, when there is one */
  int progress;            /* its stack index, or 0 */
  uint64_t total;          /* the head when the check began */
  uint64_t scavenged;      /* meta/scavenged: records scavenging removed (holes in the log) */
  uint64_t holes;          /* positions missing from the log */
} verify_state;

#define VERIFY_STOPPED (-1)  /* not an LMDB code: the progress callback raised */

static void verify_problem(verify_state *v, const char *fmt, ...) {
  v->nproblems++;
  if (v->nproblems > v->max_problems) return;
  char msg[320];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  size_t len = (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1;
  buf_append(&v->problems, msg, len + 1);
}

static int verify_lookup_u64(verify_state *v, int db, const void *key, size_t klen, uint64_t *out) {
  MDB_val k = { klen, (void *)key }, d;
  int rc = mdb_get(v->txn, v->e->dbi[db], &k, &d);
  if (rc == 0 && d.mv_size != 8) return MDB_CORRUPTED;
  if (rc == 0) *out = get_u64be(d.mv_data);
  return rc;
}

/* Checks one record against the indexes that should point at it. */
static int verify_record(verify_state *v, uint64_t pos, const MDB_val *d) {
  record_view r;
  const char *why;
  if (record_parse(d->mv_data, d->mv_size, &r, &why) != 0) {
    verify_problem(v, "position %llu: %s", (unsigned long long)pos, why);
    return 0;
  }
  size_t off = 0;
  if (codec_skip(r.meta, r.meta_len, &off) != 0 || off != r.meta_len)
    verify_problem(v, "position %llu: meta is not valid MessagePack", (unsigned long long)pos);
  off = 0;
  if (codec_skip(r.data, r.data_len, &off) != 0 || off != r.data_len)
    verify_problem(v, "position %llu: data is not valid MessagePack", (unsigned long long)pos);
  if (r.stream_len == 0 || r.stream_len > RECORD_MAX_STREAM) {
    verify_problem(v, "position %llu: bad stream name length", (unsigned long long)pos);
    return 0;
  }
  stream_meta m;
  int rc = stream_meta_get(v->txn, v->e, r.stream, r.stream_len, &m);
  if (rc == MDB_NOTFOUND) {
    verify_problem(v, "position %llu: stream '%.*s' is not in the streams index", (unsigned long long)pos,
                   (int)r.stream_len, r.stream);
    return 0;
  }
  if (rc) return rc;
  if (r.version >= m.count)
    verify_problem(v, "position %llu: version %llu beyond stream '%.*s' count %llu", (unsigned long long)pos,
                   (unsigned long long)r.version, (int)r.stream_len, r.stream, (unsigned long long)m.count);
  unsigned char key[CATEGORY_KEY_MAX];
  uint64_t at = 0;
  stream_index_key(key, m.id, r.version);
  rc = verify_lookup_u64(v, DB_STREAM_INDEX, key, 16, &at);
  if (rc && rc != MDB_NOTFOUND) return rc;
  if (rc || at != pos)
    verify_problem(v, "position %llu: stream index of '%.*s' version %llu points elsewhere",
                   (unsigned long long)pos, (int)r.stream_len, r.stream, (unsigned long long)r.version);
  size_t klen = category_key(key, r.stream, category_len(r.stream, r.stream_len), pos);
  MDB_val ck = { klen, key }, cd;
  rc = mdb_get(v->txn, v->e->dbi[DB_CATEGORY_INDEX], &ck, &cd);
  if (rc && rc != MDB_NOTFOUND) return rc;
  if (rc) verify_problem(v, "position %llu: missing from the category index", (unsigned long long)pos);
  rc = verify_lookup_u64(v, DB_EVENT_IDS, r.id, 16, &at);
  if (rc && rc != MDB_NOTFOUND) return rc;
  if (rc || at != pos) verify_problem(v, "position %llu: event id index points elsewhere", (unsigned long long)pos);
  return 0;
}

static int verify_log(verify_state *v) {
  MDB_cursor *c;
  int rc = mdb_cursor_open(v->txn, v->e->dbi[DB_LOG], &c);
  if (rc) return rc;
  MDB_val k, d;
  uint64_t expect = 1;
  for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
    if (k.mv_size != 8) { verify_problem(v, "log key of %zu bytes", k.mv_size); continue; }
    uint64_t pos = get_u64be(k.mv_data);
    if (pos < expect)
      verify_problem(v, "positions go back from %llu to %llu", (unsigned long long)(expect - 1),
                     (unsigned long long)pos);
    else v->holes += pos - expect;     /* removed by scavenging: checked against meta/scavenged */
    expect = pos + 1;
    v->events++;
    if ((v->events & 4095) == 0 &&
        store_report_progress(v->L, v->progress, (long long)v->events, (long long)v->total)) {
      rc = VERIFY_STOPPED;
      break;
    }
    if ((rc = verify_record(v, pos, &d))) break;
  }
  mdb_cursor_close(c);
  if (rc == MDB_NOTFOUND) rc = 0;
  if (rc == 0 && v->holes != v->scavenged)
    verify_problem(v, "the log misses %llu positions, but scavenging removed %llu records",
                   (unsigned long long)v->holes, (unsigned long long)v->scavenged);
  return rc;
}

/* Every stream's index entries run 0..count-1, but for what scavenging removed,
 * and end at its last position. */
static int verify_streams(verify_state *v) {
  MDB_cursor *c, *ic;
  int rc = mdb_cursor_open(v->txn, v->e->dbi[DB_STREAMS], &c);
  if (rc) return rc;
  if ((rc = mdb_cursor_open(v->txn, v->e->dbi[DB_STREAM_INDEX], &ic))) { mdb_cursor_close(c); return rc; }
  MDB_val k, d;
  uint64_t total = 0, missing = 0;
  for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
    v->streams++;
    stream_meta m;
    if ((rc = stream_meta_get(v->txn, v->e, k.mv_data, k.mv_size, &m))) break;
    int nlen = (int)(k.mv_size > 200 ? 200 : k.mv_size);
    const char *name = k.mv_data;
    unsigned char key[16];
    stream_index_key(key, m.id, 0);
    MDB_val ik = { 16, key }, id;
    uint64_t version = 0, last_pos = 0, first_pos = 0, entries = 0;
    int has_first = 0;
    int irc = mdb_cursor_get(ic, &ik, &id, MDB_SET_RANGE);
    while (irc == 0 && ik.mv_size == 16 && memcmp(ik.mv_data, key, 8) == 0) {
      uint64_t ver = get_u64be((unsigned char *)ik.mv_data + 8);
      if (ver < version)
        verify_problem(v, "stream '%.*s': version %llu follows %lld", nlen, name, (unsigned long long)ver,
                       (long long)version - 1);
      if (id.mv_size == 8) last_pos = get_u64be(id.mv_data);
      if (ver == 0) { first_pos = last_pos; has_first = 1; }
      version = ver + 1;
      entries++;
      irc = mdb_cursor_get(ic, &ik, &id, MDB_NEXT);
    }
    if (irc && irc != MDB_NOTFOUND) { rc = irc; break; }
    total += entries;
    missing += m.count - entries;
    if (version > m.count || entries > m.count)
      verify_problem(v, "stream '%.*s': %llu index entries up to version %lld, meta says %llu events", nlen,
                     name, (unsigned long long)entries, (long long)version - 1, (unsigned long long)m.count);
    else if (m.count && version == m.count && last_pos != m.last_position)
      verify_problem(v, "stream '%.*s': its last position disagrees with its index", nlen, name);
    else if (has_first && first_pos != m.first_position)
      verify_problem(v, "stream '%.*s': its first position disagrees with its index", nlen, name);
  }
  mdb_cursor_close(ic);
  mdb_cursor_close(c);
  if (rc && rc != MDB_NOTFOUND) return rc;
  if (total != v->events)
    verify_problem(v, "streams hold %llu events, the log %llu", (unsigned long long)total,
                   (unsigned long long)v->events);
  if (missing != v->scavenged)
    verify_problem(v, "streams miss %llu versions, but scavenging removed %llu records",
                   (unsigned long long)missing, (unsigned long long)v->scavenged);
  return 0;
}

static int verify_counts(verify_state *v) {
  static const struct { int db; const char *name; } dbs[] = {
    { DB_STREAM_INDEX, "stream index" }, { DB_CATEGORY_INDEX, "category index" }, { DB_EVENT_IDS, "event id index" }
  };
  for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
    MDB_stat st;
    int rc = mdb_stat(v->txn, v->e->dbi[dbs[i].db], &st);
    if (rc) return rc;
    if (st.ms_entries != v->events)
      verify_problem(v, "%s has %zu entries for %llu events", dbs[i].name, st.ms_entries,
                     (unsigned long long)v->events);
  }
  return 0;
}

/* store:verify([{max_problems=100, progress=fn}]) -> {ok=, events=, streams=, problems={...}} | nil, err */
static int verify_store(lua_State *L) {
  store *s = store_check(L, 1);
  lua_Integer max;
  lua_settop(L, 2);
  int progress = opt_verify(L, 2, &max);
  verify_state v;
  memset(&v, 0, sizeof v);
  v.e = s->e;
  v.max_problems = (size_t)max;
  v.L = L;
  v.progress = progress;
  luaL_checkstack(L, 8, "verify");
  buf_init(&v.problems);
  int rc = store_read_begin(s, &v.txn);
  if (rc) return cerr_mdb_result(L, rc, "verify");
  if (progress) log_head(v.txn, s->e, &v.total);
  MDB_val sk = { 9, "scavenged" }, sd;
  if (mdb_get(v.txn, s->e->dbi[DB_META], &sk, &sd) == 0 && sd.mv_size == 8) v.scavenged = get_u64be(sd.mv_data);
  /* The progress callback may read; writing (which may need to grow the map
   * this transaction pins) and closing raise inside it. */
  store_busy busy;
  store_busy_begin(s, "verify", &busy);
  rc = verify_log(&v);
  store_busy_end(s, &busy);
  if (!rc) rc = verify_streams(&v);
  if (!rc) rc = verify_counts(&v);
  store_read_end(s, v.txn);
  if (rc) {
    buf_free(&v.problems);
    if (rc == VERIFY_STOPPED) return lua_error(L);     /* the callback's own error */
    return cerr_mdb_result(L, rc, "verify");
  }
  /* No transaction is open now: a Lua error here can only leak v.problems, so copy it first. */
  lua_createtable(L, 0, 5);
  lua_pushboolean(L, v.nproblems == 0);
  lua_setfield(L, -2, "ok");
  lua_pushinteger(L, (lua_Integer)v.events);
  lua_setfield(L, -2, "events");
  lua_pushinteger(L, (lua_Integer)v.streams);
  lua_setfield(L, -2, "streams");
  lua_pushinteger(L, (lua_Integer)v.nproblems);
  lua_setfield(L, -2, "problem_count");
  lua_pushlstring(L, (const char *)v.problems.data, v.problems.len);
  buf_free(&v.problems);
  size_t len;
  const char *all = lua_tolstring(L, -1, &len);
  lua_createtable(L, (int)(v.nproblems < v.max_problems ? v.nproblems : v.max_problems), 0);
  lua_Integer i = 0;
  for (size_t at = 0; at < len; at += strlen(all + at) + 1) {
    lua_pushstring(L, all + at);
    lua_rawseti(L, -2, ++i);
  }
  lua_setfield(L, -3, "problems");
  lua_pop(L, 1);
  /* The last call says done == total, as on every backend; nothing is open now. */
  if (store_report_progress(L, progress, (long long)v.events, (long long)v.events)) return lua_error(L);
  return 1;
}

void verify_register(lua_State *L) {
  lua_pushcfunction(L, verify_store);
  lua_setfield(L, -2, "verify");
}
