/* The view proxy: a table in the script whose methods call back into the host's
 * view, the host side protected, every key and value crossing through the codec. */
#include <stdio.h>
#include <lauxlib.h>
#include "common/codec.h"
#include "sandbox.h"
#include "sandbox_budget.h"
#include "sandbox_internal.h"
#include "sandbox_view.h"

enum { VIEW_GET, VIEW_PUT, VIEW_UPDATE, VIEW_DELETE };
static const char *const view_names[] = { "get", "put", "update", "delete" };

/* A view callback on its way to the host. */
typedef struct view_hostcall {
  sbox *sb;
  int method;
  size_t key_len;                 /* buf holds the key, then (put) the value */
  lua_Integer update_serial;
} view_hostcall;

/* Runs in the host, protected: turns any error into a string. */
static int view_host_msgh(lua_State *L) {
  luaL_tolstring(L, 1, NULL);
  return 1;
}

/* Calls fn(ud) protected in host thread L; on failure copies the message to text. */
static int view_host_pcall(lua_State *L, lua_CFunction fn, void *ud, char *text, size_t size) {
  int top = lua_gettop(L);
  if (!lua_checkstack(L, 4)) {
    snprintf(text, size, "host stack overflow");
    return 1;
  }
  lua_pushcfunction(L, view_host_msgh);
  lua_pushcfunction(L, fn);
  lua_pushlightuserdata(L, ud);
  int st = lua_pcall(L, 1, 0, top + 1);
  if (st != LUA_OK) sbox_value_text(L, -1, text, size);
  lua_settop(L, top);
  return st != LUA_OK;
}

static int view_bridge(lua_State *L);

/* Runs in the host, protected: view[method](view, key [, value | bridge]). */
static int view_host_invoke(lua_State *L) {
  view_hostcall *hc = lua_touserdata(L, 1);
  sbox *sb = hc->sb;
  const char *mname = view_names[hc->method];
  const char *why;
  lua_rawgetp(L, LUA_REGISTRYINDEX, sb);             /* 2: the call's {sandbox, view} */
  lua_rawgeti(L, 2, 2);                              /* 3: the host's view */
  lua_getfield(L, 3, mname);
  if (lua_isnil(L, -1)) return luaL_error(L, "the host's view has no method '%s'", mname);
  lua_pushvalue(L, 3);
  if (!codec_decode(L, sb->buf.data, hc->key_len, &why)) return luaL_error(L, "key: %s", why);
  int nargs = 2;
  if (hc->method == VIEW_PUT) {
    if (!codec_decode(L, sb->buf.data + hc->key_len, sb->buf.len - hc->key_len, &why))
      return luaL_error(L, "value: %s", why);
    nargs++;
  } else if (hc->method == VIEW_UPDATE) {
    lua_pushvalue(L, 2);
    lua_pushinteger(L, hc->update_serial);
    lua_pushcclosure(L, view_bridge, 2);
    nargs++;
  }
  lua_call(L, nargs, 1);
  char root[32];
  snprintf(root, sizeof root, "view:%s result", mname);
  sb->buf.len = 0;
  codec_encode(L, -1, &sb->buf, root);
  return 0;
}

/* Runs in the script's coroutine, protected: new = fn(current) for view:update. */
static int view_p_update_fn(lua_State *co) {
  sbox *sb = sbox_of(co);
  const char *why;
  if (!codec_decode(co, sb->buf.data, sb->buf.len, &why)) return luaL_error(co, "view:update: %s", why);
  lua_call(co, 1, 1);
  sb->buf.len = 0;
  codec_encode_capped(co, -1, &sb->buf, "view:update new value", &sb->out);
  budget_charge(co, 1 + (lua_Integer)(sb->buf.len / SANDBOX_BYTES_PER_STEP));
  return 0;
}

/* The host-side function given to the host view's update: it runs the
 * script's function on a copy of the current value and returns a copy of the
 * result. It works only while that view:update call is running. */
static int view_bridge(lua_State *L) {
  lua_rawgeti(L, lua_upvalueindex(1), 1);
  sbox *sb = luaL_testudata(L, -1, SANDBOX_MT);
  lua_Integer serial = lua_tointeger(L, lua_upvalueindex(2));
  if (sb == NULL || sb->S == NULL || !sb->running || serial == 0 || sb->update_serial != serial)
    return luaL_error(L, "view:update: this function works only while its update runs");
  lua_settop(L, 1);
  sb->buf.len = 0;
  codec_encode(L, 1, &sb->buf, "view:update current value");
  lua_State *co = sb->co;
  if (!lua_checkstack(co, 4)) return luaL_error(L, "view:update: script stack overflow");
  lua_pushcfunction(co, view_p_update_fn);
  lua_pushvalue(co, 3);             /* the script's function: argument 3 of the running view:update */
  lua_State *saved_host = sb->host;
  sb->host = L;
  sb->update_serial = 0;
  int st = lua_pcall(co, 1, 0, 0);
  sb->update_serial = serial;
  sb->host = saved_host;
  if (st != LUA_OK) {
    char text[SANDBOX_MAX_MESSAGE + 96];
    sbox_value_text(co, -1, text, sizeof text);
    lua_pop(co, 1);
    return luaL_error(L, "%s", text);
  }
  const char *why;
  if (!codec_decode(L, sb->buf.data, sb->buf.len, &why)) return luaL_error(L, "view:update: %s", why);
  return 1;
}

/* view:get(k), view:put(k, v), view:update(k, fn), view:delete(k) in the script. */
static int view_method(lua_State *co) {
  sbox *sb = sbox_of(co);
  int method = (int)lua_tointeger(co, lua_upvalueindex(1));
  const char *mname = view_names[method];
  if (!sb->running || !sb->has_view || lua_tointeger(co, lua_upvalueindex(2)) != sb->serial)
    return luaL_error(co, "view:%s: this view belongs to a call that has ended", mname);
  if (lua_type(co, 1) != LUA_TTABLE) return luaL_error(co, "view:%s: call it as view:%s(...)", mname, mname);
  if (lua_isnoneornil(co, 2)) return luaL_error(co, "view:%s: a key is needed", mname);
  if (method == VIEW_UPDATE) luaL_checktype(co, 3, LUA_TFUNCTION);
  lua_settop(co, method == VIEW_PUT || method == VIEW_UPDATE ? 3 : 2);
  budget_charge(co, 1);               /* no host work once the call has been stopped */
  char root[32];
  snprintf(root, sizeof root, "view:%s key", mname);
  sb->buf.len = 0;
  codec_encode_capped(co, 2, &sb->buf, root, &sb->out);
  view_hostcall hc = { sb, method, sb->buf.len, 0 };
  if (method == VIEW_PUT) codec_encode_capped(co, 3, &sb->buf, "view:put value", &sb->out);
  /* The host will hold a copy: the script pays for its bytes, before the host sees it. */
  budget_charge(co, (lua_Integer)(sb->buf.len / SANDBOX_BYTES_PER_STEP));
  luaL_checkstack(co, 4, "view");
  lua_Integer saved_update = sb->update_serial;
  if (method == VIEW_UPDATE) hc.update_serial = ++sb->update_counter;
  sb->update_serial = hc.update_serial;
  char text[SANDBOX_MAX_MESSAGE + 96];
  int failed = view_host_pcall(sb->host, view_host_invoke, &hc, text, sizeof text);
  sb->update_serial = saved_update;
  if (failed) return luaL_error(co, "view:%s: %s", mname, text);
  const char *why;
  if (!codec_decode(co, sb->buf.data, sb->buf.len, &why))
    return luaL_error(co, "view:%s: %s", mname, why);
  return 1;
}

/* Pushes a view proxy for this call: a table holding only its four methods. */
void view_push(lua_State *S, sbox *sb) {
  lua_createtable(S, 0, 4);
  for (int m = VIEW_GET; m <= VIEW_DELETE; m++) {
    lua_pushinteger(S, m);
    lua_pushinteger(S, sb->serial);
    lua_pushcclosure(S, view_method, 2);
    lua_setfield(S, -2, view_names[m]);
  }
}
