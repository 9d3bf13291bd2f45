/* libFuzzer target: a whole event record (csrc/common/record.c + csrc/common/codec.c).
 *
 * Each input is tried twice:
 *   - as is: record_parse must refuse it (almost always: the checksum) or
 *     accept it, never read outside it;
 *   - with its checksum recomputed (bytes 0..8 sealed over the rest), so the
 *     fuzzer gets past XXH3 and exercises the layout checks behind it.
 * A record that parses is then turned into what a read returns, as
 * csrc/lmdb/scan.c does: stream and type strings, the id's text form, meta and data
 * decoded with codec_decode, and codec_skip over both as csrc/lmdb/verify.c does.
 * codec_skip and codec_decode must agree on what is valid. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include "common/bytes.h"
#include "common/codec.h"
#include "common/record.h"
#include "common/uuid.h"

static lua_State *L;

typedef struct call { const unsigned char *p; size_t len; int ok; const char *why; } call;

static int decode_k(lua_State *L) {
  call *c = lua_touserdata(L, 1);
  lua_settop(L, 0);
  c->ok = codec_decode(L, c->p, c->len, &c->why);
  return c->ok ? 1 : 0;
}

static void decode_piece(const unsigned char *p, size_t len) {
  size_t off = 0;
  int skip_ok = codec_skip(p, len, &off) == 0 && off == len;
  call c = { p, len, 0, NULL };
  lua_pushcfunction(L, decode_k);
  lua_pushlightuserdata(L, &c);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    fprintf(stderr, "codec_decode raised: %s\n", lua_tostring(L, -1));
    abort();
  }
  /* verify (codec_skip) passing a value that read (codec_decode) then refuses
   * is tolerated only for map keys Lua cannot hold (nil, NaN, containers). */
  if (skip_ok && !c.ok && strcmp(c.why, "a map key that Lua cannot hold") != 0) {
    fprintf(stderr, "codec_skip accepts what codec_decode refuses: %s\n", c.why);
    abort();
  }
  if (!skip_ok && c.ok) { fprintf(stderr, "codec_decode accepts what codec_skip refuses\n"); abort(); }
  lua_settop(L, 0);
}

static void try_record(const unsigned char *rec, size_t len) {
  record_view v;
  const char *why = NULL;
  if (record_parse(rec, len, &v, &why) != 0) {
    if (why == NULL) abort();
    return;
  }
  /* Every piece must lie inside the record and the pieces must tile it. */
  const unsigned char *end = rec + len;
  if (v.stream != rec + RECORD_HEADER || v.type != v.stream + v.stream_len || v.meta != v.type + v.type_len ||
      v.data != v.meta + v.meta_len || v.data + v.data_len != end || v.id != rec + 32) {
    fprintf(stderr, "record_parse returned pieces outside the record\n");
    abort();
  }
  char id[UUID_TEXT_LEN];
  uuid_format(v.id, id);
  lua_pushlstring(L, (const char *)v.stream, v.stream_len);
  lua_pushlstring(L, (const char *)v.type, v.type_len);
  lua_pushlstring(L, id, UUID_TEXT_LEN);
  lua_settop(L, 0);
  decode_piece(v.meta, v.meta_len);
  decode_piece(v.data, v.data_len);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc; (void)argv;
  L = luaL_newstate();
  if (L == NULL) abort();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  try_record(data, size);
  if (size >= 8) {
    /* A heap copy of exactly `size` bytes, so ASan sees any overrun. */
    unsigned char *copy = malloc(size);
    if (copy == NULL) return 0;
    memcpy(copy, data, size);
    put_u64be(copy, record_checksum(copy, size));
    try_record(copy, size);
    free(copy);
  }
  return 0;
}
