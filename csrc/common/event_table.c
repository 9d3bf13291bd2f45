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

/* Pushes s[0..n) as a Lua string, reusing the one in stack slot `slot` when it holds
 * the same bytes. */
static void event_push_cached(lua_State *L, int slot, const unsigned char *s, size_t n) {
  size_t clen;
  const char *c = slot ? lua_tolstring(L, slot, &clen) : NULL;
  if (c && clen == n && memcmp(c, s, n) == 0) {
    lua_pushvalue(L, slot);
    return;
  }
  lua_pushlstring(L, (const char *)s, n);
  if (slot) {
    lua_pushvalue(L, -1);
    lua_replace(L, slot);
  }
}

static void event_push_value(lua_State *L, const unsigned char *p, size_t len, uint64_t pos, const char *field,
                             int strings) {
  const char *why;
  if (!codec_decode_cached(L, p, len, strings, &why)) {
    cerr_new(L, "corrupt", "event at position %I: %s does not decode: %s", (lua_Integer)pos, field, why);
    lua_pushinteger(L, (lua_Integer)pos);
    lua_setfield(L, -2, "position");
    lua_error(L);
  }
}

#define EVENT_KEY(L, key) lua_pushvalue(L, lua_upvalueindex(key))

/* An envelope event_build took out of meta undecoded (for a chronicle.crypto revealer). */
typedef struct event_envelope {
  const unsigned char *subject, *box;
  size_t slen, boxlen;
} event_envelope;

/* The shortest meta that can hold an envelope: a map holding "$personal" = {s = <1 byte>}. */
#define EVENT_ENVELOPE_MIN 16

/* event_push; with `env` non-NULL and the read's reveal at `reveal` a chronicle.crypto revealer
 * (looked up only for a meta long enough to hold an envelope: *r), an envelope in meta that has
 * chronicle's shape is kept out of the table and described in *env (env->subject non-NULL), the
 * event table sized for the fields the revealer adds. */
static int event_build(lua_State *L, const unsigned char *rec, size_t len, uint64_t pos, int cache, unsigned fields,
                       int reveal, event_revealer **r, event_envelope *env, record_view *v) {
  int personal = 0;
  const char *why;
  if (record_layout(rec, len, v, &why) != 0) luaL_error(L, "record changed in memory: %s", why);
  if (v->meta_len == 1 && v->meta[0] == 0xc0) fields &= ~EVENT_FIELD(EVENT_META);   /* nil meta: no field */
  if (reveal && (fields & EVENT_FIELD(EVENT_META)) && v->meta_len >= EVENT_ENVELOPE_MIN)
    *r = event_revealer_at(L, reveal);
  if (!*r) env = NULL;
  int n = __builtin_popcount(fields);
  /* 8 fields fit a hash part of 8, 9 need 16; a sealed event's meta may carry an envelope,
   * whose subject and personal the revealer adds */
  lua_createtable(L, 0, env ? n + 2 : n);
  if (fields & EVENT_FIELD(EVENT_POSITION)) {
    EVENT_KEY(L, EVENT_POSITION);
    lua_pushinteger(L, (lua_Integer)pos);
    lua_rawset(L, -3);
  }
  if (fields & EVENT_FIELD(EVENT_STREAM)) {
    EVENT_KEY(L, EVENT_STREAM);
    event_push_cached(L, cache, v->stream, v->stream_len);
    lua_rawset(L, -3);
  }
  if (fields & EVENT_FIELD(EVENT_VERSION)) {
    EVENT_KEY(L, EVENT_VERSION);
    lua_pushinteger(L, (lua_Integer)v->version);
    lua_rawset(L, -3);
  }
  if (fields & EVENT_FIELD(EVENT_TYPE)) {
    EVENT_KEY(L, EVENT_TYPE);
    event_push_cached(L, cache ? cache + 1 : 0, v->type, v->type_len);
    lua_rawset(L, -3);
  }
  if (fields & EVENT_FIELD(EVENT_TIME)) {
    EVENT_KEY(L, EVENT_TIME);
    lua_pushinteger(L, v->time);
    lua_rawset(L, -3);
  }
  if (fields & EVENT_FIELD(EVENT_ID)) {
    char id[UUID_TEXT_LEN];
    uuid_format(v->id, id);
    EVENT_KEY(L, EVENT_ID);
    lua_pushlstring(L, id, UUID_TEXT_LEN);
    lua_rawset(L, -3);
  }
  if (fields & EVENT_FIELD(EVENT_SCHEMA)) {
    EVENT_KEY(L, EVENT_SCHEMA);
    lua_pushinteger(L, (lua_Integer)v->schema);
    lua_rawset(L, -3);
  }
  if (fields & EVENT_FIELD(EVENT_META)) {
    EVENT_KEY(L, EVENT_META);
    int strings = cache ? cache + 2 : 0;
    int decoded = 0;
    if (env) {
      const unsigned char *val;
      size_t vlen;
      if (codec_decode_split(L, v->meta, v->meta_len, strings, EVENT_PERSONAL_KEY, sizeof EVENT_PERSONAL_KEY - 1,
                             &val, &vlen, &why)) {
        decoded = 1;
        if (val && !codec_map_strings(val, vlen, "s", "c", &env->subject, &env->slen, &env->box, &env->boxlen)) {
          lua_pop(L, 1);               /* not chronicle's shape: decoded as it is, below */
          env->subject = NULL;
          decoded = 0;
        }
      }                                /* damaged: the decoding below raises */
    }
    if (!decoded) {
      event_push_value(L, v->meta, v->meta_len, pos, "meta", strings);
      if (lua_type(L, -1) == LUA_TTABLE) {
        lua_pushliteral(L, EVENT_PERSONAL_KEY);
        personal = lua_rawget(L, -2) != LUA_TNIL && lua_toboolean(L, -1);
        lua_pop(L, 1);
      }
    }
    if (lua_isnil(L, -1)) lua_pop(L, 2);             /* the envelope was all of meta */
    else lua_rawset(L, -3);
  }
  if (fields & EVENT_FIELD(EVENT_DATA)) {
    EVENT_KEY(L, EVENT_DATA);
    event_push_value(L, v->data, v->data_len, pos, "data", cache ? cache + 2 : 0);
    lua_rawset(L, -3);
  }
  return personal;
}

int event_push(lua_State *L, const unsigned char *rec, size_t len, uint64_t pos, int cache, unsigned fields) {
  record_view v;
  event_revealer *r = NULL;
  return event_build(L, rec, len, pos, cache, fields, 0, &r, NULL, &v);
}

int event_push_open(lua_State *L, const unsigned char *rec, size_t len, uint64_t pos, int cache, unsigned fields,
                    int reveal, int *revealed) {
  event_revealer *r = NULL;
  event_envelope env = { NULL, NULL, 0, 0 };
  record_view v;
  int personal = event_build(L, rec, len, pos, cache, fields, reveal, &r, &env, &v);
  if (env.subject) {
    *revealed = 1;
    return r->open(L, reveal, lua_gettop(L), env.subject, env.slen, env.box, env.boxlen, v.id, cache ? cache + 2 : 0);
  }
  if (personal && reveal) {
    *revealed = 1;
    return event_reveal(L, reveal);
  }
  return 1;
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
