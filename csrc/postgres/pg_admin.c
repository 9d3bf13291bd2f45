/* store:verify and store:backup on PostgreSQL. verify reads every event row
 * and the streams table under one REPEATABLE READ transaction (one snapshot)
 * and checks each record's checksum and layout against its row; findings are
 * collected in C and pushed to Lua after the transaction ended. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <lauxlib.h>
#include "common/bytes.h"
#include "common/cerror.h"
#include "common/options.h"
#include "common/codec.h"
#include "common/record.h"
#include "pg.h"

#define VERIFY_BATCH 1000
#define VERIFY_STOPPED (-1)  /* not a PGS_ status: the progress callback raised, its error is on the stack */

typedef struct verify_state {
  buf problems;
  size_t nproblems, max_problems;
  int64_t events, streams, head;
  int64_t scavenged, holes;  /* meta 'scavenged'; positions missing from events */
} verify_state;

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

static void verify_row(verify_state *v, PGresult *r, int k) {
  int64_t pos = pgs_get_int(r, k, 0);
  const unsigned char *rec = (const unsigned char *)PQgetvalue(r, k, 6);
  size_t len = (size_t)PQgetlength(r, k, 6);
  record_view rv;
  const char *why;
  if (record_parse(rec, len, &rv, &why) != 0) {
    verify_problem(v, "position %lld: %s", (long long)pos, why);
    return;
  }
  size_t off = 0;
  if (codec_skip(rv.meta, rv.meta_len, &off) != 0 || off != rv.meta_len)
    verify_problem(v, "position %lld: meta is not valid MessagePack", (long long)pos);
  off = 0;
  if (codec_skip(rv.data, rv.data_len, &off) != 0 || off != rv.data_len)
    verify_problem(v, "position %lld: data is not valid MessagePack", (long long)pos);
  size_t slen = (size_t)PQgetlength(r, k, 1), clen = (size_t)PQgetlength(r, k, 3);
  if (slen != rv.stream_len || memcmp(PQgetvalue(r, k, 1), rv.stream, slen) ||
      pgs_get_int(r, k, 2) != (int64_t)rv.version ||
      clen != pgs_category_len(rv.stream, rv.stream_len) || memcmp(PQgetvalue(r, k, 3), rv.stream, clen) ||
      (size_t)PQgetlength(r, k, 4) != rv.type_len || memcmp(PQgetvalue(r, k, 4), rv.type, rv.type_len) ||
      PQgetlength(r, k, 5) != 16 || memcmp(PQgetvalue(r, k, 5), rv.id, 16))
    verify_problem(v, "position %lld: the row's columns disagree with its record", (long long)pos);
}

static int verify_run(pgs *s, verify_state *v, lua_State *L, int progress) {
  int st = pgs_command(s, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
  if (st) return st;
  if ((st = pgs_read_head(s, &v->head))) return st;
  int64_t next = 1;
  PGresult *r;
  pgs_params_reset(s);
  if ((st = pgs_exec(s, "SELECT value FROM meta WHERE key = 'scavenged'", &r))) return st;
  if (PQntuples(r) == 1) v->scavenged = pgs_get_int(r, 0, 0);
  PQclear(r);
  for (;;) {
    pgs_params_reset(s);
    pgs_param_int(s, next);
    st = pgs_exec(s, "SELECT position, stream, version, category, type, id, record FROM events"
                     " WHERE position >= $1::int8 ORDER BY position LIMIT 1000", &r);
    if (st) return st;
    int rows = PQntuples(r);
    for (int k = 0; k < rows; k++) {
      int64_t pos = pgs_get_int(r, k, 0);
      if (pos < next) verify_problem(v, "positions go back from %lld to %lld", (long long)next - 1, (long long)pos);
      else v->holes += pos - next;       /* removed by scavenging: checked against meta 'scavenged' */
      next = pos + 1;
      v->events++;
      verify_row(v, r, k);
    }
    PQclear(r);
    if (progress && pgs_report_progress(L, s, "verify", progress, v->events, v->head)) return VERIFY_STOPPED;
    if (rows < VERIFY_BATCH) break;
  }
  if (next - 1 > v->head)
    verify_problem(v, "the head is %lld but the last event is at %lld", (long long)v->head, (long long)next - 1);
  v->holes += v->head - (next - 1);
  if (v->holes != v->scavenged)
    verify_problem(v, "the log misses %lld positions, but scavenging removed %lld events", (long long)v->holes,
                   (long long)v->scavenged);
  pgs_params_reset(s);
  st = pgs_exec(s, "SELECT s.name, s.count, s.first_position, s.last_position,"
                   " coalesce(e.n, 0), coalesce(e.minp, 0), coalesce(e.maxp, 0), coalesce(e.maxv, -1)"
                   " FROM streams s LEFT JOIN (SELECT stream, count(*) AS n, min(position) AS minp,"
                   "  max(position) AS maxp, max(version) AS maxv FROM events GROUP BY stream) e"
                   " ON e.stream = s.name ORDER BY s.name", &r);
  if (st) return st;
  int64_t total = 0, missing = 0;
  for (int k = 0; k < PQntuples(r); k++) {
    v->streams++;
    int nlen = PQgetlength(r, k, 0) > 200 ? 200 : PQgetlength(r, k, 0);
    const char *name = PQgetvalue(r, k, 0);
    int64_t count = pgs_get_int(r, k, 1), n = pgs_get_int(r, k, 4);
    total += n;
    missing += count - n;
    if (n > count || pgs_get_int(r, k, 7) > count - 1)
      verify_problem(v, "stream '%.*s': %lld events stored, its row says %lld", nlen, name, (long long)n,
                     (long long)count);
    else if (n == count && count &&
             (pgs_get_int(r, k, 2) != pgs_get_int(r, k, 5) || pgs_get_int(r, k, 3) != pgs_get_int(r, k, 6)))
      verify_problem(v, "stream '%.*s': first/last positions disagree with its events", nlen, name);
  }
  PQclear(r);
  if (total != v->events)
    verify_problem(v, "streams hold %lld events, the log %lld", (long long)total, (long long)v->events);
  if (missing != v->scavenged)
    verify_problem(v, "streams miss %lld versions, but scavenging removed %lld events", (long long)missing,
                   (long long)v->scavenged);
  return pgs_command(s, "COMMIT");
}

/* store:verify([{max_problems=100, progress=fn}]) -> {ok=, events=, streams=, problem_count=, problems=} */
static int pgs_verify(lua_State *L) {
  pgs *s = pgs_check(L, 1);
  lua_Integer max;
  lua_settop(L, 2);
  int progress = opt_verify(L, 2, &max);
  luaL_checkstack(L, 8, "verify");
  verify_state v;
  memset(&v, 0, sizeof v);
  v.max_problems = (size_t)max;
  buf_init(&v.problems);
  int st = pgs_ready(s);
  if (!st) st = verify_run(s, &v, L, progress);
  if (st) {
    pgs_ready(s);              /* rolls the check's transaction back */
    buf_free(&v.problems);
    if (st == VERIFY_STOPPED) return lua_error(L);     /* the callback's own error */
    return pgs_push_error(L, s, st, "verify");
  }
  lua_createtable(L, 0, 5);
  lua_pushboolean(L, v.nproblems == 0);
  lua_setfield(L, -2, "ok");
  lua_pushinteger(L, (lua_Integer)v.events);
  lua_setfield(L, -2, "events");
  lua_pushinteger(L, (lua_Integer)v.streams);
  lua_setfield(L, -2, "streams");
  lua_pushinteger(L, (lua_Integer)v.nproblems);
  lua_setfield(L, -2, "problem_count");
  lua_createtable(L, (int)(v.nproblems < v.max_problems ? v.nproblems : v.max_problems), 0);
  size_t at = 0;
  for (lua_Integer i = 1; at < v.problems.len; i++) {
    const char *msg = (const char *)v.problems.data + at;
    lua_pushstring(L, msg);
    lua_rawseti(L, -2, i);
    at += strlen(msg) + 1;
  }
  lua_setfield(L, -2, "problems");
  buf_free(&v.problems);
  if (progress && pgs_report_progress(L, s, "verify", progress, v.events, v.events)) return lua_error(L);
  return 1;
}

/* store:backup(dest) -> nil, err(unsupported): the server's own tools do this. */
static int pgs_backup(lua_State *L) {
  pgs *s = pgs_check(L, 1);
  size_t len;
  const char *dest = luaL_checklstring(L, 2, &len);
  luaL_argcheck(L, strlen(dest) == len, 2, "path must not contain a NUL byte");
  opt_backup(L, 3);
  return cerr_result(L, "unsupported",
                     "backup: a PostgreSQL store is backed up with the server's tools, e.g. "
                     "pg_dump --schema=%s (one store) or pg_basebackup (the whole cluster)", s->schema);
}

int pgs_report_progress(lua_State *L, pgs *s, const char *what, int fn, long long done, long long total) {
  if (!fn) return 0;
  lua_pushvalue(L, fn);
  lua_pushinteger(L, done);
  lua_pushinteger(L, total);
  s->busy = what;
  int rc = lua_pcall(L, 2, 0, 0);
  s->busy = NULL;
  return rc == LUA_OK ? 0 : -1;
}

void pgs_admin_register(lua_State *L) {
  lua_pushcfunction(L, pgs_verify);
  lua_setfield(L, -2, "verify");
  lua_pushcfunction(L, pgs_backup);
  lua_setfield(L, -2, "backup");
}
