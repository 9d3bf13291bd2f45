/* The store handle: open, close, and the small queries (head, stats, stream_info). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <lauxlib.h>
#include "common/cerror.h"
#include "common/options.h"
#include "append.h"
#include "logdb.h"
#include "store.h"
#include "watch.h"
#include "common/uuid.h"

store *store_check(lua_State *L, int idx) {
  store *s = luaL_checkudata(L, idx, STORE_MT);
  if (s->e == NULL) luaL_error(L, "attempt to use a closed store");
  if (s->e->broken)
    luaL_error(L, "the store at %s lost its memory map when it could not be resized (%s): close it and open it "
               "again", s->e->path, mdb_strerror(s->e->broken));
  if (s->e->pid != getpid())
    luaL_error(L, "store was opened by process %d and cannot be used after fork(); open it again",
               (int)s->e->pid);
  return s;
}

/* The environments this thread is verifying or backing up, innermost last:
 * a write to one of them through any handle would wait for (or grow) a map
 * that this thread's own verify or backup holds. */
#define STORE_BUSY_MAX 16
static _Thread_local const envref *store_busy_env[STORE_BUSY_MAX];
static _Thread_local const char *store_busy_what[STORE_BUSY_MAX];
static _Thread_local int store_busy_depth;

void store_busy_begin(store *s, const char *what, store_busy *b) {
  b->outer = s->busy;
  s->busy = what;
  b->depth = 0;
  if (store_busy_depth >= STORE_BUSY_MAX) return;      /* nested that deep: the handle's own mark only */
  store_busy_env[store_busy_depth] = s->e;
  store_busy_what[store_busy_depth] = what;
  b->depth = ++store_busy_depth;
}

void store_busy_end(store *s, const store_busy *b) {
  s->busy = b->outer;
  if (b->depth) store_busy_depth = b->depth - 1;
}

store *store_check_write(lua_State *L, int idx, const char *fn) {
  store *s = store_check(L, idx);
  const char *busy = s->busy;
  for (int i = store_busy_depth - 1; i >= 0 && !busy; i--)
    if (store_busy_env[i] == s->e) busy = store_busy_what[i];
  if (busy)
    luaL_error(L, "%s: cannot write to the store while its %s runs (a progress callback may only read)", fn, busy);
  return s;
}

const char *store_check_path(lua_State *L, int idx) {
  size_t len;
  const char *path = luaL_checklstring(L, idx, &len);
  luaL_argcheck(L, strlen(path) == len, idx, "path must not contain a NUL byte");
  return path;
}

int store_read_begin(store *s, MDB_txn **txn) { return envreg_read_begin(s->e, &s->spare_read, txn); }

void store_read_end(store *s, MDB_txn *txn) { envreg_read_end(s->e, &s->spare_read, txn); }

static void store_release(store *s) {
  watch_close(s);
  if (s->e) {
    envref *e = s->e;
    s->e = NULL;             /* closed before releasing: a second close is a no-op */
    /* The kept read handle goes before the environment. In a forked child it
     * is left alone, like the environment: aborting it would free a reader
     * slot that belongs to the parent. */
    if (s->spare_read && e->pid == getpid()) mdb_txn_abort(s->spare_read);
    s->spare_read = NULL;
    envreg_release(e);
  }
  append_scratch_free(s);
  buf_free(&s->spare_records);
  buf_free(&s->spare_items);
}

static int store_close(lua_State *L) {
  store *s = luaL_checkudata(L, 1, STORE_MT);
  if (s->busy)
    return luaL_error(L, "close: cannot close the store while its %s runs (from its progress callback)", s->busy);
  store_release(s);
  return 0;
}

/* A store is never collected while one of its calls runs: no busy check. */
static int store_gc(lua_State *L) {
  store_release(luaL_checkudata(L, 1, STORE_MT));
  return 0;
}

static int store_tostring(lua_State *L) {
  store *s = luaL_checkudata(L, 1, STORE_MT);
  if (s->e) lua_pushfstring(L, "chronicle store (%s)", s->e->path);
  else lua_pushliteral(L, "chronicle store (closed)");
  return 1;
}

static const char *const durability_names[] = { "full", "nometasync", "nosync", NULL };
static const unsigned durability_flags[] = { 0, MDB_NOMETASYNC, MDB_NOSYNC };

static lua_Integer store_opt_integer(lua_State *L, const char *name, lua_Integer dflt, lua_Integer min) {
  lua_getfield(L, 2, name);
  lua_Integer v = dflt;
  if (!lua_isnil(L, -1)) {
    int ok;
    v = lua_tointegerx(L, -1, &ok);
    if (!ok || v < min) luaL_error(L, "open: option '%s' must be an integer >= %I", name, min);
  }
  lua_pop(L, 1);
  return v;
}

/* core.open(dir, opts) -> store | nil, err */
int store_open(lua_State *L) {
  const char *dir = store_check_path(L, 1);
  static const opt_spec options[] = {
    { "durability", OPT_STRING }, { "readonly", OPT_BOOLEAN }, { "map_size", OPT_INTEGER },
    { "max_event_size", OPT_INTEGER }, { NULL, 0 }
  };
  if (lua_isnoneornil(L, 2)) { lua_settop(L, 1); lua_newtable(L); }
  opt_check(L, 2, "open", options);
  envopts opts = { 0, 0 };
  lua_getfield(L, 2, "durability");
  int dur = 0;
  if (!lua_isnil(L, -1)) {
    const char *name = lua_tostring(L, -1);
    for (dur = 0; durability_names[dur] && !(name && strcmp(name, durability_names[dur]) == 0); dur++) {}
    if (durability_names[dur] == NULL || lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "open: option 'durability' must be \"full\", \"nometasync\" or \"nosync\" (got %s)",
                 name ? name : luaL_typename(L, -1));
  }
  lua_getfield(L, 2, "readonly");
  opts.readonly = lua_toboolean(L, -1);
  lua_pop(L, 2);
  opts.map_size = (size_t)store_opt_integer(L, "map_size", 0, 1 << 20);
  size_t max_event = (size_t)store_opt_integer(L, "max_event_size", STORE_DEFAULT_MAX_EVENT, 256);
  if (max_event > 0x7fffffff) luaL_error(L, "open: option 'max_event_size' must be below 2 GiB");

  /* The handle exists, closed, before the environment: no leak if this allocation fails. */
  store *s = lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  luaL_setmetatable(L, STORE_MT);
  s->write_flags = durability_flags[dur];
  s->readonly = opts.readonly;
  s->max_event_size = max_event;
  buf_init(&s->spare_records);
  buf_init(&s->spare_items);
  s->watch_fd = -1;

  char why[256];
  int rc = envreg_open(dir, &opts, &s->e, why);
  switch (rc) {
    case 0: return 1;
    case ENVREG_NOT_A_STORE: return cerr_result(L, "not_a_store", "%s", why);
    case ENVREG_NEWER_FORMAT: return cerr_result(L, "unsupported_format", "%s", why);
    case ENVREG_NOT_FOUND: return cerr_result(L, "not_found", "%s", why);
    case ENVREG_READONLY_SHARED: return cerr_result(L, "readonly", "%s", why);
    case ENVREG_BROKEN: return cerr_result(L, "out_of_memory", "%s", why);
    case EAGAIN: return cerr_result(L, "locked", "cannot open %s: locked by another process", dir);
    default: {
      char what[600];
      if (why[0]) snprintf(what, sizeof what, "cannot open store at %s (%s)", dir, why);
      else snprintf(what, sizeof what, "cannot open store at %s", dir);
      return cerr_mdb_result(L, rc, what);
    }
  }
}

/* store:head() -> the global position of the newest event (0 when empty) */
int store_read_head(store *s, uint64_t *head) {
  MDB_txn *txn;
  int rc = store_read_begin(s, &txn);
  if (rc) return rc;
  rc = log_head(txn, s->e, head);
  store_read_end(s, txn);
  return rc;
}

static int store_head(lua_State *L) {
  store *s = store_check(L, 1);
  uint64_t head;
  int rc = store_read_head(s, &head);
  if (rc) return cerr_mdb_result(L, rc, "head");
  lua_pushinteger(L, (lua_Integer)head);
  return 1;
}

int store_report_progress(lua_State *L, int fn, long long done, long long total) {
  if (!fn) return 0;
  lua_pushvalue(L, fn);
  lua_pushinteger(L, done);
  lua_pushinteger(L, total);
  return lua_pcall(L, 2, 0, 0) == LUA_OK ? 0 : -1;
}

void store_push_stream_meta(lua_State *L, const void *name, size_t len, const stream_meta *m) {
  lua_createtable(L, 0, 8);
  lua_pushlstring(L, name, len);
  lua_setfield(L, -2, "stream");
  lua_pushlstring(L, name, category_len(name, len));
  lua_setfield(L, -2, "category");
  lua_pushinteger(L, (lua_Integer)m->count - 1);
  lua_setfield(L, -2, "version");
  lua_pushinteger(L, (lua_Integer)m->count);
  lua_setfield(L, -2, "count");
  lua_pushinteger(L, (lua_Integer)m->first_position);
  lua_setfield(L, -2, "first_position");
  lua_pushinteger(L, (lua_Integer)m->last_position);
  lua_setfield(L, -2, "last_position");
  lua_pushinteger(L, m->created);
  lua_setfield(L, -2, "created");
  lua_pushinteger(L, m->updated);
  lua_setfield(L, -2, "updated");
}

/* Reads the meta of the stream named at stack index 2 (checked) in a short
 * read transaction; returns 0, MDB_NOTFOUND or an LMDB error. */
static int store_read_stream_meta(lua_State *L, store *s, stream_meta *m) {
  size_t len;
  luaL_checktype(L, 2, LUA_TSTRING);
  const char *name = lua_tolstring(L, 2, &len);
  if (len == 0 || len > RECORD_MAX_STREAM) luaL_argerror(L, 2, "stream name must be 1 to 200 bytes");
  MDB_txn *txn;
  int rc = store_read_begin(s, &txn);
  if (rc) return rc;
  rc = stream_meta_get(txn, s->e, name, len, m);
  store_read_end(s, txn);
  return rc;
}

/* store:stream_info(name) -> info | nil, err(not_found) */
static int store_stream_info(lua_State *L) {
  store *s = store_check(L, 1);
  stream_meta m;
  int rc = store_read_stream_meta(L, s, &m);
  if (rc == MDB_NOTFOUND) {
    cerr_result(L, "not_found", "stream '%s' does not exist", lua_tostring(L, 2));
    lua_pushvalue(L, 2);
    lua_setfield(L, -2, "stream");
    return 2;
  }
  if (rc) return cerr_mdb_result(L, rc, "stream_info");
  size_t len;
  const char *name = lua_tolstring(L, 2, &len);
  store_push_stream_meta(L, name, len, &m);
  return 1;
}

/* store:stream_version(name) -> the version of the stream's last event, -1 when it has none */
static int store_stream_version(lua_State *L) {
  store *s = store_check(L, 1);
  stream_meta m;
  int rc = store_read_stream_meta(L, s, &m);
  if (rc == MDB_NOTFOUND) m.count = 0;
  else if (rc) return cerr_mdb_result(L, rc, "stream_version");
  lua_pushinteger(L, (lua_Integer)m.count - 1);
  return 1;
}

/* store:stats() -> { events, streams, bytes, map_size, ... } */
static int store_stats(lua_State *L) {
  store *s = store_check(L, 1);
  MDB_txn *txn;
  int rc = store_read_begin(s, &txn);
  if (rc) return cerr_mdb_result(L, rc, "stats");
  MDB_stat log_st, streams_st, env_st;
  MDB_envinfo info;
  uint64_t head = 0;
  rc = log_head(txn, s->e, &head);
  if (!rc) rc = mdb_stat(txn, s->e->dbi[DB_LOG], &log_st);
  if (!rc) rc = mdb_stat(txn, s->e->dbi[DB_STREAMS], &streams_st);
  if (!rc) rc = mdb_env_stat(s->e->env, &env_st);
  if (!rc) rc = mdb_env_info(s->e->env, &info);
  store_read_end(s, txn);
  if (rc) return cerr_mdb_result(L, rc, "stats");
  char file[4200];
  struct stat st;
  snprintf(file, sizeof file, "%s/data.mdb", s->e->path);
  lua_Integer bytes = stat(file, &st) == 0 ? (lua_Integer)st.st_blocks * 512 : -1;
  lua_Integer file_size = stat(file, &st) == 0 ? (lua_Integer)st.st_size : -1;
  char id[UUID_TEXT_LEN];
  uuid_format(s->e->store_id, id);

  lua_createtable(L, 0, 10);
  lua_pushinteger(L, (lua_Integer)log_st.ms_entries);
  lua_setfield(L, -2, "events");
  lua_pushinteger(L, (lua_Integer)head);
  lua_setfield(L, -2, "head");
  lua_pushinteger(L, (lua_Integer)streams_st.ms_entries);
  lua_setfield(L, -2, "streams");
  lua_pushinteger(L, bytes);
  lua_setfield(L, -2, "bytes");
  lua_pushinteger(L, file_size);
  lua_setfield(L, -2, "file_size");
  lua_pushinteger(L, (lua_Integer)info.me_mapsize);
  lua_setfield(L, -2, "map_size");
  lua_pushinteger(L, (lua_Integer)((info.me_last_pgno + 1) * env_st.ms_psize));
  lua_setfield(L, -2, "used_bytes");
  lua_pushinteger(L, (lua_Integer)env_st.ms_psize);
  lua_setfield(L, -2, "page_size");
  lua_pushinteger(L, CHRONICLE_FORMAT);
  lua_setfield(L, -2, "format");
  lua_pushlstring(L, id, UUID_TEXT_LEN);
  lua_setfield(L, -2, "store_id");
  lua_pushstring(L, s->e->path);
  lua_setfield(L, -2, "path");
  return 1;
}

/* now() -> ns since the epoch by the store's clock: one host's, so this host's realtime clock
   (checked open like every method). */
static int store_now(lua_State *L) {
  store_check(L, 1);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000000000 + ts.tv_nsec);
  return 1;
}

static int store_is_open(lua_State *L) {
  store *s = luaL_checkudata(L, 1, STORE_MT);
  lua_pushboolean(L, s->e != NULL);
  return 1;
}

static const luaL_Reg store_methods[] = {
  { "close", store_close },
  { "head", store_head },
  { "now", store_now },
  { "stream_info", store_stream_info },
  { "stream_version", store_stream_version },
  { "stats", store_stats },
  { "is_open", store_is_open },
  { NULL, NULL }
};

static const luaL_Reg store_metamethods[] = {
  { "__gc", store_gc },
  { "__close", store_close },
  { "__tostring", store_tostring },
  { "__index", NULL },
  { NULL, NULL }
};

void store_push_metatable(lua_State *L) {
  if (luaL_newmetatable(L, STORE_MT)) luaL_setfuncs(L, store_metamethods, 0);
}

void store_register(lua_State *L) {
  luaL_setfuncs(L, store_methods, 0);
}
