/* Options tables: see options.h. */
#include <string.h>
#include <lauxlib.h>
#include "options.h"

static int opt_fits(lua_State *L, int idx, unsigned types) {
  switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN: return (types & OPT_BOOLEAN) != 0;
    case LUA_TNUMBER: {
      int exact;
      lua_tointegerx(L, idx, &exact);
      return (types & OPT_NUMBER) || ((types & OPT_INTEGER) && exact);
    }
    case LUA_TSTRING: return (types & OPT_STRING) != 0;
    case LUA_TTABLE: return (types & OPT_TABLE) != 0;
    case LUA_TFUNCTION: return (types & OPT_FUNCTION) != 0;
    default: return types == OPT_ANY;
  }
}

/* Pushes "a boolean or a string" for a set of types. */
static void opt_push_types(lua_State *L, unsigned types) {
  static const struct { unsigned bit; const char *name; } names[] = {
    { OPT_BOOLEAN, "a boolean" }, { OPT_NUMBER, "a number" }, { OPT_INTEGER, "an integer" },
    { OPT_STRING, "a string" }, { OPT_TABLE, "a table" }, { OPT_FUNCTION, "a function" },
  };
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  int n = 0;
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    if (!(types & names[i].bit)) continue;
    if (names[i].bit == OPT_INTEGER && (types & OPT_NUMBER)) continue;
    if (n++) luaL_addstring(&b, " or ");
    luaL_addstring(&b, names[i].name);
  }
  luaL_pushresult(&b);
}

int opt_check(lua_State *L, int idx, const char *fn, const opt_spec *specs) {
  if (lua_isnoneornil(L, idx)) return 0;
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx)) luaL_error(L, "%s: options must be a table, got %s", fn, luaL_typename(L, idx));
  luaL_checkstack(L, 6, fn);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    const opt_spec *spec = NULL;
    if (lua_type(L, -2) == LUA_TSTRING)
      for (const opt_spec *s = specs; s->name && !spec; s++)
        if (strcmp(s->name, lua_tostring(L, -2)) == 0) spec = s;
    if (spec == NULL) {
      lua_pop(L, 1);                                   /* the value: the key is on top */
      const char *key = luaL_tolstring(L, -1, NULL);
      luaL_Buffer b;
      luaL_buffinit(L, &b);
      for (const opt_spec *s = specs; s->name; s++) {
        if (s != specs) luaL_addstring(&b, ", ");
        luaL_addstring(&b, s->name);
      }
      luaL_pushresult(&b);
      luaL_error(L, "%s: unknown option '%s' (allowed: %s)", fn, key, lua_tostring(L, -1));
    }
    if (!opt_fits(L, -1, spec->types)) {
      int is_number = lua_type(L, -1) == LUA_TNUMBER;
      const char *got = is_number ? luaL_tolstring(L, -1, NULL) : luaL_typename(L, -1);
      opt_push_types(L, spec->types);
      luaL_error(L, "%s: option '%s' must be %s, got %s%s", fn, spec->name, lua_tostring(L, -1),
                 is_number ? "number " : "", got);
    }
    lua_pop(L, 1);
  }
  return idx;
}

/* The function option `name` of a checked options table: pushed (index returned), or 0. */
static int opt_push_function(lua_State *L, int idx, const char *name) {
  if (lua_getfield(L, idx, name) == LUA_TNIL) {
    lua_pop(L, 1);
    return 0;
  }
  return lua_gettop(L);      /* opt_check saw that it is a function */
}

int opt_verify(lua_State *L, int idx, lua_Integer *max_problems) {
  static const opt_spec specs[] = { { "max_problems", OPT_INTEGER }, { "progress", OPT_FUNCTION }, { NULL, 0 } };
  *max_problems = 100;
  if (!(idx = opt_check(L, idx, "verify", specs))) return 0;
  int progress = opt_push_function(L, idx, "progress");
  if (lua_getfield(L, idx, "max_problems") != LUA_TNIL) {
    *max_problems = lua_tointeger(L, -1);    /* an exact integer (opt_check) */
    if (*max_problems < 1) luaL_error(L, "verify: option 'max_problems' must be an integer >= 1");
  }
  lua_pop(L, 1);
  return progress;
}

int opt_backup(lua_State *L, int idx) {
  static const opt_spec specs[] = { { "progress", OPT_FUNCTION }, { NULL, 0 } };
  if (!(idx = opt_check(L, idx, "backup", specs))) return 0;
  return opt_push_function(L, idx, "progress");
}

int opt_write(lua_State *L, int idx) {
  static const opt_spec specs[] = {
    { "appends", OPT_TABLE }, { "checks", OPT_TABLE }, { "clears", OPT_TABLE }, { "deletes", OPT_TABLE },
    { "puts", OPT_TABLE }, { "dry_run", OPT_BOOLEAN }, { "seal", OPT_ANY }, { NULL, 0 }
  };
  if (!(idx = opt_check(L, idx, "write", specs))) return 0;
  lua_getfield(L, idx, "dry_run");
  int dry_run = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return dry_run;
}

/* The reads' options tables (options.h), one list for every backend. */
const opt_spec opt_read_spec[] = {
  { "from", OPT_INTEGER }, { "to", OPT_INTEGER }, { "count", OPT_INTEGER }, { "backward", OPT_BOOLEAN },
  { "until_position", OPT_INTEGER }, { "until_time", OPT_INTEGER }, { "fields", OPT_TABLE }, { NULL, 0 }
};
const opt_spec opt_read_all_spec[] = {
  { "from", OPT_INTEGER }, { "to", OPT_INTEGER }, { "count", OPT_INTEGER }, { "backward", OPT_BOOLEAN },
  { "category", OPT_STRING }, { "types", OPT_STRING | OPT_TABLE }, { "until_time", OPT_INTEGER }, { "fields", OPT_TABLE },
  { "hidden", OPT_BOOLEAN }, { NULL, 0 }
};
const opt_spec opt_fold_spec[] = {
  { "stream", OPT_STRING }, { "from", OPT_INTEGER }, { "to", OPT_INTEGER }, { "count", OPT_INTEGER },
  { "backward", OPT_BOOLEAN }, { "category", OPT_STRING }, { "types", OPT_STRING | OPT_TABLE },
  { "until_position", OPT_INTEGER }, { "until_time", OPT_INTEGER }, { "fields", OPT_TABLE },
  { "spread", OPT_BOOLEAN }, { NULL, 0 }
};
const opt_spec opt_streams_spec[] = {
  { "prefix", OPT_STRING }, { "after", OPT_STRING }, { "count", OPT_INTEGER }, { NULL, 0 }
};
const opt_spec opt_kv_scan_spec[] = {      /* prefix, from, to: the backend checks them as keys */
  { "prefix", OPT_ANY }, { "from", OPT_ANY }, { "to", OPT_ANY }, { "count", OPT_INTEGER },
  { "backward", OPT_BOOLEAN }, { NULL, 0 }
};

lua_Integer opt_integer(lua_State *L, int opts, const char *fn, const char *name, lua_Integer dflt,
                        lua_Integer min) {
  if (opts == 0) return dflt;
  lua_getfield(L, opts, name);
  lua_Integer v = dflt;
  if (!lua_isnil(L, -1)) {
    int ok;
    v = lua_tointegerx(L, -1, &ok);
    if (!ok || lua_type(L, -1) != LUA_TNUMBER || v < min)
      luaL_error(L, "%s: option '%s' must be an integer >= %I", fn, name, min);
  }
  lua_pop(L, 1);
  return v;
}
