/* Event tables for Lua, built from stored records (see event_table.h). */
#include <string.h>
#include <lauxlib.h>
#include "cerror.h"
#include "codec.h"
#include "event_table.h"
#include "record.h"
#include "seal.h"
#include "uuid.h"

static const char *const event_keys[] = {
  "position", "stream", "version", "type", "time", "id", "schema", "meta", "data"
};

void event_push_keys(lua_State *L) {
  for (int i = 0; i < EVENT_KEYS; i++) lua_pushstring(L, event_keys[i]);
}

unsigned event_fields_option(lua_State *L, int opts, const char *fn) {
  if (opts == 0) return EVENT_ALL_FIELDS;
  lua_getfield(L, opts, "fields");
  unsigned fields = EVENT_ALL_FIELDS;
  if (!lua_isnil(L, -1)) {
    if (!lua_istable(L, -1)) luaL_error(L, "%s: option 'fields' must be a list of event field names", fn);
    fields = 0;
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, -1, i);
      const char *name = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
      int key = 0;
      for (int k = 0; k < EVENT_KEYS; k++)
        if (strcmp(name, event_keys[k]) == 0) key = k + 1;
      if (key == 0)
        luaL_error(L, "%s: fields[%I] must be one of position, stream, version, type, time, id, schema, meta, data",
                   fn, i);
      fields |= EVENT_FIELD(key);
      lua_pop(L, 1);
    }
    if (fields == 0) luaL_error(L, "%s: option 'fields' must name at least one field", fn);
  }
  lua_pop(L, 1);
  return fields;
}

void event_cache_push(lua_State *L, event_cache *c) {
  lua_pushnil(L);
  c->last = lua_gettop(L);
  lua_pushnil(L);
  c->last_s[0] = c->last_s[1] = NULL;
  c->last_n[0] = c->last_n[1] = 0;
  codec_strings_push(L, &c->strings);
}

/* Pushes s[0..n) as a Lua string, reusing the last one of its kind (0 stream, 1 type)
 * when it holds the same bytes. */
static void event_push_cached(lua_State *L, event_cache *c, int which, const unsigned char *s, size_t n) {
  if (!c) {
    lua_pushlstring(L, (const char *)s, n);
    return;
  }
  if (c->last_s[which] && c->last_n[which] == n && memcmp(c->last_s[which], s, n) == 0) {
    lua_pushvalue(L, c->last + which);
    return;
  }
  c->last_s[which] = lua_pushlstring(L, (const char *)s, n);   /* alive while the slot holds it */
  c->last_n[which] = n;
  lua_pushvalue(L, -1);
  lua_replace(L, c->last + which);
}

static void event_push_value(lua_State *L, const unsigned char *p, size_t len, uint64_t pos, const char *field,
                             event_cache *cache) {
  const char *why;
  if (!codec_decode_cached(L, p, len, cache ? &cache->strings : NULL, &why)) {
    cerr_new(L, "corrupt", "event at position %I: %s does not decode: %s", (lua_Integer)pos, field, why);
    lua_pushinteger(L, (lua_Integer)pos);
    lua_setfield(L, -2, "position");
    lua_error(L);
  }
}

#define EVENT_KEY(L, key) lua_pushvalue(L, lua_upvalueindex(key))

/* Pushes field `key` of the record in `v` (meta: its decoded value, nil included). */
static void event_push_field(lua_State *L, const record_view *v, int key, uint64_t pos, event_cache *cache) {
  switch (key) {
  case EVENT_POSITION: lua_pushinteger(L, (lua_Integer)pos); break;
  case EVENT_STREAM: event_push_cached(L, cache, 0, v->stream, v->stream_len); break;
  case EVENT_VERSION: lua_pushinteger(L, (lua_Integer)v->version); break;
  case EVENT_TYPE:   /* types alternate: the short-string cache keeps several */
    if (cache && v->type_len > 0 && v->type_len <= CODEC_STRING_MAX)
      codec_push_short(L, &cache->strings, v->type, v->type_len);
    else event_push_cached(L, cache, 1, v->type, v->type_len);
    break;
  case EVENT_TIME: lua_pushinteger(L, v->time); break;
  case EVENT_ID: {
    char id[UUID_TEXT_LEN];
    uuid_format(v->id, id);
    lua_pushlstring(L, id, UUID_TEXT_LEN);
    break;
  }
  case EVENT_SCHEMA: lua_pushinteger(L, (lua_Integer)v->schema); break;
  case EVENT_META: event_push_value(L, v->meta, v->meta_len, pos, "meta", cache); break;
  default: event_push_value(L, v->data, v->data_len, pos, "data", cache); break;
  }
}

/* An envelope event_build took out of meta undecoded (for a chronicle.crypto revealer). */
typedef struct event_envelope {
  const unsigned char *subject, *box;
  size_t slen, boxlen;
} event_envelope;

/* The shortest meta that can hold an envelope: a map holding "$personal" = {s = <1 byte>}. */
#define EVENT_ENVELOPE_MIN 16

/* Pushes the record's meta. With `env` non-NULL, an envelope of chronicle's shape is kept out
 * of it undecoded and described in *env (env->subject non-NULL; meta nil when the envelope was
 * all of it). Returns 1 when the meta pushed (decoded whole) carries personal data. */
static int event_push_meta(lua_State *L, const record_view *v, uint64_t pos, event_cache *cache, event_envelope *env) {
  if (env) {
    const unsigned char *val;
    size_t vlen;
    const char *why;
    if (codec_decode_split(L, v->meta, v->meta_len, cache ? &cache->strings : NULL, EVENT_PERSONAL_KEY,
                           sizeof EVENT_PERSONAL_KEY - 1, &val, &vlen, &why)) {
      if (!val || codec_map_strings(val, vlen, "s", "c", &env->subject, &env->slen, &env->box, &env->boxlen))
        return 0;
      lua_pop(L, 1);                   /* not chronicle's shape: decoded as it is, below */
      env->subject = NULL;
    }                                  /* damaged: the decoding below raises */
  }
  event_push_value(L, v->meta, v->meta_len, pos, "meta", cache);
  int personal = 0;
  if (lua_type(L, -1) == LUA_TTABLE) {
    lua_pushliteral(L, EVENT_PERSONAL_KEY);
    personal = lua_rawget(L, -2) != LUA_TNIL && lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  return personal;
}

/* event_push; with the read's reveal at `reveal` (0: none), a chronicle.crypto revealer in *r
 * (looked up only for a meta long enough to hold an envelope) and `env` non-NULL, an envelope in
 * meta that has chronicle's shape is kept out of the table and described in *env, the table
 * sized for the fields the revealer adds. An event whose meta bytes hold the personal-data key
 * also gets what opening it reads whatever `fields` says (meta; and id unless the revealer opens
 * it from the record's bytes): *extra says which of those `fields` did not name. */
static int event_build(lua_State *L, const unsigned char *rec, size_t len, uint64_t pos, event_cache *cache,
                       unsigned fields, int reveal, event_revealer **r, event_envelope *env, record_view *v,
                       unsigned *extra) {
  int personal = 0;
  const char *why;
  unsigned asked = fields;
  if (record_layout(rec, len, v, &why) != 0) luaL_error(L, "record changed in memory: %s", why);
  if (v->meta_len == 1 && v->meta[0] == 0xc0) fields &= ~EVENT_FIELD(EVENT_META);   /* nil meta: no field */
  else if (reveal) {
    if (v->meta_len >= EVENT_ENVELOPE_MIN) *r = event_revealer_at(L, reveal);
    if ((fields & EVENT_REVEAL_FIELDS) != EVENT_REVEAL_FIELDS &&
        memmem(v->meta, v->meta_len, EVENT_PERSONAL_MSGPACK, sizeof EVENT_PERSONAL_MSGPACK - 1))
      fields |= *r && env ? EVENT_FIELD(EVENT_META) : EVENT_REVEAL_FIELDS;
  }
  if (!*r) env = NULL;
  int n = __builtin_popcount(fields);
  /* 8 fields fit a hash part of 8, 9 need 16; a sealed event's meta may carry an envelope,
   * whose subject and personal the revealer adds */
  lua_createtable(L, 0, env ? n + 2 : n);
  for (unsigned rest = fields; rest; rest &= rest - 1) {
    int key = __builtin_ctz(rest) + 1;
    EVENT_KEY(L, key);
    if (key == EVENT_META) personal = event_push_meta(L, v, pos, cache, env);
    else event_push_field(L, v, key, pos, cache);
    lua_rawset(L, -3);
  }
  if (personal && !(fields & EVENT_FIELD(EVENT_ID))) {   /* an envelope the revealer opens from the table */
    fields |= EVENT_FIELD(EVENT_ID);
    EVENT_KEY(L, EVENT_ID);
    event_push_field(L, v, EVENT_ID, pos, cache);
    lua_rawset(L, -3);
  }
  *extra = fields & ~asked;
  return personal;
}

int event_push(lua_State *L, const unsigned char *rec, size_t len, uint64_t pos, event_cache *cache, unsigned fields) {
  record_view v;
  event_revealer *r = NULL;
  unsigned extra;
  return event_build(L, rec, len, pos, cache, fields, 0, &r, NULL, &v, &extra);
}

int event_spread_option(lua_State *L, int opts, const char *fn, unsigned char order[EVENT_KEYS]) {
  lua_getfield(L, opts, "spread");
  int spread = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (!spread) return 0;
  if (lua_getfield(L, opts, "fields") != LUA_TTABLE)
    luaL_error(L, "%s: option 'spread' needs 'fields' (the values to pass, in order)", fn);
  lua_Integer n = (lua_Integer)lua_rawlen(L, -1);   /* names checked by event_fields_option */
  if (n > EVENT_KEYS) luaL_error(L, "%s: option 'spread' takes at most %d fields", fn, EVENT_KEYS);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    const char *name = lua_tostring(L, -1);
    for (int k = 0; k < EVENT_KEYS; k++)
      if (strcmp(name, event_keys[k]) == 0) order[i - 1] = (unsigned char)(k + 1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return (int)n;
}

void event_push_spread(lua_State *L, const unsigned char *rec, size_t len, uint64_t pos, event_cache *cache,
                       const unsigned char *order, int n) {
  record_view v;
  const char *why;
  if (record_layout(rec, len, &v, &why) != 0) luaL_error(L, "record changed in memory: %s", why);
  for (int i = 0; i < n; i++) event_push_field(L, &v, order[i], pos, cache);
}

/* Takes meta and id out of the event at the top when `fields` does not name them (they
 * were built for a reveal: see event_build). Needs the EVENT_KEYS upvalues. */
static void event_trim(lua_State *L, unsigned fields) {
  if (!(fields & EVENT_FIELD(EVENT_META))) {
    EVENT_KEY(L, EVENT_META);
    lua_pushnil(L);
    lua_rawset(L, -3);
  }
  if (!(fields & EVENT_FIELD(EVENT_ID))) {
    EVENT_KEY(L, EVENT_ID);
    lua_pushnil(L);
    lua_rawset(L, -3);
  }
}

int event_push_open(lua_State *L, const unsigned char *rec, size_t len, uint64_t pos, event_cache *cache,
                    unsigned fields, int reveal, int *revealed) {
  event_revealer *r = NULL;
  event_envelope env = { NULL, NULL, 0, 0 };
  record_view v;
  unsigned extra;
  int personal = event_build(L, rec, len, pos, cache, fields, reveal, &r, &env, &v, &extra);
  int ok = 1;
  if (env.subject) {
    *revealed = 1;
    ok = r->open(L, reveal, lua_gettop(L), env.subject, env.slen, env.box, env.boxlen, v.id,
                 cache ? &cache->strings : NULL);
  } else if (personal && reveal) {
    *revealed = 1;
    ok = event_reveal(L, reveal);
  }
  if (ok && extra) event_trim(L, fields);
  return ok;
}

int event_reveal(lua_State *L, int reveal) {
  event_revealer *r = event_revealer_at(L, reveal);
  if (r) return r->reveal(L, reveal, lua_gettop(L));
  lua_pushvalue(L, reveal);
  lua_pushvalue(L, -2);
  lua_call(L, 1, 2);
  if (lua_toboolean(L, -2)) {
    lua_pop(L, 2);
    return 1;
  }
  lua_remove(L, -2);
  return 0;
}

void event_reveal_end(lua_State *L, int reveal) {
  event_revealer *r = event_revealer_at(L, reveal);
  if (r) { r->end(L, reveal); return; }
  lua_pushvalue(L, reveal);
  lua_pushnil(L);
  lua_call(L, 1, 0);
}
