/* The per-event work of personal data, one call per write or per event read, so that Lua does
 * nothing per event: ring:seal_appends rewrites a whole write's events (each `personal` sealed
 * into meta `$personal`), ring:reveal opens one read event's box in place. The format is
 * docs/PERSONAL.md's: meta["$personal"] = { s = subject, c = box }. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <lauxlib.h>
#include "common/cerror.h"
#include "common/uuid.h"
#include "crypto/ring.h"

/* The field names, interned once (upvalues of both functions) and compared as values. */
enum { U_PERSONAL = 1, U_SUBJECT, U_META, U_ID, U_ENVELOPE, U_S, U_C, U_EVENTS, U_ERASED };
#define UP(i) lua_upvalueindex(i)

static void rawget_up(lua_State *L, int t, int up) {
  lua_pushvalue(L, UP(up));
  lua_rawget(L, t);
}

static void rawset_up(lua_State *L, int t, int up) {   /* t[up] = top; pops it */
  t = lua_absindex(L, t);
  lua_pushvalue(L, UP(up));
  lua_insert(L, -2);
  lua_rawset(L, t);
}

/* True when the event at `e` carries personal data or a subject. */
static int has_personal(lua_State *L, int e) {
  if (lua_type(L, e) != LUA_TTABLE) return 0;
  rawget_up(L, e, U_PERSONAL);
  rawget_up(L, e, U_SUBJECT);
  int any = !lua_isnil(L, -1) || !lua_isnil(L, -2);
  lua_pop(L, 2);
  return any;
}

/* Pushes a copy of the table at `t` without the keys `skip1`, `skip2` (upvalue numbers, 0: none). */
static void copy_without(lua_State *L, int t, int skip1, int skip2) {
  lua_createtable(L, 0, 6);
  int out = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, t)) {
    if ((skip1 && lua_rawequal(L, -2, UP(skip1))) || (skip2 && lua_rawequal(L, -2, UP(skip2)))) {
      lua_pop(L, 1);
      continue;
    }
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, out);
  }
}

/* Misuse: false and the message (Lua raises it at the caller's level). */
static int misuse(lua_State *L, const char *fmt, ...) {
  lua_pushboolean(L, 0);
  va_list ap;
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  return 2;
}

/* Pushes the sealed form of the event at `e` (a table with personal or subject), or returns
 * the number of results to return: misuse (false, message) or a failure (nil, err) from the
 * key lookup. Returns 0 when the event was pushed. */
static int seal_event(lua_State *L, int ring, keyring *r, int fetch, int e, const char *where,
                      lua_Integer j, unsigned long long ms) {
  int base = lua_gettop(L);
  rawget_up(L, e, U_SUBJECT);                          /* base+1 */
  int subject = base + 1;
  if (lua_isnil(L, subject)) return misuse(L, "%s[%I]: personal data needs a subject (whose data it is)", where, j);
  size_t slen = 0;
  if (lua_type(L, subject) != LUA_TSTRING || (lua_tolstring(L, subject, &slen), slen == 0 || slen > MAX_SUBJECT)) {
    if (lua_type(L, subject) == LUA_TSTRING)
      return misuse(L, "%s[%I]: subject must be a string of 1 to %d bytes, got %d bytes", where, j, MAX_SUBJECT, (int)slen);
    return misuse(L, "%s[%I]: subject must be a string of 1 to %d bytes, got %s", where, j, MAX_SUBJECT,
                  luaL_typename(L, subject));
  }
  rawget_up(L, e, U_PERSONAL);                         /* base+2 */
  int personal = base + 2;
  if (!lua_isnil(L, personal) && !lua_istable(L, personal))
    return misuse(L, "%s[%I].personal must be a table, got %s", where, j, luaL_typename(L, personal));
  rawget_up(L, e, U_META);                             /* base+3 */
  int meta = base + 3;
  if (!lua_isnil(L, meta) && !lua_istable(L, meta))
    return misuse(L, "%s[%I].meta must be a table, got %s", where, j, luaL_typename(L, meta));
  if (lua_istable(L, meta)) {
    rawget_up(L, meta, U_ENVELOPE);
    int taken = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (taken) return misuse(L, "%s[%I].meta: the key '$personal' is chronicle's", where, j);
  }
  unsigned char ad[BOX_AD_MAX];
  rawget_up(L, e, U_ID);                               /* base+4 */
  int id = base + 4;
  if (lua_isnil(L, id)) {
    lua_pop(L, 1);
    if (uuid_v7_at(ad, ms) != 0) return luaL_error(L, "%s[%I]: no randomness available for an event id", where, j);
    char text[UUID_TEXT_LEN];
    uuid_format(ad, text);
    lua_pushlstring(L, text, UUID_TEXT_LEN);
  } else if (!lua_isnil(L, personal)) {
    size_t idlen;
    const char *text = lua_type(L, id) == LUA_TSTRING ? lua_tolstring(L, id, &idlen) : NULL;
    if (!text || uuid_parse(text, idlen, ad) != 0)
      return misuse(L, "%s[%I].id must be a UUID string like '0190b6c8-2f1e-7a3b-9c4d-5e6f708192a3'", where, j);
  }
  lua_createtable(L, 0, 2);                            /* base+5: the envelope */
  int envelope = base + 5;
  lua_pushvalue(L, subject);
  rawset_up(L, envelope, U_S);
  if (!lua_isnil(L, personal)) {
    int gone;
    subject_key *k = ring_lookup(L, ring, subject, &gone);
    if (!k) {
      lua_pushvalue(L, fetch);
      lua_pushvalue(L, subject);
      lua_call(L, 1, 2);                               /* row | nil, err */
      if (lua_type(L, -2) != LUA_TSTRING) {
        if (lua_isnil(L, -1)) return luaL_error(L, "personal: the key lookup of subject '%s' gave no row",
                                                lua_tostring(L, subject));
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
      }
      lua_pop(L, 1);
      k = ring_add_row(L, ring, subject, lua_gettop(L));
      if (!k) return 2;
      lua_pop(L, 1);
    }
    memcpy(ad + 16, lua_tostring(L, subject), slen);
    box_seal(L, r, k, ad, 16 + slen, personal);
    rawset_up(L, envelope, U_C);
  }
  copy_without(L, e, U_PERSONAL, U_SUBJECT);           /* base+6: the event */
  int out = base + 6;
  lua_pushvalue(L, id);
  rawset_up(L, out, U_ID);
  if (lua_istable(L, meta)) copy_without(L, meta, 0, 0);
  else lua_createtable(L, 0, 1);
  lua_pushvalue(L, envelope);
  rawset_up(L, -2, U_ENVELOPE);
  rawset_up(L, out, U_META);
  lua_replace(L, base + 1);
  lua_settop(L, base + 1);
  return 0;
}

/* ring:seal_appends(appends, fetch) -> appends' (the entries whose events carry personal data
 * copied, with those events sealed; the others as they were) | false, message (misuse: a
 * subject missing or malformed, ...) | nil, err (from fetch). `fetch(subject)` is called for
 * a subject whose key the ring lacks and returns its key row, or nil, err. */
static int ring_seal_appends(lua_State *L) {
  keyring *r = ring_check(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_settop(L, 3);
  lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
  lua_createtable(L, (int)n, 0);                       /* 4: the new list */
  unsigned long long ms = uuid_now_ms();
  char where[48];
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 2, i);                              /* 5: the entry */
    int entry = 5;
    if (lua_istable(L, entry)) {
      rawget_up(L, entry, U_EVENTS);                   /* 6: its events */
      int events = 6, any = 0;
      lua_Integer m = 0;
      if (lua_istable(L, events)) {
        m = (lua_Integer)lua_rawlen(L, events);
        for (lua_Integer j = 1; j <= m && !any; j++) {
          lua_rawgeti(L, events, j);
          any = has_personal(L, lua_gettop(L));
          lua_pop(L, 1);
        }
      }
      if (any) {
        if (n > 1) snprintf(where, sizeof where, "entries[%lld].events", (long long)i);
        else snprintf(where, sizeof where, "events");
        lua_createtable(L, (int)m, 0);                 /* 7: the new events */
        for (lua_Integer j = 1; j <= m; j++) {
          lua_rawgeti(L, events, j);                   /* 8 */
          if (has_personal(L, 8)) {
            int rets = seal_event(L, 1, r, 3, 8, where, j, ms);
            if (rets) return rets;
            lua_replace(L, 8);
          }
          lua_rawseti(L, 7, j);
        }
        copy_without(L, entry, 0, 0);                  /* 8: the new entry */
        lua_pushvalue(L, 7);
        rawset_up(L, 8, U_EVENTS);
        lua_replace(L, entry);
      }
      lua_settop(L, entry);
    }
    lua_rawseti(L, 4, i);
  }
  return 1;
}

/* ring:reveal(ev, fetch) -> true | nil, err. When ev.meta carries `$personal`, takes it out
 * (and ev.meta when nothing else is in it), sets ev.subject and either ev.personal (the box
 * opened) or ev.erased = true (the subject forgotten). `fetch(subject)` is called for a subject
 * the ring has not seen: it returns the key row, false (no key: forgotten), or nil, err. */
static int ring_reveal(lua_State *L) {
  keyring *r = ring_check(L, 1);
  (void)r;
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 3);
  rawget_up(L, 2, U_META);                             /* 4 */
  if (!lua_istable(L, 4)) { lua_pushboolean(L, 1); return 1; }
  rawget_up(L, 4, U_ENVELOPE);                         /* 5 */
  if (!lua_istable(L, 5)) { lua_pushboolean(L, 1); return 1; }   /* none, or not chronicle's */
  lua_pushnil(L);
  rawset_up(L, 4, U_ENVELOPE);
  lua_pushnil(L);
  if (lua_next(L, 4)) lua_pop(L, 2);
  else { lua_pushnil(L); rawset_up(L, 2, U_META); }
  rawget_up(L, 5, U_S);                                /* 6: the subject */
  lua_pushvalue(L, 6);
  rawset_up(L, 2, U_SUBJECT);
  rawget_up(L, 5, U_C);                                /* 7: the box */
  rawget_up(L, 2, U_ID);                               /* 8: the id */
  if (lua_isnil(L, 7) || lua_isnil(L, 8)) { lua_pushboolean(L, 1); return 1; }
  size_t slen, idlen, boxlen;
  const char *subject = lua_type(L, 6) == LUA_TSTRING ? lua_tolstring(L, 6, &slen) : NULL;
  const char *id = lua_type(L, 8) == LUA_TSTRING ? lua_tolstring(L, 8, &idlen) : NULL;
  const unsigned char *box = lua_type(L, 7) == LUA_TSTRING ? (const unsigned char *)lua_tolstring(L, 7, &boxlen) : NULL;
  unsigned char ad[BOX_AD_MAX];
  if (!subject || slen > MAX_SUBJECT || !box || !id || uuid_parse(id, idlen, ad) != 0)
    return cerr_result(L, "corrupt", "the personal data envelope of event %s is damaged", id ? id : "?");
  int gone;
  subject_key *k = ring_lookup(L, 1, 6, &gone);
  if (!k && !gone) {
    lua_pushvalue(L, 3);
    lua_pushvalue(L, 6);
    lua_call(L, 1, 2);                                 /* 9, 10: row | false | nil, err */
    if (lua_type(L, 9) == LUA_TSTRING) {
      k = ring_add_row(L, 1, 6, 9);
      if (!k) return 2;
    } else if (lua_type(L, 9) == LUA_TBOOLEAN && !lua_toboolean(L, 9)) {
      ring_mark_gone(L, 1, 6);
      gone = 1;
    } else {
      lua_pushnil(L);
      lua_pushvalue(L, 10);
      return 2;
    }
  }
  if (gone) {
    lua_pushboolean(L, 1);
    rawset_up(L, 2, U_ERASED);
    lua_pushboolean(L, 1);
    return 1;
  }
  memcpy(ad + 16, subject, slen);
  int got = box_open(L, k, ad, 16 + slen, box, boxlen, id);
  if (got != 1) return got;
  rawset_up(L, 2, U_PERSONAL);
  lua_pushboolean(L, 1);
  return 1;
}

void batch_register(lua_State *L) {
  static const char *const names[] = { "personal", "subject", "meta", "id", "$personal", "s", "c",
                                       "events", "erased" };
  static const luaL_Reg fns[] = { { "seal_appends", ring_seal_appends }, { "reveal", ring_reveal }, { NULL, NULL } };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) lua_pushstring(L, names[i]);
  luaL_setfuncs(L, fns, (int)(sizeof names / sizeof names[0]));
}
