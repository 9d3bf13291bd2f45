/* The value codec: Lua values <-> MessagePack. Integers and floats stay
 * apart, strings are binary-safe (valid UTF-8 goes out as str, anything else
 * as bin), tables with keys 1..n are arrays and other tables are maps. */
#ifndef CHRONICLE_CODEC_H
#define CHRONICLE_CODEC_H

#include <lua.h>
#include "buf.h"
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

/* Deepest nesting of tables that can be stored or read back: 32 levels,
 * where msgpack-c's own unpacker stops (MSGPACK_EMBED_STACK_SIZE), so that
 * other readers built on it can read what chronicle writes. */
#define CODEC_MAX_DEPTH 32

/* Appends the encoding of the value at `idx` to `out`. Misuse (a function, a
 * cycle, an infinite key, too deep) raises a Lua error naming the path from
 * `root` ("data.items[3]: cannot store a function"); `out` must be owned by
 * something that frees it when that error unwinds. */
void codec_encode(lua_State *L, int idx, buf *out, const char *root);
/* The same, with the path's start built only on error: root[index].field
 * (index < 0 and field NULL leave those parts out). */
void codec_encode_at(lua_State *L, int idx, buf *out, const char *root, long long index, const char *field);

/* Appends s[0..len) as a string value (str when valid UTF-8, else bin, as codec_encode
 * does), or a map header of `count` entries. Return 0, or -1 when out of memory. */
int codec_put_bytes(buf *out, const char *s, size_t len);
int codec_put_map(buf *out, size_t count);
/* Encodes the table at `idx` (or nil: no entries) as a map, always a map even when its keys
 * are 1..n, whose header counts `extra` more entries that the caller appends after it.
 * Raises as codec_encode_at does. */
void codec_encode_map_with(lua_State *L, int idx, buf *out, const char *root, long long index, const char *field,
                           size_t extra);

/* A cap on what encoded values will take once decoded into a Lua state: each
 * value counts CODEC_COST_VALUE bytes, each table CODEC_COST_TABLE more, each
 * map entry CODEC_COST_ENTRY more, each string its length and
 * CODEC_COST_STRING more (about what Lua allocates for them). A table
 * referenced twice counts twice, as it is copied twice. */
#define CODEC_COST_VALUE 16
#define CODEC_COST_TABLE 64
#define CODEC_COST_ENTRY 32
#define CODEC_COST_STRING 32
typedef struct codec_cap {
  size_t room;               /* bytes left; each encoding takes its cost from it */
  int over;                  /* set when an encoding stopped at the cap */
  const char *message;       /* the error text (after the value's path) when it does */
} codec_cap;

/* codec_encode, counting the value's cost against cap: raises "<path>:
 * <cap->message>" (and sets cap->over) before the cost passes cap->room, so
 * `out` never grows much past it, whatever the value shares. */
void codec_encode_capped(lua_State *L, int idx, buf *out, const char *root, codec_cap *cap);

/* Pushes the value encoded in p[0..len). Returns 1, or 0 with nothing pushed
 * and *why set when the bytes are malformed, truncated, too deep or have
 * trailing garbage. Never reads outside p[0..len) and allocates nothing that
 * a Lua error could leak (it may raise only Lua's own memory error). */
int codec_decode(lua_State *L, const unsigned char *p, size_t len, const char **why);

/* A cache of short strings for codec_decode_cached, kept for a whole scan: `table` is the
 * (absolute) stack index of a table whose array slots 1..CODEC_STRING_SLOTS hold recent
 * strings of 1 to CODEC_STRING_MAX bytes and keep them alive; s[i], n[i] are the bytes of
 * slot i + 1 (NULL: empty), so that a lookup compares bytes without calling into Lua.
 * codec_strings_push makes the table and clears the slots. */
#define CODEC_STRING_SLOTS 64
#define CODEC_STRING_MAX 40
typedef struct codec_strings {
  int table;
  const char *s[CODEC_STRING_SLOTS];
  size_t n[CODEC_STRING_SLOTS];
} codec_strings;
void codec_strings_push(lua_State *L, codec_strings *c);
/* Pushes s[0..n) (1 <= n <= CODEC_STRING_MAX) through the cache `c`. */
void codec_push_short(lua_State *L, codec_strings *c, const unsigned char *s, size_t n);

/* codec_decode with a cache of short strings (`strings`, NULL: codec_decode). */
int codec_decode_cached(lua_State *L, const unsigned char *p, size_t len, codec_strings *strings, const char **why);

/* codec_decode_cached of a map, keeping back its entry whose key is the string
 * key[0..keylen): pushes the other entries as a table (nil when that entry was the only one)
 * and points *val, *vlen at the entry's encoded value (NULL when the map has none). Any value
 * that is not a map decodes as codec_decode_cached does, with *val NULL. */
int codec_decode_split(lua_State *L, const unsigned char *p, size_t len, codec_strings *strings, const char *key,
                       size_t keylen, const unsigned char **val, size_t *vlen, const char **why);

/* True when p[0..len) is a map of one or two entries whose keys are the strings k1 (required)
 * and k2, both with string values: *v1, *l1 and *v2, *l2 point at them (*v2 NULL when absent). */
int codec_map_strings(const unsigned char *p, size_t len, const char *k1, const char *k2,
                      const unsigned char **v1, size_t *l1, const unsigned char **v2, size_t *l2);

/* Pushes s[0..n) as a string, through the short-string cache `strings` (NULL: none). */
void codec_push_string(lua_State *L, codec_strings *strings, const unsigned char *s, size_t n);

/* True when two encoded values decode to equal Lua values (maps in any order). */
int codec_equal(const unsigned char *a, size_t alen, const unsigned char *b, size_t blen);

/* Skips one encoded value starting at p[*off]; returns 0 or -1 if malformed. */
int codec_skip(const unsigned char *p, size_t len, size_t *off);

#pragma GCC visibility pop
#endif
