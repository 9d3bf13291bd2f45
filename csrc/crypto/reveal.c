/* Opening personal data on reads, in C: the revealer Store gives a backend's read, read_all and
 * fold (common/seal.h), and ring:reveal, the same for one event from Lua. An event's sealed
 * envelope is meta["$personal"] = { s = subject, c = box } (docs/PERSONAL.md). */
#include <string.h>
#include <lauxlib.h>
#include "common/cerror.h"
#include "common/codec.h"
#include "common/uuid.h"
#include "crypto/ring.h"

/* Moves the `n` values at the top of the stack to `to`, `to`+1, ... and drops the rest above. */
static void keep_top(lua_State *L, int to, int n) {
  for (int i = 0; i < n; i++) lua_copy(L, lua_gettop(L) - n + 1 + i, to + i);
  lua_settop(L, to + n - 1);
}

/* The key of the subject at `subject` for an event, from the ring at `ring` or else from
 * fetch(subject) -> row | false (no key: forgotten) | nil, err, the function at `fetch`.
 * Returns 1 with *k set, 0 when the subject was forgotten, or -1 with nil, err at `top` + 1
 * and the stack cut there (`top`: the caller's stack top when it began). */
static int subject_key_for(lua_State *L, int ring, int subject, int fetch, int top, subject_key **k) {
  int gone;
  *k = ring_lookup(L, ring, subject, &gone);
  if (*k) return 1;
  if (gone) return 0;
  int base = lua_gettop(L);
  lua_pushvalue(L, fetch);
  lua_pushvalue(L, subject);
  lua_call(L, 1, 2);                                   /* base+1, base+2: row | false | nil, err */
  if (lua_type(L, base + 1) == LUA_TSTRING) {
    *k = ring_add_row(L, ring, subject, base + 1);
    if (!*k) { keep_top(L, top + 1, 2); return -1; }
    lua_settop(L, base);
    return 1;
  }
  if (lua_type(L, base + 1) == LUA_TBOOLEAN && !lua_toboolean(L, base + 1)) {
    ring_mark_gone(L, ring, subject);
    lua_settop(L, base);
    return 0;
  }
  lua_pushnil(L);
  lua_pushvalue(L, base + 2);
  keep_top(L, top + 1, 2);
  return -1;
}

/* Opens the event at `ev` with the keys of the ring at `ring`, calling the function at `fetch`
 * for a subject the ring has not seen: fetch(subject) -> row | false (no key: forgotten) |
 * nil, err. When ev.meta carries a `$personal` table: takes it out (and meta when nothing else
 * is in it), sets ev.subject and either ev.personal or ev.erased = true. Returns 0 with the stack
 * as it was, or 2 with nil, err pushed above it. */
static int reveal_event(lua_State *L, int ring, int ev, int fetch) {
  int top = lua_gettop(L);
  if (lua_getfield(L, ev, "meta") != LUA_TTABLE) { lua_settop(L, top); return 0; }
  int meta = top + 1;
  if (lua_getfield(L, meta, "$personal") != LUA_TTABLE) { lua_settop(L, top); return 0; }   /* not chronicle's */
  int envelope = top + 2;
  lua_pushnil(L);
  lua_setfield(L, meta, "$personal");
  lua_pushnil(L);
  if (lua_next(L, meta)) lua_pop(L, 2);
  else { lua_pushnil(L); lua_setfield(L, ev, "meta"); }
  lua_getfield(L, envelope, "s");                      /* top+3: the subject */
  int subject = top + 3;
  lua_pushvalue(L, subject);
  lua_setfield(L, ev, "subject");
  lua_getfield(L, envelope, "c");                      /* top+4: the box */
  lua_getfield(L, ev, "id");                           /* top+5: the id */
  if (lua_isnil(L, top + 4) || lua_isnil(L, top + 5)) { lua_settop(L, top); return 0; }
  size_t slen, idlen, boxlen;
  const char *s = lua_type(L, subject) == LUA_TSTRING ? lua_tolstring(L, subject, &slen) : NULL;
  const char *id = lua_type(L, top + 5) == LUA_TSTRING ? lua_tolstring(L, top + 5, &idlen) : NULL;
  const unsigned char *box = lua_type(L, top + 4) == LUA_TSTRING
    ? (const unsigned char *)lua_tolstring(L, top + 4, &boxlen) : NULL;
  unsigned char ad[BOX_AD_MAX];
  if (!s || slen > MAX_SUBJECT || !box || !id || uuid_parse(id, idlen, ad) != 0) {
    cerr_result(L, "corrupt", "the personal data envelope of event %s is damaged", id ? id : "?");
    keep_top(L, top + 1, 2);
    return 2;
  }
  subject_key *k;
  int found = subject_key_for(L, ring, subject, fetch, top, &k);
  if (found < 0) return 2;
  if (!found) {
    lua_pushboolean(L, 1);
    lua_setfield(L, ev, "erased");
    lua_settop(L, top);
    return 0;
  }
  memcpy(ad + 16, s, slen);
  if (box_open(L, k, ad, 16 + slen, box, boxlen, id, NULL) != 1) { keep_top(L, top + 1, 2); return 2; }
  lua_setfield(L, ev, "personal");
  lua_settop(L, top);
  return 0;
}

/* Opens the event at `ev` whose envelope event_table.c took out of meta undecoded (subject
 * s[0..slen), box[0..boxlen) or NULL, the record's 16-byte id): sets ev.subject and either
 * ev.personal or ev.erased = true, as reveal_event does. Returns 0 with the stack as it was, or 2
 * with nil, err pushed above it. */
static int open_event(lua_State *L, int ring, int ev, int fetch, const unsigned char *s, size_t slen,
                      const unsigned char *box, size_t boxlen, const unsigned char *id, codec_strings *strings) {
  int top = lua_gettop(L);
  if (slen == 0 || slen > MAX_SUBJECT) {
    char text[UUID_TEXT_LEN + 1];
    uuid_format(id, text);
    text[UUID_TEXT_LEN] = 0;
    cerr_result(L, "corrupt", "the personal data envelope of event %s is damaged", text);
    keep_top(L, top + 1, 2);
    return 2;
  }
  codec_push_string(L, strings, s, slen);             /* top+1: the subject */
  int subject = top + 1;
  lua_pushvalue(L, subject);
  lua_setfield(L, ev, "subject");
  if (!box) { lua_settop(L, top); return 0; }
  subject_key *k;
  int found = subject_key_for(L, ring, subject, fetch, top, &k);
  if (found < 0) return 2;
  if (!found) {
    lua_pushboolean(L, 1);
    lua_setfield(L, ev, "erased");
    lua_settop(L, top);
    return 0;
  }
  unsigned char ad[BOX_AD_MAX];
  memcpy(ad, id, 16);
  memcpy(ad + 16, s, slen);
  if (box_open(L, k, ad, 16 + slen, box, boxlen, NULL, strings) != 1) { keep_top(L, top + 1, 2); return 2; }
  lua_setfield(L, ev, "personal");
  lua_settop(L, top);
  return 0;
}

/* ring:reveal(ev, fetch) -> true | nil, err (reveal_event) */
static int ring_reveal(lua_State *L) {
  ring_check(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 3);
  if (reveal_event(L, 1, 2, 3)) return 2;
  lua_pushboolean(L, 1);
  return 1;
}

/* A revealer: uservalue 1 is the read's keyring (made on the first event it opens, closed when
 * the read ends), 2 the key file's key (or nil), 3 the fetch function. */
typedef struct revealer {
  event_revealer vt;   /* first: the backends reach it through the userdata (common/seal.h) */
} revealer;

static void revealer_end(lua_State *L, int self) {
  self = lua_absindex(L, self);
  if (lua_getiuservalue(L, self, 1) == LUA_TUSERDATA) {
    lua_pushcfunction(L, ring_close);
    lua_insert(L, -2);
    lua_call(L, 1, 0);
    lua_pushnil(L);
    lua_setiuservalue(L, self, 1);
  } else {
    lua_pop(L, 1);
  }
}

/* Pushes the read's keyring (made on first use) and the fetch function. */
static void revealer_push(lua_State *L, int self) {
  if (lua_getiuservalue(L, self, 1) != LUA_TUSERDATA) {
    lua_pop(L, 1);
    lua_pushcfunction(L, crypto_keyring);
    lua_getiuservalue(L, self, 2);
    lua_call(L, 1, 1);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, self, 1);
  }
  lua_getiuservalue(L, self, 3);
}

/* After reveal_event or open_event at `top`: 1, or 0 with the error left at top+1 and the
 * revealer ended. */
static int revealer_done(lua_State *L, int self, int top, int rets) {
  if (rets == 0) {
    lua_settop(L, top);
    return 1;
  }
  keep_top(L, top + 1, 1);                             /* the error */
  revealer_end(L, self);
  return 0;
}

static int revealer_reveal(lua_State *L, int self, int ev) {
  self = lua_absindex(L, self);
  ev = lua_absindex(L, ev);
  int top = lua_gettop(L);
  revealer_push(L, self);
  return revealer_done(L, self, top, reveal_event(L, top + 1, ev, top + 2));
}

static int revealer_open(lua_State *L, int self, int ev, const unsigned char *subject, size_t slen,
                         const unsigned char *box, size_t boxlen, const unsigned char *id, codec_strings *strings) {
  self = lua_absindex(L, self);
  ev = lua_absindex(L, ev);
  int top = lua_gettop(L);
  revealer_push(L, self);
  return revealer_done(L, self, top, open_event(L, top + 1, ev, top + 2, subject, slen, box, boxlen, id, strings));
}

/* revealer(ev) -> true | nil, err; revealer(nil) -> true (ends it): the reveal protocol of
 * common/event_table.h, for a caller that calls it as a function. */
static int revealer_call(lua_State *L) {
  luaL_checkudata(L, 1, EVENT_REVEALER_MT);
  lua_settop(L, 2);
  if (lua_isnil(L, 2)) {
    revealer_end(L, 1);
    lua_pushboolean(L, 1);
    return 1;
  }
  luaL_checktype(L, 2, LUA_TTABLE);
  if (!revealer_reveal(L, 1, 2)) {
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int revealer_close(lua_State *L) {
  luaL_checkudata(L, 1, EVENT_REVEALER_MT);
  revealer_end(L, 1);
  return 0;
}

/* crypto.revealer(master | nil, fetch) -> a revealer for one read (see common/seal.h) */
static int crypto_revealer(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) luaL_checkudata(L, 1, "chronicle.crypto.key");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  revealer *r = lua_newuserdatauv(L, sizeof *r, 3);
  r->vt.reveal = revealer_reveal;
  r->vt.end = revealer_end;
  r->vt.open = revealer_open;
  luaL_setmetatable(L, EVENT_REVEALER_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 2);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 3);
  return 1;
}

void reveal_register(lua_State *L) {
  lua_pushcfunction(L, ring_reveal);
  lua_setfield(L, -2, "reveal");
}

void reveal_open(lua_State *L) {
  luaL_newmetatable(L, EVENT_REVEALER_MT);
  lua_pushcfunction(L, revealer_call);
  lua_setfield(L, -2, "__call");
  lua_pushcfunction(L, revealer_close);
  lua_setfield(L, -2, "__close");
  lua_pushliteral(L, "chronicle revealer");
  lua_setfield(L, -2, "__name");
  lua_pop(L, 1);
  lua_pushcfunction(L, crypto_revealer);
  lua_setfield(L, -2, "revealer");
}
