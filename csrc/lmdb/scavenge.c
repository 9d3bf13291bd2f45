/* store:scavenge_stream: removes what a stream's lifecycle rule hides
 * (retention.h) for good: the records, their stream, category and id index
 * entries, in one bounded write transaction per call, so other writers
 * never wait long. Every call commits on its own and removing is
 * idempotent: a scavenge killed at any moment loses nothing, and the next
 * one finishes. The meta key `scavenged` counts the records removed (verify
 * checks the holes in the log against it). The log's newest record is never
 * removed: the head, and so every position given out, stays. */
#include <string.h>
#include <lauxlib.h>
#include "common/cerror.h"
#include "kv.h"
#include "scavenge.h"
#include "logdb.h"
#include "common/retention.h"
#include "store.h"

#define SCAVENGE_MAX_GROWTHS 40
#define SCAVENGE_CORRUPT 0x200003
#define SCAVENGE_BAD_RULE 0x200004

typedef struct scavenge_job {
  const char *name;
  size_t len;
  lua_Integer batch;       /* records to remove per transaction at most */
  int dry_run;             /* count only, under a read transaction */
  int64_t now;
  uint64_t from;           /* the version to go on from */
  uint64_t removed;
  int more;                /* stopped at the batch's bound: call again from `from` */
  uint64_t bad_position;
} scavenge_job;

static int scavenge_rule(MDB_txn *txn, const envref *e, const scavenge_job *j, stream_rule *rule) {
  unsigned char k[KV_KEY_MAX];
  MDB_val mk = { kv_key(k, RETENTION_SPACE, RETENTION_SPACE_LEN, j->name, j->len), k }, d;
  memset(rule, 0, sizeof *rule);
  int rc = mdb_get(txn, e->dbi[DB_KV], &mk, &d);
  if (rc) return rc;
  return retention_parse(d.mv_data, d.mv_size, rule) ? SCAVENGE_BAD_RULE : 0;
}

/* Removes the record at pos (parsed as v, pointing into LMDB's pages: read
 * before any delete, which may move them) and its index entries. */
static int scavenge_remove(MDB_txn *txn, const envref *e, const unsigned char *index_key, uint64_t pos,
                           const record_view *v) {
  unsigned char id[16], ckey[CATEGORY_KEY_MAX], lkey[8];
  memcpy(id, v->id, 16);
  size_t clen = category_key(ckey, v->stream, category_len(v->stream, v->stream_len), pos);
  put_u64be(lkey, pos);
  MDB_val ik = { 16, (void *)index_key };
  int rc = mdb_del(txn, e->dbi[DB_STREAM_INDEX], &ik, NULL);
  if (rc) return rc;
  MDB_val ck = { clen, ckey };
  rc = mdb_del(txn, e->dbi[DB_CATEGORY_INDEX], &ck, NULL);
  if (rc && rc != MDB_NOTFOUND) return rc;
  MDB_val idk = { 16, id }, idv;
  rc = mdb_get(txn, e->dbi[DB_EVENT_IDS], &idk, &idv);
  if (rc == 0 && idv.mv_size == 8 && get_u64be(idv.mv_data) == pos) rc = mdb_del(txn, e->dbi[DB_EVENT_IDS], &idk, NULL);
  if (rc && rc != MDB_NOTFOUND) return rc;
  MDB_val lk = { 8, lkey };
  return mdb_del(txn, e->dbi[DB_LOG], &lk, NULL);
}

static int scavenge_in_txn(MDB_txn *txn, const envref *e, scavenge_job *j) {
  stream_meta m;
  int rc = stream_meta_get(txn, e, j->name, j->len, &m);
  if (rc == MDB_NOTFOUND) return 0;
  if (rc) return rc;
  stream_rule rule;
  rc = scavenge_rule(txn, e, j, &rule);
  if (rc == MDB_NOTFOUND) return 0;
  if (rc) return rc;
  if (!rule.hides) return 0;
  uint64_t head;
  if ((rc = log_head(txn, e, &head))) return rc;
  /* Past the first visible version only max_age (or a tombstone) hides anything. */
  int prefix_only = !rule.hard && rule.max_age_ns < 0;
  uint64_t first = retention_first_version(&rule, m.count);
  lua_Integer visits = 0;
  for (;;) {
    unsigned char key[16];
    stream_index_key(key, m.id, j->from);
    MDB_cursor *c;
    if ((rc = mdb_cursor_open(txn, e->dbi[DB_STREAM_INDEX], &c))) return rc;
    MDB_val k = { 16, key }, d;
    rc = mdb_cursor_get(c, &k, &d, MDB_SET_RANGE);
    if (rc == 0 && (k.mv_size != 16 || memcmp(k.mv_data, key, 8) != 0)) rc = MDB_NOTFOUND;
    if (rc == 0 && d.mv_size != 8) rc = MDB_CORRUPTED;
    uint64_t version = 0, pos = 0;
    if (rc == 0) {
      memcpy(key, k.mv_data, 16);
      version = get_u64be(key + 8);
      pos = get_u64be(d.mv_data);
    }
    mdb_cursor_close(c);
    if (rc == MDB_NOTFOUND) return 0;
    if (rc) return rc;
    if (prefix_only && version >= first) return 0;
    if (!j->dry_run && (j->removed >= (uint64_t)j->batch || visits >= 4 * j->batch)) { j->more = 1; return 0; }
    visits++;
    unsigned char pk[8];
    put_u64be(pk, pos);
    MDB_val lk = { 8, pk }, rec;
    if ((rc = mdb_get(txn, e->dbi[DB_LOG], &lk, &rec))) return rc == MDB_NOTFOUND ? MDB_CORRUPTED : rc;
    record_view v;
    const char *why;
    if (record_parse(rec.mv_data, rec.mv_size, &v, &why) != 0) {
      j->bad_position = pos;
      return SCAVENGE_CORRUPT;
    }
    if (pos != head && retention_hides(&rule, m.count, version, v.time, v.type, v.type_len, j->now, 1)) {
      if (!j->dry_run && (rc = scavenge_remove(txn, e, key, pos, &v))) return rc;
      j->removed++;
    }
    j->from = version + 1;
  }
}

/* Adds the records removed to meta/scavenged. */
static int scavenge_count(MDB_txn *txn, const envref *e, uint64_t removed) {
  MDB_val k = { 9, "scavenged" }, d;
  uint64_t total = 0;
  int rc = mdb_get(txn, e->dbi[DB_META], &k, &d);
  if (rc == 0 && d.mv_size == 8) total = get_u64be(d.mv_data);
  else if (rc && rc != MDB_NOTFOUND) return rc;
  unsigned char b[8];
  put_u64be(b, total + removed);
  MDB_val v = { 8, b };
  return mdb_put(txn, e->dbi[DB_META], &k, &v, 0);
}

static int scavenge_run(store *s, scavenge_job *j) {
  uint64_t from = j->from;
  if (j->dry_run) {
    MDB_txn *txn;
    int rc = store_read_begin(s, &txn);
    if (rc) return rc;
    rc = scavenge_in_txn(txn, s->e, j);
    store_read_end(s, txn);
    return rc;
  }
  for (int growths = 0;; growths++) {
    j->from = from;
    j->removed = 0;
    j->more = 0;
    MDB_txn *txn;
    int rc = envreg_txn_begin(s->e, s->write_flags, &txn);
    if (rc) return rc;
    rc = scavenge_in_txn(txn, s->e, j);
    if (rc == 0 && j->removed) rc = scavenge_count(txn, s->e, j->removed);
    if (rc == 0) rc = envreg_txn_finish(s->e, txn, 1);
    else envreg_txn_finish(s->e, txn, 0);
    if (rc != MDB_MAP_FULL || growths >= SCAVENGE_MAX_GROWTHS) return rc;
    if ((rc = envreg_grow(s->e))) return rc;
  }
}

/* store:scavenge_stream(stream, batch [, dry_run [, from]]) -> removed, next_version | false
 * | nil, err. A dry run counts what would go (the whole stream, read-only). */
static int scavenge_stream(lua_State *L) {
  store *s = store_check(L, 1);
  scavenge_job j;
  memset(&j, 0, sizeof j);
  luaL_checktype(L, 2, LUA_TSTRING);
  j.name = lua_tolstring(L, 2, &j.len);
  luaL_argcheck(L, j.len > 0 && j.len <= RECORD_MAX_STREAM, 2, "stream name must be 1 to 200 bytes");
  j.batch = luaL_checkinteger(L, 3);
  luaL_argcheck(L, j.batch >= 1, 3, "batch must be >= 1");
  j.dry_run = lua_toboolean(L, 4);
  lua_Integer from = luaL_optinteger(L, 5, 0);
  luaL_argcheck(L, from >= 0, 5, "from must be a version >= 0");
  j.from = (uint64_t)from;
  j.now = retention_now();
  if (!j.dry_run) {
    store_check_write(L, 1, "scavenge");
    if (s->readonly) return cerr_result(L, "readonly", "the store was opened read-only");
  }
  int rc = scavenge_run(s, &j);
  if (rc == SCAVENGE_CORRUPT)
    return cerr_result(L, "corrupt", "scavenge: the event at position %I is damaged", (lua_Integer)j.bad_position);
  if (rc == SCAVENGE_BAD_RULE)
    return cerr_result(L, "corrupt", "scavenge: the metadata of stream '%s' does not decode", j.name);
  if (rc) return cerr_mdb_result(L, rc, "scavenge");
  lua_pushinteger(L, (lua_Integer)j.removed);
  if (j.more) lua_pushinteger(L, (lua_Integer)j.from);
  else lua_pushboolean(L, 0);
  return 2;
}

/* store:scavenged() -> how many records scavenging removed, ever */
static int scavenge_total(lua_State *L) {
  store *s = store_check(L, 1);
  MDB_txn *txn;
  int rc = store_read_begin(s, &txn);
  if (rc) return cerr_mdb_result(L, rc, "scavenged");
  MDB_val k = { 9, "scavenged" }, d;
  uint64_t total = 0;
  rc = mdb_get(txn, s->e->dbi[DB_META], &k, &d);
  if (rc == 0 && d.mv_size == 8) total = get_u64be(d.mv_data);
  store_read_end(s, txn);
  if (rc && rc != MDB_NOTFOUND) return cerr_mdb_result(L, rc, "scavenged");
  lua_pushinteger(L, (lua_Integer)total);
  return 1;
}

void scavenge_register(lua_State *L) {
  lua_pushcfunction(L, scavenge_stream);
  lua_setfield(L, -2, "scavenge_stream");
  lua_pushcfunction(L, scavenge_total);
  lua_setfield(L, -2, "scavenged");
}
