/* The proxy: a table in the script whose methods call back into the host's object
 * (a projection's view), the host side protected, every key and value crossing
 * through the codec. Which methods it has, and what each hands the host besides
 * its key, the host said at sandbox.new (sbox.methods). */
#include <stdio.h>
#include <lauxlib.h>
#include "common/codec.h"
#include "sandbox.h"
#include "sandbox_budget.h"
#include "sandbox_internal.h"
#include "sandbox_view.h"

/* A view callback on its way to the host. */
typedef struct view_hostcall {
  sbox *sb;
  const proxy_method *method;
  size_t key_len;                 /* buf holds the key, then (PROXY_VALUE) the value */
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
  const char *mname = hc->method->name;
  const char *why;
  lua_rawgetp(L, LUA_REGISTRYINDEX, sb);             /* 2: the call's {sandbox, view} */
  lua_rawgeti(L, 2, 2);                              /* 3: the host's view */
  lua_getfield(L, 3, mname);
  if (lua_isnil(L, -1)) return luaL_error(L, "the host's view has no method '%s'", mname);
  lua_pushvalue(L, 3);
  if (!codec_decode(L, sb->buf.data, hc->key_len, &why)) return luaL_error(L, "key: %s", why);
  int nargs = 2;
  if (hc->method->kind == PROXY_VALUE) {
    if (!codec_decode(L, sb->buf.data + hc->key_len, sb->buf.len - hc->key_len, &why))
      return luaL_error(L, "value: %s", why);
    nargs++;
  } else if (hc->method->kind == PROXY_FUNCTION) {
    lua_pushvalue(L, 2);
    lua_pushinteger(L, hc->update_serial);
    lua_pushinteger(L, hc->method - sb->methods);
    lua_pushcclosure(L, view_bridge, 3);
    nargs++;
  }
  lua_call(L, nargs, 1);
  char root[SANDBOX_MAX_METHOD_NAME + 16];
  snprintf(root, sizeof root, "view:%s result", mname);
  sb->buf.len = 0;
  codec_encode(L, -1, &sb->buf, root);
  return 0;
}

/* Runs in the script's coroutine, protected: new = fn(current) for view:update
 * (a PROXY_FUNCTION method, named by the light userdata at 2). */
static int view_p_update_fn(lua_State *co) {
  sbox *sb = sbox_of(co);
  const char *mname = ((const proxy_method *)lua_touserdata(co, 2))->name;
  lua_settop(co, 1);
  const char *why;
  if (!codec_decode(co, sb->buf.data, sb->buf.len, &why)) return luaL_error(co, "view:%s: %s", mname, why);
  lua_call(co, 1, 1);
  sb->buf.len = 0;
  char root[SANDBOX_MAX_METHOD_NAME + 24];
  snprintf(root, sizeof root, "view:%s new value", mname);
  codec_encode_capped(co, -1, &sb->buf, root, &sb->out);
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
  lua_Integer m = lua_tointeger(L, lua_upvalueindex(3));
  const char *mname = sb != NULL && m >= 0 && m < sb->nmethods ? sb->methods[m].name : "update";
  if (sb == NULL || sb->S == NULL || !sb->running || serial == 0 || sb->update_serial != serial)
    return luaL_error(L, "view:%s: this function works only while its %s runs", mname, mname);
  lua_settop(L, 1);
  sb->buf.len = 0;
  char root[SANDBOX_MAX_METHOD_NAME + 24];
  snprintf(root, sizeof root, "view:%s current value", mname);
  codec_encode(L, 1, &sb->buf, root);
  lua_State *co = sb->co;
  if (!lua_checkstack(co, 4)) return luaL_error(L, "view:%s: script stack overflow", mname);
  lua_pushcfunction(co, view_p_update_fn);
  lua_pushvalue(co, 3);             /* the script's function: argument 3 of the running view:update */
  lua_pushlightuserdata(co, &sb->methods[m]);
  lua_State *saved_host = sb->host;
  sb->host = L;
  sb->update_serial = 0;
  int st = lua_pcall(co, 2, 0, 0);
  sb->update_serial = serial;
  sb->host = saved_host;
  if (st != LUA_OK) {
    char text[SANDBOX_MAX_MESSAGE + 96];
    sbox_value_text(co, -1, text, sizeof text);
    lua_pop(co, 1);
    return luaL_error(L, "%s", text);
  }
  const char *why;
  if (!codec_decode(L, sb->buf.data, sb->buf.len, &why)) return luaL_error(L, "view:%s: %s", mname, why);
  return 1;
}

/* view:name(k), view:name(k, v) (PROXY_VALUE) or view:name(k, fn) (PROXY_FUNCTION)
 * in the script, such as a view's get, put, update and delete. */
static int view_method(lua_State *co) {
  sbox *sb = sbox_of(co);
  const proxy_method *method = &sb->methods[lua_tointeger(co, lua_upvalueindex(1))];
  const char *mname = method->name;
  int kind = method->kind;
  if (!sb->running || !sb->has_view || lua_tointeger(co, lua_upvalueindex(2)) != sb->serial)
    return luaL_error(co, "view:%s: this view belongs to a call that has ended", mname);
  if (lua_type(co, 1) != LUA_TTABLE) return luaL_error(co, "view:%s: call it as view:%s(...)", mname, mname);
  if (lua_isnoneornil(co, 2)) return luaL_error(co, "view:%s: a key is needed", mname);
  if (kind == PROXY_FUNCTION) luaL_checktype(co, 3, LUA_TFUNCTION);
  lua_settop(co, kind == PROXY_KEY ? 2 : 3);
  budget_charge(co, 1);               /* no host work once the call has been stopped */
  char root[SANDBOX_MAX_METHOD_NAME + 16];
  snprintf(root, sizeof root, "view:%s key", mname);
  sb->buf.len = 0;
  codec_encode_capped(co, 2, &sb->buf, root, &sb->out);
  view_hostcall hc = { sb, method, sb->buf.len, 0 };
  if (kind == PROXY_VALUE) {
    snprintf(root, sizeof root, "view:%s value", mname);
    codec_encode_capped(co, 3, &sb->buf, root, &sb->out);
  }
  /* The host will hold a copy: the script pays for its bytes, before the host sees it. */
  budget_charge(co, (lua_Integer)(sb->buf.len / SANDBOX_BYTES_PER_STEP));
  luaL_checkstack(co, 4, "view");
  lua_Integer saved_update = sb->update_serial;
  if (kind == PROXY_FUNCTION) hc.update_serial = ++sb->update_counter;
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

/* Pushes a view proxy for this call: a table holding only the host's methods. */
void view_push(lua_State *S, sbox *sb) {
  lua_createtable(S, 0, sb->nmethods);
  for (int m = 0; m < sb->nmethods; m++) {
    lua_pushinteger(S, m);
    lua_pushinteger(S, sb->serial);
    lua_pushcclosure(S, view_method, 2);
    lua_setfield(S, -2, sb->methods[m].name);
  }
}
