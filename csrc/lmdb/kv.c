/* Key-value spaces (see kv.h): the write ops of store:write and the reads
 * kv_get / kv_count. (kv_scan lives with the other iterators in scan.c.) */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <lauxlib.h>
#include "common/cerror.h"
#include "common/codec.h"
#include "append.h"
#include "kv.h"
#include "logdb.h"

enum { KV_CHECK, KV_CLEAR, KV_DELETE, KV_PUT };

typedef struct pending_kv {
  int op;
  size_t key_off, key_len;     /* the LMDB key, in the scratch's bytes */
  size_t val_off, val_len;     /* the encoded value (check, put) */
  int absent;                  /* check: the key must not exist */
} pending_kv;

#define PENDING_KV(s) ((pending_kv *)(s)->scratch->kv.data)
#define KVREAD_MT "chronicle.kvread"

size_t kv_key(unsigned char *out, const char *space, size_t slen, const char *key, size_t klen) {
  out[0] = (unsigned char)slen;
  memcpy(out + 1, space, slen);
  memcpy(out + 1 + slen, key, klen);
  return 1 + slen + klen;
}

const char *kv_check_space(lua_State *L, int idx, const char *where, size_t *len) {
  const char *s = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, len) : NULL;
  if (s == NULL || *len == 0 || *len > KV_MAX_SPACE)
    luaL_error(L, "%s: space must be a string of 1 to %d bytes", where, KV_MAX_SPACE);
  return s;
}

const char *kv_check_key(lua_State *L, int idx, const char *where, size_t *len) {
  const char *s = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, len) : NULL;
  if (s == NULL || *len == 0 || *len > KV_MAX_KEY)
    luaL_error(L, "%s: key must be a string of 1 to %d bytes", where, KV_MAX_KEY);
  return s;
}

static void kv_nomem(lua_State *L) { luaL_error(L, "write: out of memory"); }

/* Encodes the list ops[field] of {space, key[, value]} entries. */
static void kv_encode_list(lua_State *L, store *s, int ops_idx, const char *field, int op) {
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
    const char *space = kv_check_space(L, -1, where, &slen);
    const char *key = "";
    if (op != KV_CLEAR) {
      lua_rawgeti(L, list, i);
      lua_rawgeti(L, -1, 2);
      key = kv_check_key(L, -1, where, &klen);
    }
    pending_kv pk;
    memset(&pk, 0, sizeof pk);
    pk.op = op;
    unsigned char k[KV_KEY_MAX];
    pk.key_len = kv_key(k, space, slen, key, klen);
    pk.key_off = s->scratch->bytes.len;
    if (buf_append(&s->scratch->bytes, k, pk.key_len)) kv_nomem(L);
    if (op == KV_CHECK || op == KV_PUT) {
      lua_rawgeti(L, -2, 3);
      if (lua_isnil(L, -1) && op == KV_PUT) luaL_error(L, "%s: value is nil (use deletes to remove a key)", where);
      pk.absent = lua_isnil(L, -1);
      pk.val_off = s->scratch->bytes.len;
      if (!pk.absent) codec_encode_at(L, -1, &s->scratch->bytes, field, (long long)i, "value");
      pk.val_len = s->scratch->bytes.len - pk.val_off;
      lua_pop(L, 1);
    }
    lua_settop(L, list);
    if (buf_append(&s->scratch->kv, &pk, sizeof pk)) kv_nomem(L);
  }
  lua_pop(L, 1);
}

void kv_encode_ops(lua_State *L, store *s, int ops_idx) {
  kv_encode_list(L, s, ops_idx, "checks", KV_CHECK);
  kv_encode_list(L, s, ops_idx, "clears", KV_CLEAR);
  kv_encode_list(L, s, ops_idx, "deletes", KV_DELETE);
  kv_encode_list(L, s, ops_idx, "puts", KV_PUT);
}

static int kv_clear(MDB_txn *txn, MDB_dbi dbi, const unsigned char *prefix, size_t plen) {
  MDB_cursor *c;
  int rc = mdb_cursor_open(txn, dbi, &c);
  if (rc) return rc;
  MDB_val k = { plen, (void *)prefix }, d;
  rc = mdb_cursor_get(c, &k, &d, MDB_SET_RANGE);
  while (rc == 0 && k.mv_size >= plen && memcmp(k.mv_data, prefix, plen) == 0) {
    if ((rc = mdb_cursor_del(c, 0))) break;
    rc = mdb_cursor_get(c, &k, &d, MDB_GET_CURRENT);
    if (rc == EINVAL) rc = mdb_cursor_get(c, &k, &d, MDB_NEXT);   /* deleted the last key */
  }
  mdb_cursor_close(c);
  return rc == MDB_NOTFOUND || rc == EINVAL ? 0 : rc;
}

int kv_apply_ops(store *s, MDB_txn *txn, size_t *failed) {
  MDB_dbi dbi = s->e->dbi[DB_KV];
  size_t n = s->scratch->kv.len / sizeof(pending_kv);
  const unsigned char *bytes = s->scratch->bytes.data;
  for (size_t i = 0; i < n; i++) {
    const pending_kv *pk = &PENDING_KV(s)[i];
    MDB_val k = { pk->key_len, (void *)(bytes + pk->key_off) }, d;
    int rc = 0;
    switch (pk->op) {
      case KV_CHECK:
        rc = mdb_get(txn, dbi, &k, &d);
        if (rc && rc != MDB_NOTFOUND) return rc;
        if (pk->absent ? rc == 0
                       : rc != 0 || d.mv_size != pk->val_len || memcmp(d.mv_data, bytes + pk->val_off, d.mv_size)) {
          *failed = i;
          return KV_CHECK_FAILED;
        }
        rc = 0;
        break;
      case KV_CLEAR: rc = kv_clear(txn, dbi, k.mv_data, k.mv_size); break;
      case KV_DELETE:
        rc = mdb_del(txn, dbi, &k, NULL);
        if (rc == MDB_NOTFOUND) rc = 0;
        break;
      default:
        d.mv_size = pk->val_len;
        d.mv_data = (void *)(bytes + pk->val_off);
        rc = mdb_put(txn, dbi, &k, &d, 0);
    }
    if (rc) return rc;
  }
  return 0;
}

void kv_push_check_failure(lua_State *L, store *s, size_t failed) {
  const pending_kv *pk = &PENDING_KV(s)[failed];
  const unsigned char *k = s->scratch->bytes.data + pk->key_off;
  size_t slen = k[0];
  lua_pushnil(L);
  lua_pushlstring(L, (const char *)k + 1, slen);
  lua_pushlstring(L, (const char *)k + 1 + slen, pk->key_len - 1 - slen);
  cerr_new(L, "check_failed", "write: the check of key '%s' in space '%s' failed", lua_tostring(L, -1),
           lua_tostring(L, -2));
  lua_insert(L, -3);
  lua_setfield(L, -3, "key");
  lua_setfield(L, -2, "space");
}

/* A read's value, copied out of LMDB into memory Lua owns, so an error
 * while decoding it leaks nothing. */
typedef struct kvread {
  buf value;
} kvread;

static int kvread_gc(lua_State *L) {
  kvread *r = luaL_checkudata(L, 1, KVREAD_MT);
  buf_free(&r->value);
  return 0;
}

/* store:kv_get(space, key) -> value | nil (absent) | nil, err */
static int kv_get(lua_State *L) {
  store *s = store_check(L, 1);
  size_t slen, klen;
  const char *space = kv_check_space(L, 2, "kv_get", &slen);
  const char *key = kv_check_key(L, 3, "kv_get", &klen);
  kvread *r = lua_newuserdatauv(L, sizeof *r, 0);
  memset(r, 0, sizeof *r);
  buf_init(&r->value);
  luaL_setmetatable(L, KVREAD_MT);
  unsigned char k[KV_KEY_MAX];
  MDB_val mk = { kv_key(k, space, slen, key, klen), k }, d;
  MDB_txn *txn;
  int rc = store_read_begin(s, &txn);
  if (rc) return cerr_mdb_result(L, rc, "kv_get");
  rc = mdb_get(txn, s->e->dbi[DB_KV], &mk, &d);
  if (rc == 0 && buf_append(&r->value, d.mv_data, d.mv_size)) rc = ENOMEM;
  store_read_end(s, txn);
  if (rc == MDB_NOTFOUND) { lua_pushnil(L); return 1; }
  if (rc) return cerr_mdb_result(L, rc, "kv_get");
  const char *why;
  if (!codec_decode(L, r->value.data, r->value.len, &why))
    return cerr_result(L, "corrupt", "kv_get: the value of '%s' does not decode: %s", key, why);
  return 1;
}

/* store:kv_count(space [, prefix]) -> number of keys */
static int kv_count(lua_State *L) {
  store *s = store_check(L, 1);
  size_t slen, plen = 0;
  const char *space = kv_check_space(L, 2, "kv_count", &slen);
  const char *prefix = "";
  if (!lua_isnoneornil(L, 3)) {
    prefix = luaL_checklstring(L, 3, &plen);
    if (plen > KV_MAX_KEY) luaL_argerror(L, 3, "prefix too long");
  }
  unsigned char k[KV_KEY_MAX];
  size_t klen = kv_key(k, space, slen, prefix, plen);
  MDB_txn *txn;
  int rc = store_read_begin(s, &txn);
  if (rc) return cerr_mdb_result(L, rc, "kv_count");
  MDB_cursor *c;
  lua_Integer n = 0;
  rc = mdb_cursor_open(txn, s->e->dbi[DB_KV], &c);
  if (!rc) {
    MDB_val mk = { klen, k }, d;
    for (rc = mdb_cursor_get(c, &mk, &d, MDB_SET_RANGE);
         rc == 0 && mk.mv_size >= klen && memcmp(mk.mv_data, k, klen) == 0;
         rc = mdb_cursor_get(c, &mk, &d, MDB_NEXT))
      n++;
    mdb_cursor_close(c);
    if (rc == 0 || rc == MDB_NOTFOUND) rc = 0;
  }
  store_read_end(s, txn);
  if (rc) return cerr_mdb_result(L, rc, "kv_count");
  lua_pushinteger(L, n);
  return 1;
}

/* store:kv_spaces() -> a list of the key-value spaces holding keys (order unspecified).
 * One seek per space: after a space's first key it seeks past every key of the space. */
static int kv_spaces(lua_State *L) {
  store *s = store_check(L, 1);
  buf names;                   /* u8 length | name, for each space */
  buf_init(&names);
  kvread *r = lua_newuserdatauv(L, sizeof *r, 0);   /* owns `names` if a push below raises */
  memset(r, 0, sizeof *r);
  luaL_setmetatable(L, KVREAD_MT);
  MDB_txn *txn;
  int rc = store_read_begin(s, &txn);
  if (rc) return cerr_mdb_result(L, rc, "kv_spaces");
  MDB_cursor *c;
  rc = mdb_cursor_open(txn, s->e->dbi[DB_KV], &c);
  if (!rc) {
    MDB_val k, d;
    unsigned char next[1 + KV_MAX_SPACE + 1];
    for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0;) {
      const unsigned char *key = k.mv_data;
      size_t slen = key[0];
      if (k.mv_size < 1 + slen || buf_append(&names, key, 1 + slen)) { rc = k.mv_size < 1 + slen ? MDB_CORRUPTED : ENOMEM; break; }
      /* Past every key of the space: its last byte that is not 0xff, plus one (or the next
       * length when the name is all 0xff). */
      memcpy(next, key, 1 + slen);
      size_t n = 1 + slen;
      while (n > 1 && next[n - 1] == 0xff) n--;
      if (n == 1) { next[0]++; n = 1; if (next[0] == 0) break; }
      else next[n - 1]++;
      MDB_val nk = { n, next };
      k = nk;
      rc = mdb_cursor_get(c, &k, &d, MDB_SET_RANGE);
    }
    mdb_cursor_close(c);
    if (rc == MDB_NOTFOUND) rc = 0;
  }
  store_read_end(s, txn);
  r->value = names;            /* freed by the userdata's __gc */
  if (rc) return cerr_mdb_result(L, rc, "kv_spaces");
  lua_createtable(L, 8, 0);
  lua_Integer i = 0;
  for (size_t at = 0; at < names.len; at += 1 + names.data[at]) {
    lua_pushlstring(L, (const char *)names.data + at + 1, names.data[at]);
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

static const luaL_Reg kv_methods[] = {
  { "kv_get", kv_get },
  { "kv_count", kv_count },
  { "kv_spaces", kv_spaces },
  { NULL, NULL }
};

void kv_register(lua_State *L) {
  luaL_setfuncs(L, kv_methods, 0);
  if (luaL_newmetatable(L, KVREAD_MT)) {
    lua_pushcfunction(L, kvread_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
}
