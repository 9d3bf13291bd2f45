/* The library a script sees: Lua's base, string, table, math and utf8 libraries
 * and three os functions, without what reaches outside the script's state. */

/* The count hook never fires inside a C function, so the library functions
 * that could run long pay for the bytes or elements they will touch before
 * they run, and the pattern functions are our own (sandbox_pattern.c). */
#include <limits.h>
#include <stdint.h>
#include <lauxlib.h>
#include <lualib.h>
#include "sandbox.h"
#include "sandbox_budget.h"
#include "sandbox_internal.h"
#include "sandbox_lib.h"
#include "sandbox_pattern.h"

/* Every charge is computed in saturating arithmetic: a sum or product past
 * LUA_MAXINTEGER is LUA_MAXINTEGER, which no budget can pay, so budget_charge
 * refuses it before the work starts. */
static lua_Integer slib_add(lua_Integer a, lua_Integer b) {
  return a > LUA_MAXINTEGER - b ? LUA_MAXINTEGER : a + b;
}

/* What a function pays for touching `bytes` bytes. */
static lua_Integer slib_bytes_cost(size_t bytes) {
  return 1 + (lua_Integer)(bytes / SANDBOX_BYTES_PER_STEP);   /* SIZE_MAX / 64 < LUA_MAXINTEGER */
}

/* Elements in i..j, saturating. */
static lua_Integer slib_span(lua_Integer i, lua_Integer j) {
  if (j < i) return 0;
  lua_Unsigned d = (lua_Unsigned)j - (lua_Unsigned)i;
  return d >= (lua_Unsigned)LUA_MAXINTEGER ? LUA_MAXINTEGER : (lua_Integer)d + 1;
}

/* A string position as string.byte reads it: negative counts from the end, clipped to 0..len. */
static lua_Integer slib_strpos(lua_Integer pos, size_t len) {
  if (pos >= 0) return (lua_Unsigned)pos > len ? (lua_Integer)len : pos;
  if ((lua_Unsigned)0 - (lua_Unsigned)pos > len) return 0;
  return (lua_Integer)len + pos + 1;
}

/* Wrappers call the original C function (their upvalue) in their own frame,
 * so its error messages still name the function the script called. */
static int slib_call_original(lua_State *L) {
  lua_CFunction f = lua_tocfunction(L, lua_upvalueindex(1));
  return f(L);
}

/* What a call pays for its arguments: one per argument, and the bytes of its strings. */
static lua_Integer slib_args_cost(lua_State *L) {
  size_t bytes = 0;
  int n = lua_gettop(L);
  for (int i = 1; i <= n; i++)
    if (lua_type(L, i) == LUA_TSTRING) {
      size_t len = lua_rawlen(L, i);
      bytes = len > SIZE_MAX - bytes ? SIZE_MAX : bytes + len;
    }
  return slib_add(slib_bytes_cost(bytes), n);
}

/* A library function that pays for its arguments first (the functions that
 * loop over their arguments, or over the bytes of their strings). */
static int slib_metered(lua_State *L) {
  budget_charge(L, slib_args_cost(L));
  return slib_call_original(L);
}

/* string.byte(s, i, j) and utf8.codepoint(s, i, j): one per result too. */
static int slib_metered_range(lua_State *L) {
  size_t len;
  luaL_checklstring(L, 1, &len);
  lua_Integer i = slib_strpos(luaL_optinteger(L, 2, 1), len);
  lua_Integer j = slib_strpos(luaL_optinteger(L, 3, i), len);
  budget_charge(L, slib_add(slib_args_cost(L), slib_span(i < 1 ? 1 : i, j)));
  return slib_call_original(L);
}

/* load: text only, whatever mode the script asks for; env defaults to the sandbox's globals. */
static int slib_load(lua_State *L) {
  if (lua_type(L, 1) == LUA_TSTRING) budget_charge(L, slib_bytes_cost(lua_rawlen(L, 1)));
  if (lua_gettop(L) < 3) lua_settop(L, 3);
  lua_pushliteral(L, "t");
  lua_replace(L, 3);
  return slib_call_original(L);
}

/* xpcall's message handler runs before the error unwinds; after an error
 * raised by the count hook, Lua runs it with hooks still off. So once the
 * call has been stopped the script's handler is skipped, and the error goes
 * on unchanged. */
static int slib_msgh(lua_State *L) {
  if (sbox_of(L)->stop) return 1;
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

static int slib_xpcall(lua_State *L) {
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushvalue(L, 2);
  lua_pushcclosure(L, slib_msgh, 1);
  lua_replace(L, 2);
  return slib_call_original(L);
}

/* setmetatable without __gc: a finaliser would run whenever the collector
 * gets to it, outside any budget (Lua only marks an object for finalisation
 * if its metatable has __gc when it is set, so adding it later does nothing). */
static int slib_setmetatable(lua_State *L) {
  int t = lua_type(L, 2);
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
  if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
    return luaL_error(L, "cannot change a protected metatable");
  if (t == LUA_TTABLE) {
    lua_pushliteral(L, "__gc");
    if (lua_rawget(L, 2) != LUA_TNIL) return luaL_error(L, "setmetatable: __gc is not allowed in the sandbox");
    lua_pop(L, 1);
  }
  lua_settop(L, 2);
  lua_setmetatable(L, 1);
  return 1;
}

/* string.rep: n copies of "" cost nothing (the original would loop n times to
 * make ""); a result larger than the memory left fails at once as a memory error. */
static int slib_rep(lua_State *L) {
  size_t l, lsep;
  luaL_checklstring(L, 1, &l);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_optlstring(L, 3, "", &lsep);
  if (n <= 0 || l + lsep == 0) {
    lua_pushliteral(L, "");
    return 1;
  }
  sbox *sb = sbox_of(L);
  size_t room = sb->limit - sb->used;
  if (l + lsep < l || (lua_Unsigned)n > (lua_Unsigned)(SIZE_MAX / (l + lsep)) || (size_t)n * (l + lsep) > room) {
    sb->oom = 1;
    return luaL_error(L, "not enough memory (string.rep of %I copies of %I bytes)", n, (lua_Integer)(l + lsep));
  }
  budget_charge(L, slib_bytes_cost((size_t)n * (l + lsep)));
  return slib_call_original(L);
}

/* table.concat and table.unpack: bounds computed once, paid for, and passed
 * explicitly, so a __len or __index written in C cannot make the loop endless. */
static int slib_concat(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer i = luaL_optinteger(L, 3, 1);
  lua_Integer j = lua_isnoneornil(L, 4) ? luaL_len(L, 1) : luaL_checkinteger(L, 4);
  budget_charge(L, slib_add(1, slib_span(i, j)));
  lua_settop(L, 4);
  lua_pushinteger(L, i);
  lua_replace(L, 3);
  lua_pushinteger(L, j);
  lua_replace(L, 4);
  return slib_call_original(L);
}

static int slib_unpack(lua_State *L) {
  lua_Integer i = luaL_optinteger(L, 2, 1);
  lua_Integer j = lua_isnoneornil(L, 3) ? luaL_len(L, 1) : luaL_checkinteger(L, 3);
  budget_charge(L, slib_add(1, slib_span(i, j)));
  lua_settop(L, 3);
  lua_pushinteger(L, i);
  lua_replace(L, 2);
  lua_pushinteger(L, j);
  lua_replace(L, 3);
  return slib_call_original(L);
}

static int slib_move(lua_State *L) {
  lua_Integer f = luaL_checkinteger(L, 2);
  lua_Integer e = luaL_checkinteger(L, 3);
  budget_charge(L, slib_add(1, slib_span(f, e)));
  return slib_call_original(L);
}

/* table.insert(t, [pos,] v), as the manual describes it, paying for the shift. */
static int slib_insert(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer n = luaL_len(L, 1);
  luaL_argcheck(L, n < LUA_MAXINTEGER, 1, "its length leaves no position to insert at");
  lua_Integer e = n + 1;                /* first empty slot */
  lua_Integer pos;
  switch (lua_gettop(L)) {
    case 2:
      pos = e;
      break;
    case 3:
      pos = luaL_checkinteger(L, 2);
      luaL_argcheck(L, (lua_Unsigned)pos - 1u < (lua_Unsigned)e, 2, "position out of bounds");
      budget_charge(L, slib_add(1, slib_span(pos, e)));
      for (lua_Integer i = e; i > pos; i--) {
        lua_geti(L, 1, i - 1);
        lua_seti(L, 1, i);
      }
      break;
    default:
      return luaL_error(L, "wrong number of arguments to 'insert'");
  }
  lua_seti(L, 1, pos);
  return 0;
}

/* table.remove(t [, pos]), likewise. */
static int slib_remove(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer size = luaL_len(L, 1);
  lua_Integer pos = luaL_optinteger(L, 2, size);
  if (pos != size)
    luaL_argcheck(L, (lua_Unsigned)pos - 1u <= (lua_Unsigned)size, 2, "position out of bounds");
  budget_charge(L, slib_add(1, slib_span(pos, size)));
  lua_geti(L, 1, pos);
  for (; pos < size; pos++) {
    lua_geti(L, 1, pos + 1);
    lua_seti(L, 1, pos);
  }
  lua_pushnil(L);
  lua_seti(L, 1, pos);
  return 1;
}

/* table.sort pays n*log2(n) comparisons up front. A table with a metatable is
 * sorted as a plain copy, so its __len is asked once, here. */
static int slib_sort(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer n = luaL_len(L, 1);
  lua_Integer log2n = 1;
  for (lua_Integer m = n; m > 1; m >>= 1) log2n++;
  if (n > 0) budget_charge(L, n < LUA_MAXINTEGER / log2n ? n * log2n : LUA_MAXINTEGER);
  if (!lua_getmetatable(L, 1)) return slib_call_original(L);   /* the raw length, the one just paid for */
  lua_pop(L, 1);
  if (n < 2) return 0;                  /* the original would ask __len again */
  luaL_argcheck(L, n < INT_MAX, 1, "array too big");
  lua_settop(L, 2);
  lua_createtable(L, (int)n, 0);                       /* 3: the plain copy */
  for (lua_Integer i = 1; i <= n; i++) {
    lua_geti(L, 1, i);
    lua_rawseti(L, 3, i);
  }
  lua_pushcfunction(L, lua_tocfunction(L, lua_upvalueindex(1)));
  lua_pushvalue(L, 3);
  lua_pushvalue(L, 2);
  lua_call(L, 2, 0);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 3, i);
    lua_seti(L, 1, i);
  }
  return 0;
}

static void slib_wrap(lua_State *S, int t, const char *name, lua_CFunction wrapper) {
  lua_getfield(S, t, name);         /* the original becomes the wrapper's upvalue */
  lua_pushcclosure(S, wrapper, 1);
  lua_setfield(S, t, name);
}

static void slib_set(lua_State *S, int t, const char *name, lua_CFunction f) {
  if (f) lua_pushcfunction(S, f);
  else lua_pushnil(S);
  lua_setfield(S, t, name);
}

/* Runs in S, protected: opens the libraries and takes out what a script must not have. */
int slib_open(lua_State *S) {
  static const char *const base_removed[] = { "dofile", "loadfile", "collectgarbage", "print", "warn", NULL };
  static const char *const string_metered[] = {
    "char", "format", "lower", "upper", "reverse", "sub", "pack", "packsize", "unpack", NULL
  };
  static const char *const utf8_metered[] = { "char", "len", "offset", NULL };
  static const char *const math_metered[] = { "max", "min", NULL };

  luaL_requiref(S, LUA_GNAME, luaopen_base, 1);                     /* 1 */
  for (int i = 0; base_removed[i]; i++) slib_set(S, 1, base_removed[i], NULL);
  slib_wrap(S, 1, "load", slib_load);
  slib_wrap(S, 1, "tonumber", slib_metered);
  slib_wrap(S, 1, "xpcall", slib_xpcall);
  slib_wrap(S, 1, "select", slib_metered);
  slib_set(S, 1, "setmetatable", slib_setmetatable);

  luaL_requiref(S, LUA_STRLIBNAME, luaopen_string, 1);              /* 2, also the strings' __index */
  slib_set(S, 2, "dump", NULL);
  slib_set(S, 2, "find", pm_str_find);
  slib_set(S, 2, "match", pm_str_match);
  slib_set(S, 2, "gmatch", pm_str_gmatch);
  slib_set(S, 2, "gsub", pm_str_gsub);
  slib_wrap(S, 2, "rep", slib_rep);
  for (int i = 0; string_metered[i]; i++) slib_wrap(S, 2, string_metered[i], slib_metered);
  slib_wrap(S, 2, "byte", slib_metered_range);

  luaL_requiref(S, LUA_TABLIBNAME, luaopen_table, 1);               /* 3 */
  slib_wrap(S, 3, "concat", slib_concat);
  slib_wrap(S, 3, "unpack", slib_unpack);
  slib_wrap(S, 3, "move", slib_move);
  slib_wrap(S, 3, "sort", slib_sort);
  slib_wrap(S, 3, "pack", slib_metered);
  slib_set(S, 3, "insert", slib_insert);
  slib_set(S, 3, "remove", slib_remove);

  luaL_requiref(S, LUA_MATHLIBNAME, luaopen_math, 1);               /* 4 */
  for (int i = 0; math_metered[i]; i++) slib_wrap(S, 4, math_metered[i], slib_metered);

  luaL_requiref(S, LUA_UTF8LIBNAME, luaopen_utf8, 1);               /* 5 */
  for (int i = 0; utf8_metered[i]; i++) slib_wrap(S, 5, utf8_metered[i], slib_metered);
  slib_wrap(S, 5, "codepoint", slib_metered_range);

  luaL_requiref(S, LUA_OSLIBNAME, luaopen_os, 0);                   /* 6: not global */
  lua_createtable(S, 0, 3);                                         /* 7: the os a script sees */
  lua_getfield(S, 6, "time");
  lua_setfield(S, 7, "time");
  lua_getfield(S, 6, "clock");
  lua_setfield(S, 7, "clock");
  lua_getfield(S, 6, "date");
  lua_pushcclosure(S, slib_metered, 1);
  lua_setfield(S, 7, "date");
  lua_setglobal(S, "os");
  return 0;
}
