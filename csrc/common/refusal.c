/* An append's `expected` and its refusals: see refusal.h. */
#include <stdio.h>
#include <string.h>
#include <lauxlib.h>
#include "cerror.h"
#include "record.h"
#include "refusal.h"
#include "uuid.h"

static const char *const expect_names[] = { "any", "no_stream", "exists", NULL };
static const char *const replay_what[] = { "", "", "", "stream", "type", "data", "meta", "", "" };

int refusal_check_expected(lua_State *L, int idx, const char *where, uint64_t *version) {
  switch (lua_type(L, idx)) {
    case LUA_TNIL: case LUA_TNONE:
      return EXPECT_ANY;
    case LUA_TSTRING: {
      const char *name = lua_tostring(L, idx);
      for (int i = 0; expect_names[i]; i++)
        if (strcmp(name, expect_names[i]) == 0) return i;
      break;
    }
    case LUA_TNUMBER: {
      int ok;
      lua_Integer v = lua_tointegerx(L, idx, &ok);
      if (ok && v >= 0) {
        *version = (uint64_t)v;
        return EXPECT_VERSION;
      }
      break;
    }
  }
  if (lua_type(L, idx) == LUA_TSTRING)
    luaL_error(L, "%s: expected must be chronicle.ANY, NO_STREAM, EXISTS or a version >= 0 "
               "(got string '%s')", where, lua_tostring(L, idx));
  return luaL_error(L, "%s: expected must be chronicle.ANY, NO_STREAM, EXISTS or a version >= 0 (got %s)",
                    where, lua_type(L, idx) == LUA_TNUMBER ? lua_tostring(L, idx) : luaL_typename(L, idx));
}

static void refusal_push_conflict(lua_State *L, const refusal *r, const char *name) {
  char want[48], got[48];
  if (r->expected == EXPECT_VERSION)
    snprintf(want, sizeof want, "version %llu", (unsigned long long)r->expected_version);
  else
    snprintf(want, sizeof want, "%s", r->expected == EXPECT_NO_STREAM ? "no stream" : "an existing stream");
  if (r->exists) snprintf(got, sizeof got, "is at version %llu", (unsigned long long)(r->actual_count - 1));
  else snprintf(got, sizeof got, "does not exist");
  int err;
  if (r->replay == REPLAY_ORDER)
    err = cerr_new(L, "conflict", "stream '%s' %s: the events of this append are stored in it, "
                   "but not one after the other in this order", name, got);
  else if (r->replay == REPLAY_PLACE)
    err = cerr_new(L, "conflict", "stream '%s' %s, expected %s: the events of this append are "
                   "already stored in it from version %I on", name, got, want,
                   (lua_Integer)r->replay_version);
  else
    err = cerr_new(L, "conflict", "stream '%s' %s, expected %s", name, got, want);
  if (r->replay == REPLAY_PLACE || r->replay == REPLAY_ORDER) {
    lua_pushinteger(L, (lua_Integer)r->replay_version);
    lua_setfield(L, err, "stored_version");
  }
  if (r->expected == EXPECT_VERSION) lua_pushinteger(L, (lua_Integer)r->expected_version);
  else lua_pushstring(L, expect_names[r->expected]);
  lua_setfield(L, err, "expected");
  if (r->exists) {
    lua_pushinteger(L, (lua_Integer)r->actual_count - 1);
    lua_setfield(L, err, "actual");
  }
}

static void refusal_push_id(lua_State *L, const refusal *r) {
  char id[UUID_TEXT_LEN + 1];
  uuid_format(r->id, id);
  id[UUID_TEXT_LEN] = '\0';
  int err;
  if (strcmp(r->code, "corrupt") == 0)
    err = cerr_new(L, "corrupt", "the stored event with id %s (position %I) is damaged", id,
                   (lua_Integer)r->position);
  else if (r->replay == REPLAY_MIXED)
    err = cerr_new(L, "duplicate_id", "event id %s is already stored at position %I, and this append "
                   "mixes it with new events (a replay repeats stored events only)", id,
                   (lua_Integer)r->position);
  else if (r->position && r->replay >= REPLAY_STREAM && r->replay <= REPLAY_META) {
    err = cerr_new(L, "duplicate_id", "event id %s is already stored at position %I as a different "
                   "event: its %s differs", id, (lua_Integer)r->position, replay_what[r->replay]);
    lua_pushstring(L, replay_what[r->replay]);
    lua_setfield(L, err, "differs");
  } else if (r->position)
    err = cerr_new(L, "duplicate_id", "event id %s is already stored at position %I as a different event",
                   id, (lua_Integer)r->position);
  else
    err = cerr_new(L, "duplicate_id", "event id %s is used twice in this append", id);
  lua_pushstring(L, id);
  lua_setfield(L, err, "id");
  if (r->position) {
    lua_pushinteger(L, (lua_Integer)r->position);
    lua_setfield(L, err, "position");
  }
}

void refusal_push(lua_State *L, const refusal *r) {
  char name[RECORD_MAX_STREAM + 1];
  size_t len = r->stream_len > RECORD_MAX_STREAM ? RECORD_MAX_STREAM : r->stream_len;
  memcpy(name, r->stream, len);
  name[len] = '\0';
  lua_pushnil(L);
  if (strcmp(r->code, "stream_deleted") == 0)
    cerr_new(L, "stream_deleted", "stream '%s' is deleted (a hard delete: it cannot be written again)", name);
  else if (strcmp(r->code, "conflict") == 0)
    refusal_push_conflict(L, r, name);
  else
    refusal_push_id(L, r);
  lua_pushlstring(L, name, len);
  lua_setfield(L, -2, "stream");
  if (r->index) {
    lua_pushinteger(L, (lua_Integer)r->index);
    lua_setfield(L, -2, "index");
  }
}
