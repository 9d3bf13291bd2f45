/* The per-event work of sealing personal data, so that Lua does nothing per event: ring:prepare
 * checks a whole write's events and loads their subjects' keys, ring_seal_meta seals one
 * event's `personal` into its meta `$personal` while the backend encodes the append
 * (common/seal.h). Reading is reveal.c's. The format is
 * docs/PERSONAL.md's: meta["$personal"] = { s = subject, c = box }. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <lauxlib.h>
#include "common/cerror.h"
#include "common/codec.h"
#include "common/uuid.h"
#include "crypto/ring.h"

/* The field names, interned once (upvalues of ring:prepare) and compared as values. */
enum { U_PERSONAL = 1, U_SUBJECT, U_META, U_ID, U_ENVELOPE, U_EVENTS };
#define UP(i) lua_upvalueindex(i)

static void rawget_up(lua_State *L, int t, int up) {
  lua_pushvalue(L, UP(up));
  lua_rawget(L, t);
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

static const char *where_of(char *buf, size_t size, lua_Integer i, lua_Integer n) {
  if (n > 1) snprintf(buf, size, "entries[%lld].events", (long long)i);
  else snprintf(buf, size, "events");
  return buf;
}

/* Checks the event at `e` (a table with personal or subject) and puts its subject's key in
 * the ring when it carries personal data. Returns 0, or the number of results to return:
 * misuse (false, message) or a failure (nil, err) from the key lookup. */
static int prepare_event(lua_State *L, int ring, int keys, int fetch, int e, int subject, int personal,
                         lua_Integer i, lua_Integer n, lua_Integer j) {
  int base = lua_gettop(L);
  char buf[48];     /* WHERE names the event's list in misuse messages, written only for one */
#define WHERE where_of(buf, sizeof buf, i, n)
  if (lua_isnil(L, subject)) return misuse(L, "%s[%I]: personal data needs a subject (whose data it is)", WHERE, j);
  size_t slen = 0;
  if (lua_type(L, subject) != LUA_TSTRING || (lua_tolstring(L, subject, &slen), slen == 0 || slen > MAX_SUBJECT)) {
    if (lua_type(L, subject) == LUA_TSTRING)
      return misuse(L, "%s[%I]: subject must be a string of 1 to %d bytes, got %d bytes", WHERE, j, MAX_SUBJECT, (int)slen);
    return misuse(L, "%s[%I]: subject must be a string of 1 to %d bytes, got %s", WHERE, j, MAX_SUBJECT,
                  luaL_typename(L, subject));
  }
  if (!lua_isnil(L, personal) && !lua_istable(L, personal))
    return misuse(L, "%s[%I].personal must be a table, got %s", WHERE, j, luaL_typename(L, personal));
  rawget_up(L, e, U_META);                             /* base+1 */
  int meta = base + 1;
  if (!lua_isnil(L, meta) && !lua_istable(L, meta))
    return misuse(L, "%s[%I].meta must be a table, got %s", WHERE, j, luaL_typename(L, meta));
  if (lua_istable(L, meta)) {
    rawget_up(L, meta, U_ENVELOPE);
    int taken = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (taken) return misuse(L, "%s[%I].meta: the key '$personal' is chronicle's", WHERE, j);
  }
  rawget_up(L, e, U_ID);                               /* base+2 */
  if (!lua_isnil(L, base + 2) && !lua_isnil(L, personal)) {
    size_t idlen;
    unsigned char id[16];
    const char *text = lua_type(L, base + 2) == LUA_TSTRING ? lua_tolstring(L, base + 2, &idlen) : NULL;
    if (!text || uuid_parse(text, idlen, id) != 0)
      return misuse(L, "%s[%I].id must be a UUID string like '0190b6c8-2f1e-7a3b-9c4d-5e6f708192a3'", WHERE, j);
  }
  if (!lua_isnil(L, personal)) {
    int gone;
    if (!ring_lookup_in(L, keys, subject, &gone)) {
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
      if (!ring_add_row(L, ring, subject, lua_gettop(L))) return 2;
    }
  }
  lua_settop(L, base);
  return 0;
#undef WHERE
}

/* ring:prepare(appends, fetch) -> true | false, message (misuse: a subject missing or
 * malformed, ...) | nil, err (from fetch). Checks every event of the write's appends that
 * carries personal data or a subject, and puts the key of each subject with personal data in
 * the ring: `fetch(subject)` is called for a subject whose key the ring lacks and returns its
 * key row, or nil, err. The write then seals through the ring (ops.seal, common/seal.h). */
static int ring_prepare(lua_State *L) {
  ring_check(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_settop(L, 3);
  lua_getiuservalue(L, 1, 1);                          /* 4: the ring's keys (ring_lookup_in) */
  lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_settop(L, 4);
    lua_rawgeti(L, 2, i);                              /* 5: the entry */
    if (!lua_istable(L, 5)) continue;
    rawget_up(L, 5, U_EVENTS);                         /* 6: its events */
    if (!lua_istable(L, 6)) continue;
    lua_Integer m = (lua_Integer)lua_rawlen(L, 6);
    for (lua_Integer j = 1; j <= m; j++) {
      lua_settop(L, 6);
      if (lua_rawgeti(L, 6, j) != LUA_TTABLE) continue;   /* 7 (the backend names what is wrong) */
      rawget_up(L, 7, U_SUBJECT);                      /* 8 */
      rawget_up(L, 7, U_PERSONAL);                     /* 9 */
      if (lua_isnil(L, 8) && lua_isnil(L, 9)) continue;
      int rets = prepare_event(L, 1, 4, 3, 7, 8, 9, i, n, j);
      if (rets) return rets;
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

void ring_seal_meta(lua_State *L, int ring, int meta, int subject, int personal, const unsigned char *id,
                    buf *out, long long index) {
  ring = lua_absindex(L, ring);
  meta = lua_absindex(L, meta);
  subject = lua_absindex(L, subject);
  personal = lua_absindex(L, personal);
  keyring *r = lua_touserdata(L, ring);
  if (r->closed) luaL_error(L, "crypto: keyring used after close");
  size_t slen = 0;
  const char *s = lua_type(L, subject) == LUA_TSTRING ? lua_tolstring(L, subject, &slen) : NULL;
  if (!s || slen == 0 || slen > MAX_SUBJECT)
    luaL_error(L, "events[%I]: subject must be a string of 1 to %d bytes", (lua_Integer)index, MAX_SUBJECT);
  int sealed = !lua_isnil(L, personal);
  if (sealed) {
    int gone;
    subject_key *k = ring_lookup(L, ring, subject, &gone);
    if (!k) luaL_error(L, "personal: no key of subject '%s' in the keyring (ring:prepare makes them)", s);
    unsigned char ad[BOX_AD_MAX];
    memcpy(ad, id, 16);
    memcpy(ad + 16, s, slen);
    box_seal(L, r, k, ad, 16 + slen, personal);
  }
  codec_encode_map_with(L, meta, out, "events", index, "meta", 1);
  if (codec_put_bytes(out, "$personal", 9) || codec_put_map(out, sealed ? 2 : 1) ||
      codec_put_bytes(out, "s", 1) || codec_put_bytes(out, s, slen) ||
      (sealed && (codec_put_bytes(out, "c", 1) || codec_put_bytes(out, (const char *)r->box.data, r->box.len))))
    luaL_error(L, "personal: out of memory");
}

void batch_register(lua_State *L) {
  static const char *const names[] = { "personal", "subject", "meta", "id", "$personal", "events" };
  static const luaL_Reg fns[] = { { "prepare", ring_prepare }, { NULL, NULL } };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) lua_pushstring(L, names[i]);
  luaL_setfuncs(L, fns, (int)(sizeof names / sizeof names[0]));
}
