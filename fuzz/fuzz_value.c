/* libFuzzer target: the value decoder (csrc/common/codec.c) on arbitrary bytes.
 *
 * 1. codec_decode must either push one value or refuse with a reason; it must
 *    never read outside the input, crash, leak or trip UBSan.
 * 2. codec_skip (what verify() uses) and codec_decode (what reads use) are two
 *    readers: they must agree, except that codec_skip does not look at map keys
 *    (a nil, NaN or container key decodes to nothing Lua can hold).
 * 3. Round trip: a value that decodes is encoded again with codec_encode and
 *    decoded again; both Lua values must be identical (integers stay integers,
 *    -0.0 stays -0.0, NaN equals NaN, same keys, same strings).
 * 4. codec_equal (idempotent appends) must call two encodings of identical
 *    values equal, whatever their map order; on arbitrary bytes (the input cut
 *    in two) it must stay in bounds and finish.
 *
 * The only encode refusal tolerated is an infinite float map key, which the
 * decoder accepts (another writer may have stored one) and the encoder refuses
 * on purpose (see docs/RELIABILITY.md). Anything else is a finding: abort(). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include "common/codec.h"

static lua_State *L;

typedef struct call { const uint8_t *p; size_t len; int ok; const char *why; } call;

/* Decodes under pcall: luaL_checkstack and allocation may raise. */
static int decode_k(lua_State *L) {
  call *c = lua_touserdata(L, 1);
  lua_settop(L, 0);
  c->ok = codec_decode(L, c->p, c->len, &c->why);
  return c->ok ? 1 : 0;
}

typedef struct enc { buf out; } enc;

/* encode_k(value, enc*) */
static int encode_k(lua_State *L) {
  enc *e = lua_touserdata(L, 2);
  codec_encode(L, 1, &e->out, "value");
  return 0;
}

/* 1 when a and b (absolute indices) hold identical Lua values. */
static int identical(lua_State *L, int a, int b, int depth) {
  if (depth > 64) return 0;
  int t = lua_type(L, a);
  if (t != lua_type(L, b)) return 0;
  switch (t) {
    case LUA_TNIL: return 1;
    case LUA_TBOOLEAN: return lua_toboolean(L, a) == lua_toboolean(L, b);
    case LUA_TNUMBER: {
      if (lua_isinteger(L, a) != lua_isinteger(L, b)) return 0;
      if (lua_isinteger(L, a)) return lua_tointeger(L, a) == lua_tointeger(L, b);
      double x = lua_tonumber(L, a), y = lua_tonumber(L, b);
      if (isnan(x) || isnan(y)) return isnan(x) && isnan(y);
      return x == y && signbit(x) == signbit(y);
    }
    case LUA_TSTRING: {
      size_t la, lb;
      const char *sa = lua_tolstring(L, a, &la), *sb = lua_tolstring(L, b, &lb);
      return la == lb && memcmp(sa, sb, la) == 0;
    }
    case LUA_TTABLE: {
      luaL_checkstack(L, 6, "compare");
      size_t na = 0, nb = 0;
      lua_pushnil(L);
      while (lua_next(L, a)) {
        na++;
        lua_pushvalue(L, -2);
        lua_rawget(L, b);
        int same = identical(L, lua_absindex(L, -2), lua_absindex(L, -1), depth + 1);
        lua_pop(L, 2);
        if (!same) { lua_pop(L, 1); return 0; }
      }
      lua_pushnil(L);
      while (lua_next(L, b)) { nb++; lua_pop(L, 1); }
      return na == nb;
    }
    default: return 0;
  }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc; (void)argv;
  L = luaL_newstate();
  if (L == NULL) abort();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_settop(L, 0);
  if (size > 1) {
    size_t cut = 1 + data[0] % (size - 1);
    (void)codec_equal(data + 1, cut - 1, data + cut, size - cut);
  }
  size_t skipped = 0;
  int skip_ok = codec_skip(data, size, &skipped) == 0 && skipped == size;
  call c = { data, size, 0, NULL };
  lua_pushcfunction(L, decode_k);
  lua_pushlightuserdata(L, &c);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    /* Only a memory error may escape the decoder. */
    fprintf(stderr, "codec_decode raised: %s\n", lua_tostring(L, -1));
    abort();
  }
  if (c.ok != skip_ok && !(skip_ok && c.why && strcmp(c.why, "a map key that Lua cannot hold") == 0)) {
    fprintf(stderr, "codec_skip %s what codec_decode %s (%s)\n", skip_ok ? "accepts" : "refuses",
            c.ok ? "accepts" : "refuses", c.ok ? "" : c.why);
    abort();
  }
  if (!c.ok) {
    if (c.why == NULL || c.why[0] == '\0') { fprintf(stderr, "refusal without a reason\n"); abort(); }
    lua_settop(L, 0);
    return 0;
  }
  /* stack: [1] = v1 */
  enc e = { { NULL, 0, 0 } };
  lua_pushcfunction(L, encode_k);
  lua_pushvalue(L, 1);
  lua_pushlightuserdata(L, &e);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    size_t mlen = 0;
    const char *msg = lua_tolstring(L, -1, &mlen);
    static const char inf_key[] = "cannot store an infinite key";
    if (msg == NULL || memmem(msg, mlen, inf_key, sizeof inf_key - 1) == NULL) {
      fprintf(stderr, "a decoded value does not encode again: ");
      for (size_t i = 0; msg && i < mlen; i++)   /* the path may hold any byte */
        fputc(msg[i] >= 32 && msg[i] < 127 ? msg[i] : '?', stderr);
      fputc('\n', stderr);
      abort();
    }
    buf_free(&e.out);
    lua_settop(L, 0);
    return 0;
  }
  call c2 = { e.out.data, e.out.len, 0, NULL };
  lua_pushcfunction(L, decode_k);
  lua_pushlightuserdata(L, &c2);
  int rc = lua_pcall(L, 1, 1, 0);
  if (rc != LUA_OK || !c2.ok) {
    fprintf(stderr, "re-encoded value does not decode: %s\n", rc != LUA_OK ? lua_tostring(L, -1) : c2.why);
    abort();
  }
  /* stack: [1] = v1, [2] = v2 */
  if (!identical(L, 1, 2, 0)) { fprintf(stderr, "round trip changed the value\n"); abort(); }
  /* v2 is a new table built in the order of e.out: its own encoding may order maps differently */
  enc e2 = { { NULL, 0, 0 } };
  lua_pushcfunction(L, encode_k);
  lua_pushvalue(L, 2);
  lua_pushlightuserdata(L, &e2);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) { fprintf(stderr, "v2 does not encode\n"); abort(); }
  if (!codec_equal(e.out.data, e.out.len, e2.out.data, e2.out.len) ||
      !codec_equal(e2.out.data, e2.out.len, e.out.data, e.out.len)) {
    fprintf(stderr, "codec_equal calls two encodings of identical values different\n");
    abort();
  }
  buf_free(&e2.out);
  /* Encoding is deterministic for the same Lua value only up to table order,
   * so bytes are not compared; the encoding must still be canonical enough to
   * be re-read with the same length check. */
  size_t off = 0;
  if (codec_skip(e.out.data, e.out.len, &off) != 0 || off != e.out.len) {
    fprintf(stderr, "codec_skip disagrees with codec_decode\n");
    abort();
  }
  buf_free(&e.out);
  lua_settop(L, 0);
  return 0;
}
