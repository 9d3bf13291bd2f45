/* store:scavenge_stream and store:scavenged on PostgreSQL (see csrc/scavenge.c
 * for the LMDB one): one transaction per call deletes at most `batch` rows
 * that the stream's lifecycle rule hides (retention.h), decided in C from
 * the rows' records, and adds them to meta 'scavenged' in the same
 * transaction. The metadata row is locked first, so a rule loosened
 * meanwhile never loses events it shows again. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include "common/bytes.h"
#include "common/cerror.h"
#include "common/record.h"
#include "common/retention.h"
#include "pg.h"

typedef struct pg_scavenge_job {
  const char *name;
  size_t len;
  lua_Integer batch;
  int dry_run;
  int64_t now;
  int64_t from;
  int64_t removed;
  int more;
  buf positions;           /* "{p1,p2,...}": the rows to delete */
} pg_scavenge_job;

static int pgsc_in_txn(pgs *s, pg_scavenge_job *j) {
  pgs_params_reset(s);
  pgs_param_bytes(s, j->name, j->len);
  PGresult *r;
  int st = pgs_exec(s, j->dry_run ? "SELECT m.value, s.count FROM kv m JOIN streams s ON s.name = m.key"
                                    " WHERE m.space = '" RETENTION_SPACE "'::bytea AND m.key = $1"
                                  : "SELECT m.value, s.count FROM kv m JOIN streams s ON s.name = m.key"
                                    " WHERE m.space = '" RETENTION_SPACE "'::bytea AND m.key = $1 FOR UPDATE OF m", &r);
  if (st) return st;
  if (PQntuples(r) != 1) { PQclear(r); return PGS_OK; }
  stream_rule rule;
  int bad = retention_parse((const unsigned char *)PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0), &rule);
  uint64_t count = (uint64_t)pgs_get_int(r, 0, 1);
  PQclear(r);
  if (bad) {
    snprintf(s->err, sizeof s->err, "the metadata of stream '%.*s' does not decode", (int)j->len, j->name);
    return PGS_CORRUPT;
  }
  if (!rule.hides) return PGS_OK;
  int prefix_only = !rule.hard && rule.max_age_ns < 0;
  uint64_t first = retention_first_version(&rule, count);
  lua_Integer limit = j->dry_run ? 10000 : 4 * j->batch;
  for (;;) {
    pgs_params_reset(s);
    pgs_param_bytes(s, j->name, j->len);
    pgs_param_int(s, j->from);
    pgs_param_int(s, prefix_only ? (int64_t)first : INT64_MAX);
    pgs_param_int(s, (int64_t)limit);
    st = pgs_exec(s, "SELECT position, version, record FROM events WHERE stream = $1 AND version >= $2::int8"
                     " AND version < $3::int8 ORDER BY version LIMIT $4::int8", &r);
    if (st) return st;
    int rows = PQntuples(r);
    j->positions.len = 0;
    int n = 0;
    st = buf_append(&j->positions, "{", 1) ? PGS_NOMEM : PGS_OK;
    for (int k = 0; k < rows && !st; k++) {
      if (!j->dry_run && j->removed + n >= j->batch) { j->more = 1; break; }
      int64_t pos = pgs_get_int(r, k, 0), version = pgs_get_int(r, k, 1);
      record_view v;
      const char *why;
      if (record_parse((const unsigned char *)PQgetvalue(r, k, 2), (size_t)PQgetlength(r, k, 2), &v, &why) != 0) {
        snprintf(s->err, sizeof s->err, "the event at position %lld is damaged: %s", (long long)pos, why);
        st = PGS_CORRUPT;
        break;
      }
      if (retention_hides(&rule, count, (uint64_t)version, v.time, v.type, v.type_len, j->now, 1)) {
        char num[24];
        int len = snprintf(num, sizeof num, "%s%lld", n ? "," : "", (long long)pos);
        if (buf_append(&j->positions, num, (size_t)len)) st = PGS_NOMEM;
        n++;
      }
      j->from = version + 1;
    }
    PQclear(r);
    if (st) return st;
    if (!j->dry_run && rows == limit && !j->more) j->more = 1;    /* bounded: go on in the next call */
    if (j->dry_run) {
      j->removed += n;
      if (rows < limit) return PGS_OK;
      continue;
    }
    if (n) {
      if (buf_append(&j->positions, "}", 2)) return PGS_NOMEM;
      pgs_params_reset(s);
      pgs_param_text(s, (const char *)j->positions.data);
      st = pgs_exec(s, "WITH d AS (DELETE FROM events WHERE position = ANY($1::text::int8[]) RETURNING 1),"
                       " c AS (SELECT count(*) AS n FROM d)"
                       " INSERT INTO meta (key, value) SELECT 'scavenged', n FROM c"
                       " ON CONFLICT (key) DO UPDATE SET value = meta.value + EXCLUDED.value"
                       " RETURNING (SELECT n FROM c)", &r);
      if (st) return st;
      j->removed += PQntuples(r) == 1 ? pgs_get_int(r, 0, 0) : 0;
      PQclear(r);
    }
    return PGS_OK;
  }
}

/* store:scavenge_stream(stream, batch [, dry_run [, from]]) -> removed, next_version | false | nil, err */
static int pgsc_scavenge_stream(lua_State *L) {
  pgs *s = pgs_check(L, 1);
  pg_scavenge_job j;
  memset(&j, 0, sizeof j);
  luaL_checktype(L, 2, LUA_TSTRING);
  j.name = lua_tolstring(L, 2, &j.len);
  luaL_argcheck(L, j.len > 0 && j.len <= RECORD_MAX_STREAM, 2, "stream name must be 1 to 200 bytes");
  j.batch = luaL_checkinteger(L, 3);
  luaL_argcheck(L, j.batch >= 1, 3, "batch must be >= 1");
  j.dry_run = lua_toboolean(L, 4);
  j.from = luaL_optinteger(L, 5, 0);
  luaL_argcheck(L, j.from >= 0, 5, "from must be a version >= 0");
  j.now = retention_now();
  if (!j.dry_run && s->readonly) return cerr_result(L, "readonly", "the store was opened read-only");
  buf_init(&j.positions);
  int st = pgs_ready(s);
  if (!st) st = pgs_command(s, j.dry_run ? "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" : "BEGIN");
  if (!st) st = pgsc_in_txn(s, &j);
  if (!st) st = pgs_command(s, j.dry_run ? "ROLLBACK" : "COMMIT");
  buf_free(&j.positions);
  if (st) {
    pgs_ready(s);                /* rolls back what is left open */
    return pgs_push_error(L, s, st, "scavenge");
  }
  lua_pushinteger(L, (lua_Integer)j.removed);
  if (j.more) lua_pushinteger(L, (lua_Integer)j.from);
  else lua_pushboolean(L, 0);
  return 2;
}

/* store:scavenged() -> how many events scavenging removed, ever */
static int pgsc_scavenged(lua_State *L) {
  pgs *s = pgs_check(L, 1);
  int64_t n = 0;
  int st = pgs_ready(s);
  if (!st) {
    pgs_params_reset(s);
    PGresult *r;
    st = pgs_exec(s, "SELECT value FROM meta WHERE key = 'scavenged'", &r);
    if (!st) {
      if (PQntuples(r) == 1) n = pgs_get_int(r, 0, 0);
      PQclear(r);
    }
  }
  if (st) return pgs_push_error(L, s, st, "scavenged");
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

void pgs_scavenge_register(lua_State *L) {
  lua_pushcfunction(L, pgsc_scavenge_stream);
  lua_setfield(L, -2, "scavenge_stream");
  lua_pushcfunction(L, pgsc_scavenged);
  lua_setfield(L, -2, "scavenged");
}
