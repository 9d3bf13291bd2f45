/* Lua values <-> MessagePack (see codec.h and README). Encoding walks the
 * Lua value with msgpack-c's packer; decoding reads the untrusted bytes with
 * one bounds-checked header reader straight onto the Lua stack. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include "codec.h"

/* msgpack-c's packer is a template (msgpack/pack_template.h) that its own
 * pack.h instantiates around a write callback. Instantiated here around our
 * buffer instead, every token is appended inline: no call through a pointer
 * per token (batched appends measured 8% faster, bench/README.md). */
#include <msgpack/pack_define.h>
#include <msgpack/timestamp.h>
static inline int codec_put(buf *out, const void *p, size_t n) { return buf_append(out, p, n); }
#define msgpack_pack_inline_func(name) static inline int codec_pack ## name
#define msgpack_pack_user buf *
#define msgpack_pack_append_buffer(user, bytes, len) return codec_put(user, bytes, len)
#define msgpack_pack_ext codec_pack_ext     /* the template's timestamp packer calls it by this name */
#include <msgpack/pack_template.h>
#undef msgpack_pack_ext

/* ---- encoding ---- */

typedef struct codec_key {
  int type;                 /* LUA_TSTRING, LUA_TNUMBER (integer or float), LUA_TBOOLEAN */
  int is_int;
  lua_Integer i;
  double d;
  const char *s;
  size_t len;
} codec_key;

typedef struct codec_enc {
  lua_State *L;
  buf *out;
  const char *root;        /* the path's start: root[root_index].root_field */
  long long root_index;    /* < 0: none */
  const char *root_field;  /* NULL: none */
  int depth;
  codec_cap *cap;          /* NULL: no cap */
  const void *tables[CODEC_MAX_DEPTH];   /* tables being encoded: a repeat is a cycle */
  codec_key path[CODEC_MAX_DEPTH];       /* the key taken at each depth */
} codec_enc;

static int codec_is_identifier(const char *s, size_t len) {
  if (len == 0 || !(s[0] == '_' || (s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z'))) return 0;
  for (size_t i = 1; i < len; i++) {
    char c = s[i];
    if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) return 0;
  }
  return 1;
}

/* Raises "<path>: <what>", the path built from the keys taken so far. */
static void codec_fail(codec_enc *e, const char *what) {
  lua_State *L = e->L;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, e->root);
  if (e->root_index >= 0) {
    char tmp[32];
    snprintf(tmp, sizeof tmp, "[%lld]", e->root_index);
    luaL_addstring(&b, tmp);
  }
  if (e->root_field) {
    luaL_addchar(&b, '.');
    luaL_addstring(&b, e->root_field);
  }
  for (int d = 0; d < e->depth; d++) {
    const codec_key *k = &e->path[d];
    char tmp[64];
    if (k->type == LUA_TSTRING && codec_is_identifier(k->s, k->len)) {
      luaL_addchar(&b, '.');
      luaL_addlstring(&b, k->s, k->len);
      continue;
    }
    luaL_addchar(&b, '[');
    if (k->type == LUA_TSTRING) {
      luaL_addchar(&b, '"');
      luaL_addlstring(&b, k->s, k->len > 40 ? 40 : k->len);
      if (k->len > 40) luaL_addstring(&b, "...");
      luaL_addchar(&b, '"');
    } else if (k->type == LUA_TBOOLEAN) {
      luaL_addstring(&b, k->i ? "true" : "false");
    } else {
      if (k->is_int) snprintf(tmp, sizeof tmp, "%lld", (long long)k->i);
      else snprintf(tmp, sizeof tmp, "%.17g", k->d);
      luaL_addstring(&b, tmp);
    }
    luaL_addchar(&b, ']');
  }
  luaL_addstring(&b, ": ");
  luaL_addstring(&b, what);
  luaL_pushresult(&b);
  lua_error(L);
}

static void codec_nomem(codec_enc *e) { codec_fail(e, "out of memory"); }

/* Takes `n` bytes of cost from the cap, or stops the encoding. */
static inline void codec_cost(codec_enc *e, size_t n) {
  codec_cap *cap = e->cap;
  if (cap == NULL) return;
  if (n > cap->room) {
    cap->room = 0;
    cap->over = 1;
    codec_fail(e, cap->message);
  }
  cap->room -= n;
}

/* True when s[0..len) is valid UTF-8 (then it is stored as str, else as bin). Inlined into
 * both callers (codec_encode_bytes, codec_put_bytes): out of line it costs a call per string
 * (measured on erasure2, callgrind). */
static inline __attribute__((always_inline)) int codec_utf8_valid(const unsigned char *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    /* ASCII runs, eight bytes at a time. */
    while (i + 8 <= len) {
      uint64_t w;
      memcpy(&w, s + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= len) break;
    unsigned c = s[i];
    if (c < 0x80) { i++; continue; }
    size_t n;
    unsigned min;
    if ((c & 0xe0) == 0xc0) { n = 1; min = 0x80; c &= 0x1f; }
    else if ((c & 0xf0) == 0xe0) { n = 2; min = 0x800; c &= 0x0f; }
    else if ((c & 0xf8) == 0xf0) { n = 3; min = 0x10000; c &= 0x07; }
    else return 0;
    if (len - i <= n) return 0;
    for (size_t j = 1; j <= n; j++) {
      if ((s[i + j] & 0xc0) != 0x80) return 0;
      c = (c << 6) | (s[i + j] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return 0;
    i += n + 1;
  }
  return 1;
}

static void codec_encode_bytes(codec_enc *e, const char *s, size_t len) {
  int rc = codec_utf8_valid((const unsigned char *)s, len)
             ? codec_pack_str(e->out, len) || codec_pack_str_body(e->out, s, len)
             : codec_pack_bin(e->out, len) || codec_pack_bin_body(e->out, s, len);
  if (rc) codec_nomem(e);
}

static void codec_encode_value(codec_enc *e, int idx);

/* Records the key at idx as the current path element (the key stays on the
 * stack) and encodes it. String keys, by far the most common, take one type
 * check and one lua_tolstring. */
static void codec_encode_key(codec_enc *e, int idx) {
  codec_key *k = &e->path[e->depth - 1];
  lua_State *L = e->L;
  k->type = lua_type(L, idx);
  k->is_int = 0;
  switch (k->type) {
    case LUA_TSTRING:
      k->s = lua_tolstring(L, idx, &k->len);
      if (e->cap) codec_cost(e, CODEC_COST_ENTRY + CODEC_COST_VALUE + CODEC_COST_STRING + k->len);
      codec_encode_bytes(e, k->s, k->len);
      return;
    case LUA_TBOOLEAN:
      k->i = lua_toboolean(L, idx);
      if (e->cap) codec_cost(e, CODEC_COST_ENTRY);
      codec_encode_value(e, idx);
      return;
    case LUA_TNUMBER:
      k->is_int = lua_isinteger(L, idx);
      if (k->is_int) k->i = lua_tointeger(L, idx);
      else k->d = lua_tonumber(L, idx);
      if (!k->is_int && isinf(k->d)) codec_fail(e, "cannot store an infinite key");
      if (e->cap) codec_cost(e, CODEC_COST_ENTRY);
      codec_encode_value(e, idx);
      return;
    default: {
      char what[64];
      snprintf(what, sizeof what, "cannot store a %s as a key", luaL_typename(L, idx));
      e->depth--;                 /* the path names the table, not a key */
      codec_fail(e, what);
    }
  }
}

/* Encodes the table at idx as a map in one pass: the entries go first,
 * behind a one-byte header, which is widened afterwards (moving the
 * entries) only when the map has more than 15 of them. */
static void codec_encode_map(codec_enc *e, int idx) {
  lua_State *L = e->L;
  buf *out = e->out;
  size_t header = out->len;
  if (buf_append(out, "\x80", 1)) codec_nomem(e);
  lua_Unsigned count = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    codec_encode_key(e, -2);
    codec_encode_value(e, -1);
    lua_pop(L, 1);
    count++;
  }
  if (count > UINT32_MAX) codec_fail(e, "cannot store a table of more than 2^32-1 entries");
  if (count <= 15) {
    out->data[header] = (unsigned char)(0x80 | count);
    return;
  }
  size_t width = count <= 0xffff ? 3 : 5;           /* map16 or map32 */
  if (buf_reserve(out, width - 1)) codec_nomem(e);
  unsigned char *h = out->data + header;
  memmove(h + width, h + 1, out->len - header - 1);
  out->len += width - 1;
  if (width == 3) {
    h[0] = 0xde;
    h[1] = (unsigned char)(count >> 8);
    h[2] = (unsigned char)count;
  } else {
    h[0] = 0xdf;
    h[1] = (unsigned char)(count >> 24);
    h[2] = (unsigned char)(count >> 16);
    h[3] = (unsigned char)(count >> 8);
    h[4] = (unsigned char)count;
  }
}

static void codec_encode_table(codec_enc *e, int idx) {
  lua_State *L = e->L;
  const void *self = lua_topointer(L, idx);
  for (int d = 0; d < e->depth; d++)
    if (e->tables[d] == self) codec_fail(e, "cannot store a cycle (a table that contains itself)");
  if (e->depth >= CODEC_MAX_DEPTH) {
    char what[64];
    snprintf(what, sizeof what, "cannot store tables nested deeper than %d levels", CODEC_MAX_DEPTH);
    codec_fail(e, what);
  }
  luaL_checkstack(L, 4, "nesting too deep");
  idx = lua_absindex(L, idx);
  lua_Unsigned n = lua_rawlen(L, idx);
  if (n == 0) {
    e->tables[e->depth++] = self;
    codec_encode_map(e, idx);
    e->depth--;
    return;
  }
  /* A border n > 0: an array only if the keys are exactly 1..n. */
  lua_Unsigned count = 0;
  int is_array = 1;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    count++;
    lua_Integer k;
    if (!lua_isinteger(L, -1) || (k = lua_tointeger(L, -1)) < 1 || (lua_Unsigned)k > n) is_array = 0;
  }
  e->tables[e->depth++] = self;
  if (is_array && count == n) {
    if (n > UINT32_MAX) codec_fail(e, "cannot store a table of more than 2^32-1 entries");
    if (codec_pack_array(e->out, (size_t)n)) codec_nomem(e);
    codec_key *k = &e->path[e->depth - 1];
    for (lua_Unsigned i = 1; i <= n; i++) {
      k->type = LUA_TNUMBER;
      k->is_int = 1;
      k->i = (lua_Integer)i;
      lua_rawgeti(L, idx, (lua_Integer)i);
      codec_encode_value(e, -1);
      lua_pop(L, 1);
    }
  } else {
    codec_encode_map(e, idx);
  }
  e->depth--;
}

static void codec_encode_value(codec_enc *e, int idx) {
  lua_State *L = e->L;
  int rc = 0;
  int type = lua_type(L, idx);
  if (e->cap)
    codec_cost(e, CODEC_COST_VALUE + (type == LUA_TTABLE ? CODEC_COST_TABLE
                                      : type == LUA_TSTRING ? CODEC_COST_STRING + lua_rawlen(L, idx) : 0));
  switch (type) {
    case LUA_TNIL: rc = codec_pack_nil(e->out); break;
    case LUA_TBOOLEAN: rc = lua_toboolean(L, idx) ? codec_pack_true(e->out) : codec_pack_false(e->out); break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) rc = codec_pack_int64(e->out, (int64_t)lua_tointeger(L, idx));
      else rc = codec_pack_double(e->out, (double)lua_tonumber(L, idx));  /* floats stay floats */
      break;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      codec_encode_bytes(e, s, len);
      break;
    }
    case LUA_TTABLE: codec_encode_table(e, idx); break;
    default: {
      char what[64];
      snprintf(what, sizeof what, "cannot store a %s", luaL_typename(L, idx));
      codec_fail(e, what);
    }
  }
  if (rc) codec_nomem(e);
}

void codec_encode(lua_State *L, int idx, buf *out, const char *root) {
  codec_encode_at(L, idx, out, root, -1, NULL);
}

/* Sets up an encoder at the root of a value (root, index and field name it in messages). Its
 * tables and path are filled as it descends, so they are left as they are: this runs for every
 * event's meta and data. */
static inline void codec_enc_init(codec_enc *e, lua_State *L, buf *out, const char *root, long long index,
                                  const char *field, codec_cap *cap) {
  e->L = L;
  e->out = out;
  e->root = root;
  e->root_index = index;
  e->root_field = field;
  e->depth = 0;
  e->cap = cap;
}

void codec_encode_at(lua_State *L, int idx, buf *out, const char *root, long long index, const char *field) {
  codec_enc e;
  codec_enc_init(&e, L, out, root, index, field, NULL);
  codec_encode_value(&e, lua_absindex(L, idx));
}

void codec_encode_capped(lua_State *L, int idx, buf *out, const char *root, codec_cap *cap) {
  codec_enc e;
  codec_enc_init(&e, L, out, root, -1, NULL, cap);
  codec_encode_value(&e, lua_absindex(L, idx));
}

int codec_put_bytes(buf *out, const char *s, size_t len) {
  return codec_utf8_valid((const unsigned char *)s, len)
           ? codec_pack_str(out, len) || codec_pack_str_body(out, s, len)
           : codec_pack_bin(out, len) || codec_pack_bin_body(out, s, len);
}

int codec_put_map(buf *out, size_t count) { return codec_pack_map(out, count); }

void codec_encode_map_with(lua_State *L, int idx, buf *out, const char *root, long long index, const char *field,
                           size_t extra) {
  codec_enc e;
  codec_enc_init(&e, L, out, root, index, field, NULL);
  idx = lua_absindex(L, idx);
  size_t count = 0;
  if (lua_istable(L, idx)) {
    lua_pushnil(L);
    while (lua_next(L, idx)) { lua_pop(L, 1); count++; }
  }
  if (count + extra > UINT32_MAX) codec_fail(&e, "cannot store a table of more than 2^32-1 entries");
  if (codec_pack_map(out, count + extra)) codec_nomem(&e);
  if (count == 0) return;
  luaL_checkstack(L, 4, "nesting too deep");
  e.tables[e.depth++] = lua_topointer(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    codec_encode_key(&e, -2);
    codec_encode_value(&e, -1);
    lua_pop(L, 1);
  }
}

/* ---- reading one item ----
 * Every reader of untrusted MessagePack below (skip, decode, compare) goes
 * through codec_read_item: one header, every length checked against the
 * bytes left. A container's items are read by the caller. */

enum { ITEM_NIL, ITEM_BOOL, ITEM_INT, ITEM_UINT, ITEM_FLOAT, ITEM_BYTES, ITEM_ARRAY, ITEM_MAP };

typedef struct codec_item {
  int kind;
  int64_t i;                 /* ITEM_BOOL, ITEM_INT */
  uint64_t u;                /* ITEM_UINT: beyond Lua's integers */
  double f;                  /* ITEM_FLOAT */
  const unsigned char *bytes;
  uint64_t n;                /* bytes length, or items of a container (pairs for a map) */
} codec_item;

static uint64_t codec_be(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++) v = (v << 8) | p[i];
  return v;
}

/* Reads the header at *p (and a string's bytes); returns 0, or -1 with *why set. */
static int codec_read_item(const unsigned char **p, const unsigned char *end, codec_item *it, const char **why) {
  if (*p >= end) { *why = "truncated"; return -1; }
  unsigned c = *(*p)++;
  size_t left = (size_t)(end - *p);
  if (c <= 0x7f) { it->kind = ITEM_INT; it->i = c; return 0; }
  if (c >= 0xe0) { it->kind = ITEM_INT; it->i = (int8_t)c; return 0; }
  if (c >= 0x90 && c <= 0x9f) { it->kind = ITEM_ARRAY; it->n = c & 0x0f; return 0; }
  if (c >= 0x80 && c <= 0x8f) { it->kind = ITEM_MAP; it->n = c & 0x0f; return 0; }
  int w = 0;                 /* width of the length that follows */
  if (c >= 0xa0 && c <= 0xbf) {
    it->kind = ITEM_BYTES;
    it->n = c & 0x1f;
  } else {
    switch (c) {
      case 0xc0: it->kind = ITEM_NIL; return 0;
      case 0xc2: case 0xc3: it->kind = ITEM_BOOL; it->i = c == 0xc3; return 0;
      case 0xca: case 0xcb: {
        w = c == 0xca ? 4 : 8;
        if (left < (size_t)w) { *why = "truncated float"; return -1; }
        uint64_t bits = codec_be(*p, w);
        *p += w;
        it->kind = ITEM_FLOAT;
        if (w == 4) { union { uint32_t u; float f; } v = { (uint32_t)bits }; it->f = v.f; }
        else { union { uint64_t u; double f; } v = { bits }; it->f = v.f; }
        return 0;
      }
      case 0xcc: case 0xcd: case 0xce: case 0xcf:
        w = 1 << (c - 0xcc);
        if (left < (size_t)w) { *why = "truncated integer"; return -1; }
        it->u = codec_be(*p, w);
        *p += w;
        if (it->u > (uint64_t)INT64_MAX) it->kind = ITEM_UINT;
        else { it->kind = ITEM_INT; it->i = (int64_t)it->u; }
        return 0;
      case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        w = 1 << (c - 0xd0);
        if (left < (size_t)w) { *why = "truncated integer"; return -1; }
        uint64_t u = codec_be(*p, w);
        *p += w;
        it->kind = ITEM_INT;
        it->i = w == 1 ? (int8_t)u : w == 2 ? (int16_t)u : w == 4 ? (int32_t)u : (int64_t)u;
        return 0;
      }
      case 0xc4: case 0xd9: w = 1; it->kind = ITEM_BYTES; break;
      case 0xc5: case 0xda: w = 2; it->kind = ITEM_BYTES; break;
      case 0xc6: case 0xdb: w = 4; it->kind = ITEM_BYTES; break;
      case 0xdc: w = 2; it->kind = ITEM_ARRAY; break;
      case 0xdd: w = 4; it->kind = ITEM_ARRAY; break;
      case 0xde: w = 2; it->kind = ITEM_MAP; break;
      case 0xdf: w = 4; it->kind = ITEM_MAP; break;
      default: *why = "an unsupported MessagePack type"; return -1;   /* ext types, 0xc1 */
    }
    if (left < (size_t)w) { *why = "truncated length"; return -1; }
    it->n = codec_be(*p, w);
    *p += w;
    if (it->kind != ITEM_BYTES) return 0;
  }
  if ((uint64_t)(end - *p) < it->n) { *why = "truncated string"; return -1; }
  it->bytes = *p;
  *p += it->n;
  return 0;
}

/* ---- checking untrusted bytes ---- */

int codec_skip(const unsigned char *p, size_t len, size_t *off) {
  uint64_t pending[CODEC_MAX_DEPTH + 1];
  int depth = 0;
  pending[0] = 1;
  const unsigned char *q = p + *off, *end = p + len;
  const char *why;
  while (depth >= 0) {
    if (pending[depth] == 0) { depth--; continue; }
    pending[depth]--;
    codec_item it;
    if (codec_read_item(&q, end, &it, &why)) return -1;
    if (it.kind != ITEM_ARRAY && it.kind != ITEM_MAP) continue;
    uint64_t items = it.kind == ITEM_MAP ? 2 * it.n : it.n;
    if (items > (uint64_t)(end - q)) return -1;        /* every item needs a byte at least */
    if (depth + 1 > CODEC_MAX_DEPTH) return -1;
    if (items) pending[++depth] = items;
  }
  *off = (size_t)(q - p);
  return 0;
}

/* ---- decoding ----
 * One pass, straight onto the Lua stack: no tree, no second walk
 * (msgpack-c's unpacker builds an object tree first and, for hostile
 * container sizes, needs codec_skip before it; this reader needs neither,
 * and measured faster in bench/fold.lua). */

typedef struct codec_dec {
  lua_State *L;
  const unsigned char *p, *end;
  const char *why;
  int depth;
  codec_strings *strings;  /* a short-string cache (codec_decode_cached), or NULL */
  int kind;                /* the ITEM_ kind of the last value pushed (codec_dec_map's key check) */
  double f;                /* its value when a float */
} codec_dec;

/* Pushes s[0..n), taken from the cache table at `cache` when its slot for these bytes
 * holds the same string. Map keys and short values (a stream name in the data) repeat
 * from one event to the next: a slot lookup and a memcmp cost half of what Lua's
 * interning of a new short string does (hashing every byte, then walking its bucket). */
void codec_push_short(lua_State *L, codec_strings *c, const unsigned char *s, size_t n) {
  unsigned h = (unsigned)n * 31u + s[0] * 7u + s[n - 1] * 131u + s[n / 2];
  unsigned slot = h % CODEC_STRING_SLOTS;
  if (c->n[slot] == n && c->s[slot] && memcmp(c->s[slot], s, n) == 0) {
    lua_rawgeti(L, c->table, (lua_Integer)slot + 1);
    return;
  }
  c->s[slot] = lua_pushlstring(L, (const char *)s, n);   /* Lua's copy, alive while the slot holds it */
  c->n[slot] = n;
  lua_pushvalue(L, -1);
  lua_rawseti(L, c->table, (lua_Integer)slot + 1);
}

void codec_strings_push(lua_State *L, codec_strings *c) {
  lua_createtable(L, CODEC_STRING_SLOTS, 0);
  c->table = lua_gettop(L);
  memset(c->s, 0, sizeof c->s);
  memset(c->n, 0, sizeof c->n);
}

void codec_push_string(lua_State *L, codec_strings *strings, const unsigned char *s, size_t n) {
  if (strings && n > 0 && n <= CODEC_STRING_MAX) codec_push_short(L, strings, s, n);
  else lua_pushlstring(L, (const char *)s, n);
}

static int codec_dec_fail(codec_dec *d, const char *why) {
  d->why = why;
  return 0;
}

static int codec_dec_value(codec_dec *d);

static int codec_dec_array(codec_dec *d, uint64_t n) {
  if (n > (uint64_t)(d->end - d->p)) return codec_dec_fail(d, "array longer than its bytes");
  if (++d->depth > CODEC_MAX_DEPTH) return codec_dec_fail(d, "nested too deep");
  lua_State *L = d->L;
  if (!lua_checkstack(L, 3)) return codec_dec_fail(d, "nested too deep");
  lua_createtable(L, (int)n, 0);
  for (uint64_t i = 1; i <= n; i++) {
    if (!codec_dec_value(d)) return 0;
    lua_rawseti(L, -2, (lua_Integer)i);
  }
  d->depth--;
  return 1;
}

static int codec_dec_map(codec_dec *d, uint64_t n) {
  if (n > (uint64_t)(d->end - d->p) / 2) return codec_dec_fail(d, "map longer than its bytes");
  if (++d->depth > CODEC_MAX_DEPTH) return codec_dec_fail(d, "nested too deep");
  lua_State *L = d->L;
  if (!lua_checkstack(L, 4)) return codec_dec_fail(d, "nested too deep");
  lua_createtable(L, 0, (int)n);
  for (uint64_t i = 0; i < n; i++) {
    if (!codec_dec_value(d)) return 0;
    int kind = d->kind;   /* known from the bytes: no need to ask Lua what the key is */
    if (kind == ITEM_NIL || kind == ITEM_ARRAY || kind == ITEM_MAP || (kind == ITEM_FLOAT && isnan(d->f)))
      return codec_dec_fail(d, "a map key that Lua cannot hold");
    if (!codec_dec_value(d)) return 0;
    lua_rawset(L, -3);
  }
  d->depth--;
  return 1;
}

static int codec_dec_value(codec_dec *d) {
  lua_State *L = d->L;
  if (d->p < d->end) {       /* the usual short forms (fixint, fixstr) without codec_read_item */
    unsigned c = *d->p;
    if (c <= 0x7f) {
      d->p++;
      d->kind = ITEM_INT;
      lua_pushinteger(L, (lua_Integer)c);
      return 1;
    }
    size_t n = c & 0x1f;
    if ((c & 0xe0) == 0xa0 && n <= (size_t)(d->end - d->p) - 1) {
      const unsigned char *bytes = d->p + 1;
      d->p = bytes + n;
      d->kind = ITEM_BYTES;
      if (d->strings && n > 0) codec_push_short(L, d->strings, bytes, n);   /* n <= 31 <= CODEC_STRING_MAX */
      else lua_pushlstring(L, (const char *)bytes, n);
      return 1;
    }
  }
  codec_item it;
  if (codec_read_item(&d->p, d->end, &it, &d->why)) return 0;
  d->kind = it.kind;
  switch (it.kind) {
    case ITEM_NIL: lua_pushnil(L); return 1;
    case ITEM_BOOL: lua_pushboolean(L, (int)it.i); return 1;
    case ITEM_INT: lua_pushinteger(L, (lua_Integer)it.i); return 1;
    case ITEM_UINT: lua_pushnumber(L, (lua_Number)it.u); return 1;   /* beyond Lua's integers */
    case ITEM_FLOAT: d->f = it.f; lua_pushnumber(L, (lua_Number)it.f); return 1;
    case ITEM_BYTES:
      if (d->strings && it.n > 0 && it.n <= CODEC_STRING_MAX) codec_push_short(L, d->strings, it.bytes, (size_t)it.n);
      else lua_pushlstring(L, (const char *)it.bytes, (size_t)it.n);
      return 1;
    case ITEM_ARRAY: return codec_dec_array(d, it.n);
    default: return codec_dec_map(d, it.n);
  }
}

int codec_decode(lua_State *L, const unsigned char *p, size_t len, const char **why) {
  return codec_decode_cached(L, p, len, NULL, why);
}

int codec_decode_cached(lua_State *L, const unsigned char *p, size_t len, codec_strings *strings, const char **why) {
  codec_dec d = { L, p, p + len, NULL, 0, strings, 0, 0 };
  int top = lua_gettop(L);
  if (!codec_dec_value(&d)) {
    lua_settop(L, top);
    *why = d.why;
    return 0;
  }
  if (d.p != d.end) {
    lua_settop(L, top);
    *why = "trailing bytes after the value";
    return 0;
  }
  return 1;
}

/* ---- comparing encoded values ----
 * Equality as Lua sees the decoded values: maps compare in any order (a
 * table's key order differs from one process to the next), str and bin with
 * the same bytes are equal, integers compare by value whatever their width,
 * integers and floats differ. Used where an append compares an event with
 * the one already stored (idempotent retries). */

static int codec_equal_at(const unsigned char **a, const unsigned char *aend, const unsigned char **b,
                          const unsigned char *bend, int depth);

/* Skips one whole value at *p. */
static int codec_skip_at(const unsigned char **p, const unsigned char *end) {
  size_t off = 0;
  if (codec_skip(*p, (size_t)(end - *p), &off) != 0) return -1;
  *p += off;
  return 0;
}

/* ---- a map with one entry kept back ---- */

int codec_decode_split(lua_State *L, const unsigned char *p, size_t len, codec_strings *strings, const char *key,
                       size_t keylen, const unsigned char **val, size_t *vlen, const char **why) {
  *val = NULL;
  *vlen = 0;
  const unsigned char *q = p, *end = p + len;
  codec_item it;
  if (codec_read_item(&q, end, &it, why)) return 0;
  if (it.kind != ITEM_MAP) return codec_decode_cached(L, p, len, strings, why);
  codec_dec d = { L, q, end, NULL, 1, strings, 0, 0 };
  int top = lua_gettop(L);
  uint64_t n = it.n;
  if (n > (uint64_t)(end - q) / 2) { *why = "map longer than its bytes"; return 0; }
  if (!lua_checkstack(L, 4)) { *why = "nested too deep"; return 0; }
  lua_createtable(L, 0, (int)(n > 0 ? n - 1 : 0));
  uint64_t kept = 0;
  for (uint64_t i = 0; i < n; i++) {
    const unsigned char *k = d.p;
    if (codec_read_item(&k, end, &it, &d.why)) goto fail;
    if (!*val && it.kind == ITEM_BYTES && it.n == keylen && memcmp(it.bytes, key, keylen) == 0) {
      const unsigned char *v = k;
      d.p = k;
      if (codec_skip_at(&d.p, end)) { d.why = "malformed value"; goto fail; }
      *val = v;
      *vlen = (size_t)(d.p - v);
      continue;
    }
    if (!codec_dec_value(&d)) goto fail;
    int kind = d.kind;   /* as codec_dec_map checks its keys */
    if (kind == ITEM_NIL || kind == ITEM_ARRAY || kind == ITEM_MAP || (kind == ITEM_FLOAT && isnan(d.f))) {
      d.why = "a map key that Lua cannot hold";
      goto fail;
    }
    if (!codec_dec_value(&d)) goto fail;
    lua_rawset(L, -3);
    kept++;
  }
  if (d.p != end) { d.why = "trailing bytes after the value"; goto fail; }
  if (*val && kept == 0) {          /* nothing but the entry kept back */
    lua_pop(L, 1);
    lua_pushnil(L);
  }
  return 1;
fail:
  lua_settop(L, top);
  *val = NULL;
  *why = d.why;
  return 0;
}

int codec_map_strings(const unsigned char *p, size_t len, const char *k1, const char *k2,
                      const unsigned char **v1, size_t *l1, const unsigned char **v2, size_t *l2) {
  const unsigned char *q = p, *end = p + len;
  const char *why;
  codec_item it;
  *v1 = *v2 = NULL;
  *l1 = *l2 = 0;
  if (codec_read_item(&q, end, &it, &why) || it.kind != ITEM_MAP || it.n < 1 || it.n > 2) return 0;
  uint64_t n = it.n;
  size_t n1 = strlen(k1), n2 = strlen(k2);
  for (uint64_t i = 0; i < n; i++) {
    codec_item k, v;
    if (codec_read_item(&q, end, &k, &why) || k.kind != ITEM_BYTES) return 0;
    if (codec_read_item(&q, end, &v, &why) || v.kind != ITEM_BYTES) return 0;
    if (k.n == n1 && memcmp(k.bytes, k1, n1) == 0 && !*v1) { *v1 = v.bytes; *l1 = (size_t)v.n; }
    else if (k.n == n2 && memcmp(k.bytes, k2, n2) == 0 && !*v2) { *v2 = v.bytes; *l2 = (size_t)v.n; }
    else return 0;
  }
  return q == end && *v1 != NULL;
}

/* Small maps are compared by looking each key up in the other map; larger
 * ones by sorting both maps' entries by key once, so that comparing two maps
 * of n keys costs n log n whatever their order. */
#define CODEC_EQUAL_SCAN_MAX 8

typedef struct codec_entry {
  codec_item key;
  const unsigned char *val;
} codec_entry;

/* Keys of one kind class sort together; integers and floats are different keys. */
static int codec_key_class(int kind) {
  switch (kind) {
    case ITEM_NIL: return 0;
    case ITEM_BOOL: return 1;
    case ITEM_INT: case ITEM_UINT: return 2;
    case ITEM_FLOAT: return 3;
    default: return 4;           /* ITEM_BYTES: str and bin alike */
  }
}

/* A total order on scalar keys in which keys codec_equal_at finds equal compare 0. */
static int codec_key_cmp(const void *pa, const void *pb) {
  const codec_item *x = &((const codec_entry *)pa)->key, *y = &((const codec_entry *)pb)->key;
  int cx = codec_key_class(x->kind), cy = codec_key_class(y->kind);
  if (cx != cy) return cx < cy ? -1 : 1;
  switch (cx) {
    case 0: return 0;
    case 1: return (x->i > y->i) - (x->i < y->i);
    case 2:
      if (x->kind != y->kind) return x->kind == ITEM_UINT ? 1 : -1;   /* a UINT is above every INT */
      if (x->kind == ITEM_UINT) return (x->u > y->u) - (x->u < y->u);
      return (x->i > y->i) - (x->i < y->i);
    case 3: {
      int xn = x->f != x->f, yn = y->f != y->f;          /* NaNs last, equal to each other */
      if (xn || yn) return xn - yn;
      return (x->f > y->f) - (x->f < y->f);
    }
    default: {
      size_t n = x->n < y->n ? (size_t)x->n : (size_t)y->n;
      int c = n ? memcmp(x->bytes, y->bytes, n) : 0;
      if (c) return c;
      return (x->n > y->n) - (x->n < y->n);
    }
  }
}

/* Reads the n entries of the map at *p into out (scalar keys only); returns
 * 0, 1 when a key is a container (the caller falls back), or -1 if malformed. */
static int codec_map_entries(const unsigned char **p, const unsigned char *end, uint64_t n, codec_entry *out) {
  const char *why;
  for (uint64_t i = 0; i < n; i++) {
    if (codec_read_item(p, end, &out[i].key, &why)) return -1;
    if (out[i].key.kind == ITEM_ARRAY || out[i].key.kind == ITEM_MAP) return 1;
    out[i].val = *p;
    if (codec_skip_at(p, end)) return -1;
  }
  return 0;
}

/* Looks every key of map a up in map b (n entries each, headers read). */
static int codec_equal_maps_scan(const unsigned char **a, const unsigned char *aend, const unsigned char **b,
                                 const unsigned char *bend, uint64_t n, int depth) {
  const unsigned char *bmap = *b;
  for (uint64_t i = 0; i < n; i++) {
    const unsigned char *akey = *a;
    if (codec_skip_at(a, aend)) return 0;
    const unsigned char *aval = *a;
    if (codec_skip_at(a, aend)) return 0;
    /* Find the same key among the other map's entries. */
    const unsigned char *q = bmap;
    int found = 0;
    for (uint64_t j = 0; j < n; j++) {
      const unsigned char *k1 = akey, *k2 = q, *bval = q, *next;
      int same_key = codec_equal_at(&k1, aend, &k2, bend, depth + 1);
      if (codec_skip_at(&bval, bend)) return 0;
      next = bval;
      if (codec_skip_at(&next, bend)) return 0;
      if (same_key) {
        const unsigned char *v1 = aval;
        if (!codec_equal_at(&v1, aend, &bval, bend, depth + 1)) return 0;
        found = 1;
        break;
      }
      q = next;
    }
    if (!found) return 0;
  }
  *b = bmap;
  for (uint64_t j = 0; j < 2 * n; j++)
    if (codec_skip_at(b, bend)) return 0;
  return 1;
}

static int codec_equal_maps(const unsigned char **a, const unsigned char *aend, const unsigned char **b,
                            const unsigned char *bend, uint64_t n, int depth) {
  /* Every entry takes two bytes at least: a count beyond that is malformed. */
  if (n > (uint64_t)(aend - *a) / 2 || n > (uint64_t)(bend - *b) / 2) return 0;
  if (n <= CODEC_EQUAL_SCAN_MAX) return codec_equal_maps_scan(a, aend, b, bend, n, depth);
  codec_entry *ea = malloc((size_t)n * 2 * sizeof *ea);
  if (ea == NULL) return codec_equal_maps_scan(a, aend, b, bend, n, depth);
  codec_entry *eb = ea + n;
  const unsigned char *a0 = *a, *b0 = *b;
  int ra = codec_map_entries(a, aend, n, ea);
  int rb = ra == 0 ? codec_map_entries(b, bend, n, eb) : 0;
  int same = 0;
  if (ra < 0 || rb < 0) {
    same = 0;
  } else if (ra > 0 || rb > 0) {             /* a container as a key: not made by this codec */
    *a = a0;
    *b = b0;
    same = codec_equal_maps_scan(a, aend, b, bend, n, depth);
  } else {
    qsort(ea, (size_t)n, sizeof *ea, codec_key_cmp);
    qsort(eb, (size_t)n, sizeof *eb, codec_key_cmp);
    same = 1;
    for (uint64_t i = 0; i < n && same; i++) {
      const unsigned char *va = ea[i].val, *vb = eb[i].val;
      same = codec_key_cmp(&ea[i], &eb[i]) == 0 && codec_equal_at(&va, aend, &vb, bend, depth + 1);
    }
  }
  free(ea);
  return same;
}

static int codec_equal_at(const unsigned char **a, const unsigned char *aend, const unsigned char **b,
                          const unsigned char *bend, int depth) {
  codec_item x, y;
  const char *why;
  if (depth > CODEC_MAX_DEPTH || codec_read_item(a, aend, &x, &why) || codec_read_item(b, bend, &y, &why)) return 0;
  if (x.kind != y.kind) return 0;
  switch (x.kind) {
    case ITEM_NIL: return 1;
    case ITEM_BOOL: case ITEM_INT: return x.i == y.i;
    case ITEM_UINT: return x.u == y.u;
    case ITEM_FLOAT: return x.f == y.f || (x.f != x.f && y.f != y.f);
    case ITEM_BYTES: return x.n == y.n && memcmp(x.bytes, y.bytes, x.n) == 0;
    case ITEM_ARRAY:
      if (x.n != y.n) return 0;
      for (uint64_t i = 0; i < x.n; i++)
        if (!codec_equal_at(a, aend, b, bend, depth + 1)) return 0;
      return 1;
    default:
      if (x.n != y.n) return 0;
      return codec_equal_maps(a, aend, b, bend, x.n, depth);
  }
}

int codec_equal(const unsigned char *a, size_t alen, const unsigned char *b, size_t blen) {
  if (alen == blen && memcmp(a, b, alen) == 0) return 1;
  const unsigned char *pa = a, *pb = b;
  if (!codec_equal_at(&pa, a + alen, &pb, b + blen, 0)) return 0;
  return pa == a + alen && pb == b + blen;
}
