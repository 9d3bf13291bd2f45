/* The arguments of an append, checked and encoded (see append_input.h). */
#include <stdio.h>
#include <string.h>
#include <lauxlib.h>
#include "append_input.h"
#include "codec.h"
#include "record.h"
#include "refusal.h"
#include "uuid.h"

static void append_nomem(lua_State *L) { luaL_error(L, "append: out of memory"); }

static const char *const event_fields[] = { "type", "data", "meta", "id", "schema", "time", NULL };
/* The same names are the first upvalues of the calling C function (append_input_push_upvalues).
 * `personal` and `subject` follow them: fields only of a write that seals (ops.seal). */
enum { F_TYPE = 1, F_DATA, F_META, F_ID, F_SCHEMA, F_TIME, F_COUNT = F_TIME, F_PERSONAL, F_SUBJECT,
       F_UPVALUES = F_SUBJECT };

/* Raises for the first field of events[i] that is not an event field. */
static void append_unknown_field(lua_State *L, int ev, const char *where, lua_Integer i, int sealing) {
  lua_pushnil(L);
  while (lua_next(L, ev)) {
    lua_pop(L, 1);
    int known = 0;
    if (lua_type(L, -1) == LUA_TSTRING) {
      for (int f = 0; event_fields[f]; f++)
        if (strcmp(lua_tostring(L, -1), event_fields[f]) == 0) known = 1;
      if (sealing && (strcmp(lua_tostring(L, -1), "personal") == 0 || strcmp(lua_tostring(L, -1), "subject") == 0))
        known = 1;
    }
    if (!known)
      luaL_error(L, "%s: events[%I] has an unknown field %s (allowed: type, data, meta, id, schema, time)",
                 where, i, lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : luaL_typename(L, -1));
  }
}

/* Checks and encodes events[i] (the table on top of the stack). */
static void append_encode_event(lua_State *L, const append_input *in, const char *where, lua_Integer i,
                                size_t stream_len, unsigned long long ms) {
  int ev = lua_gettop(L);
  if (!lua_istable(L, ev))
    luaL_error(L, "%s: events[%I] must be a table, got %s", where, i, luaL_typename(L, ev));
  /* One pass over the event's keys puts each field's value in its own stack
   * slot (fields are compared by identity with the interned names). */
  int slots = lua_gettop(L);
  event_sealer *sealer = in->sealer;
  int nfields = sealer ? F_UPVALUES : F_COUNT;
  luaL_checkstack(L, F_UPVALUES + 3, "append");
  for (int f = 1; f <= nfields; f++) lua_pushnil(L);
  lua_pushnil(L);
  while (lua_next(L, ev)) {
    int f = 1;
    while (f <= nfields && !lua_rawequal(L, -2, lua_upvalueindex(f))) f++;
    if (f > nfields) {
      lua_pop(L, 1);
      append_unknown_field(L, ev, where, i, sealer != NULL);
    }
    lua_replace(L, slots + f);
  }
  int sealed = sealer && !(lua_isnil(L, slots + F_PERSONAL) && lua_isnil(L, slots + F_SUBJECT));
  pending_event pe;
  memset(&pe, 0, sizeof pe);
  buf *bytes = in->bytes;

  lua_pushvalue(L, slots + F_TYPE);
  size_t tlen;
  const char *type = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &tlen) : NULL;
  if (type == NULL || tlen == 0 || tlen > RECORD_MAX_TYPE)
    luaL_error(L, "%s: events[%I].type must be a string of 1 to %d bytes", where, i, RECORD_MAX_TYPE);
  pe.type_off = bytes->len;
  pe.type_len = tlen;
  if (buf_append(bytes, type, tlen)) append_nomem(L);
  lua_pop(L, 1);

  lua_pushvalue(L, slots + F_ID);
  if (lua_isnil(L, -1)) {
    if (uuid_v7_at(pe.id, ms) != 0) luaL_error(L, "%s: no randomness available for an event id", where);
  } else {
    size_t idlen;
    const char *id = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &idlen) : NULL;
    if (id == NULL || uuid_parse(id, idlen, pe.id) != 0)
      luaL_error(L, "%s: events[%I].id must be a UUID string like "
                    "'0190b6c8-2f1e-7a3b-9c4d-5e6f708192a3'", where, i);
    pe.has_id = 1;
  }
  lua_pop(L, 1);

  lua_pushvalue(L, slots + F_SCHEMA);
  pe.schema = 1;
  if (!lua_isnil(L, -1)) {
    int ok;
    lua_Integer v = lua_tointegerx(L, -1, &ok);
    if (!ok || lua_type(L, -1) != LUA_TNUMBER || v < 1 || v > 65535)
      luaL_error(L, "%s: events[%I].schema must be an integer from 1 to 65535", where, i);
    pe.schema = (unsigned)v;
  }
  lua_pop(L, 1);

  lua_pushvalue(L, slots + F_TIME);
  if (!lua_isnil(L, -1)) {
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
      luaL_error(L, "%s: events[%I].time must be an integer >= 0 (ns since the epoch)", where, i);
    pe.time = lua_tointeger(L, -1);
    pe.has_time = 1;
  }
  lua_pop(L, 1);

  pe.meta_off = bytes->len;
  if (sealed)   /* personal data sealed straight into the record's meta (common/seal.h) */
    sealer->seal_meta(L, in->seal_idx, slots + F_META, slots + F_SUBJECT, slots + F_PERSONAL, pe.id, bytes,
                      (long long)i);
  else
    codec_encode_at(L, slots + F_META, bytes, "events", (long long)i, "meta");
  pe.meta_len = bytes->len - pe.meta_off;

  lua_pushvalue(L, slots + F_DATA);
  pe.data_off = bytes->len;
  codec_encode_at(L, -1, bytes, "events", (long long)i, "data");
  pe.data_len = bytes->len - pe.data_off;
  lua_pop(L, 1);

  size_t size = RECORD_HEADER + stream_len + pe.type_len + pe.meta_len + pe.data_len;
  if (size > in->max_event_size)
    luaL_error(L, "%s: events[%I] is %I bytes stored, over max_event_size (%I)", where, i,
               (lua_Integer)size, (lua_Integer)in->max_event_size);
  if (buf_append(in->events, &pe, sizeof pe)) append_nomem(L);
  lua_settop(L, ev);
}

void append_input_stream(lua_State *L, const append_input *in, const char *where, int name_idx,
                         int events_idx, int expected_idx) {
  pending_stream ps;
  memset(&ps, 0, sizeof ps);
  size_t len;
  const char *name = lua_type(L, name_idx) == LUA_TSTRING ? lua_tolstring(L, name_idx, &len) : NULL;
  if (name == NULL || len == 0 || len > RECORD_MAX_STREAM)
    luaL_error(L, "%s: stream must be a string of 1 to %d bytes", where, RECORD_MAX_STREAM);
  /* The category is the name up to its first '-': it must not be empty. */
  if (name[0] == '-')
    luaL_error(L, "%s: stream name '%s' starts with '-' (a stream's category is its name up to the first '-', "
               "and must not be empty)", where, name);
  ps.expected = refusal_check_expected(L, expected_idx, where, &ps.expected_version);
  if (!lua_istable(L, events_idx))
    luaL_error(L, "%s: events must be a list of event tables, got %s", where, luaL_typename(L, events_idx));
  lua_Integer n = (lua_Integer)lua_rawlen(L, events_idx);
  if (n == 0)
    luaL_error(L, "%s: events must be a non-empty list of events (wrap a single event in { })", where);
  ps.name_off = in->bytes->len;
  ps.name_len = len;
  if (buf_append(in->bytes, name, len)) append_nomem(L);
  ps.first_event = in->events->len / sizeof(pending_event);
  ps.n_events = (size_t)n;
  unsigned long long ms = uuid_now_ms();     /* one clock reading for the new ids */
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, events_idx, i);
    append_encode_event(L, in, where, i, len, ms);
    lua_pop(L, 1);
  }
  if (buf_append(in->streams, &ps, sizeof ps)) append_nomem(L);
}

size_t append_input_list(lua_State *L, const append_input *in, int idx, const char *fn, int allow_empty) {
  static const char *const entry_fields[] = { "stream", "events", "expected", NULL };
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
  if (n == 0 && !allow_empty)
    luaL_error(L, "%s: expects a non-empty list of {stream=, events=, expected=}", fn);
  int top = lua_gettop(L);
  for (lua_Integer i = 1; i <= n; i++) {
    char where[48];
    snprintf(where, sizeof where, "%s[%lld]", fn, (long long)i);
    if (lua_rawgeti(L, idx, i) != LUA_TTABLE) luaL_error(L, "%s: must be a table", where);
    int entry = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, entry)) {
      lua_pop(L, 1);
      int known = 0;
      for (int f = 0; entry_fields[f] && lua_type(L, -1) == LUA_TSTRING; f++)
        if (strcmp(lua_tostring(L, -1), entry_fields[f]) == 0) known = 1;
      if (!known) luaL_error(L, "%s: unknown field %s (allowed: stream, events, expected)", where,
                             lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : luaL_typename(L, -1));
    }
    lua_getfield(L, entry, "stream");
    lua_getfield(L, entry, "events");
    lua_getfield(L, entry, "expected");
    append_input_stream(L, in, where, entry + 1, entry + 2, entry + 3);
    lua_settop(L, top);
  }
  return (size_t)n;
}

int append_input_push_upvalues(lua_State *L) {
  luaL_checkstack(L, F_UPVALUES, "append");
  for (int f = 0; f < F_COUNT; f++) lua_pushstring(L, event_fields[f]);
  lua_pushliteral(L, "personal");
  lua_pushliteral(L, "subject");
  return F_UPVALUES;
}

