/* The sandbox (see sandbox.h): the userdata, its script's state, loads and calls,
 * and the texts of their errors. */

/* One untrusted script per lua_State, made here with the allocator of
 * sandbox_budget.c and the library of sandbox_lib.c. Values cross between the
 * host and the script only through the codec. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include "common/buf.h"
#include "common/cerror.h"
#include "common/options.h"
#include "common/codec.h"
#include "common/export.h"
#include "sandbox.h"
#include "sandbox_budget.h"
#include "sandbox_internal.h"
#include "sandbox_lib.h"
#include "sandbox_view.h"

enum {
  SBOX_OK, SBOX_E_SCRIPT, SBOX_E_BUDGET, SBOX_E_DEADLINE, SBOX_E_MEMORY, SBOX_E_SYNTAX,
  SBOX_E_DEFINITION, SBOX_E_NO_HANDLER
};
static const char *const sbox_codes[] = {
  "ok", "script_error", "budget_exceeded", "timeout", "memory_exceeded", "syntax_error",
  "bad_definition", "no_handler"
};

/* What a load or call is about, handed to the protected functions that run in S. */
typedef struct sbox_job {
  sbox *sb;
  const char *target;             /* handler or field name */
  size_t target_len;
  int field;                      /* definition[target] rather than definition[sb->handlers][target] */
  int with_view;
  int missing;                    /* no such handler */
  const char *source;             /* load */
  size_t source_len;
  const char *chunkname;
  int syntax;                     /* the chunk did not compile */
  int bad;                        /* the definition is unusable (detail says why) */
} sbox_job;

static char sbox_definition_key;  /* S's registry: the loaded definition */

/* ---- error texts ---- */

/* Copies s[0..len) into out (size bytes), cut with a note when too long. */
static void sbox_clip(char *out, size_t size, const char *s, size_t len) {
  if (len < size) {
    memcpy(out, s, len);
    out[len] = '\0';
    return;
  }
  char note[64];
  int nl = snprintf(note, sizeof note, "... (%zu bytes in all)", len);
  size_t keep = size - 1 - (size_t)nl;
  memcpy(out, s, keep);
  memcpy(out + keep, note, (size_t)nl + 1);
}

/* The text of an error value at idx of thread T (see sandbox_internal.h). */
void sbox_value_text(lua_State *T, int idx, char *out, size_t size) {
  int isnum;
  switch (lua_type(T, idx)) {
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(T, idx, &len);
      sbox_clip(out, size, s, len);
      return;
    }
    case LUA_TNUMBER: {
      lua_Integer i = lua_tointegerx(T, idx, &isnum);
      if (isnum) snprintf(out, size, "%lld", (long long)i);
      else snprintf(out, size, "%.14g", (double)lua_tonumber(T, idx));
      return;
    }
    default:
      snprintf(out, size, "(error object is a %s value)", luaL_typename(T, idx));
  }
}

/* Runs in S, protected: the text of an error table, from its raw `message`. */
static int sbox_p_table_message(lua_State *S) {
  sbox *sb = sbox_of(S);
  lua_pushliteral(S, "message");
  if (lua_rawget(S, 1) == LUA_TSTRING) sbox_value_text(S, -1, sb->detail, sizeof sb->detail);
  else snprintf(sb->detail, sizeof sb->detail, "(error object is a table value)");
  return 0;
}

/* Sets detail from the error value on top of T (popping it). */
static void sbox_error_detail(sbox *sb, lua_State *T) {
  lua_State *S = sb->S;
  if (lua_type(T, -1) == LUA_TTABLE && lua_checkstack(S, 3)) {
    lua_pushcfunction(S, sbox_p_table_message);
    lua_xmove(T, S, 1);
    if (lua_pcall(S, 1, 0, 0) != LUA_OK) {
      lua_pop(S, 1);
      snprintf(sb->detail, sizeof sb->detail, "(error object is a table value)");
    }
    return;
  }
  sbox_value_text(T, -1, sb->detail, sizeof sb->detail);
  lua_pop(T, 1);
}

/* ---- loads and calls ---- */

/* Runs in S, protected: a coroutine holding the handler and its arguments. */
static int sbox_p_prepare_call(lua_State *S) {
  sbox_job *job = lua_touserdata(S, 1);
  sbox *sb = job->sb;
  lua_State *co = lua_newthread(S);                                  /* 2 */
  lua_rawgetp(S, LUA_REGISTRYINDEX, &sbox_definition_key);           /* 3 */
  if (!job->field) {
    lua_pushstring(S, sb->handlers);
    if (lua_rawget(S, 3) != LUA_TTABLE) {
      job->missing = 1;
      return 0;
    }
    lua_replace(S, 3);
  }
  lua_pushlstring(S, job->target, job->target_len);
  if (lua_rawget(S, 3) == LUA_TNIL) {                                /* 4: the function */
    job->missing = 1;
    return 0;
  }
  int nargs = 1;
  if (job->with_view) {
    view_push(S, sb);
    nargs++;
  }
  const char *why;
  if (!codec_decode(S, sb->buf.data, sb->buf.len, &why))
    return luaL_error(S, "cannot copy the event in: %s", why);
  lua_xmove(S, co, nargs + 1);
  lua_pushvalue(S, 2);
  return 1;
}

/* Runs in S, protected: a coroutine holding the compiled chunk (or the syntax error). */
static int sbox_p_prepare_load(lua_State *S) {
  sbox_job *job = lua_touserdata(S, 1);
  lua_State *co = lua_newthread(S);                                  /* 2 */
  if (luaL_loadbufferx(S, job->source, job->source_len, job->chunkname, "t") != LUA_OK) {
    job->syntax = 1;
    return 1;                       /* the message */
  }
  lua_xmove(S, co, 1);
  return 1;
}

/* Runs in S, protected: encodes the value at 2 into buf (a call's result). */
static int sbox_p_encode(lua_State *S) {
  sbox_job *job = lua_touserdata(S, 1);
  job->sb->buf.len = 0;
  codec_encode_capped(S, 2, &job->sb->buf, "result", &job->sb->out);
  return 0;
}

typedef struct sbox_name {
  const char *s;
  size_t len;
} sbox_name;

static int sbox_name_cmp(const void *a, const void *b) {
  const sbox_name *x = a, *y = b;
  int c = memcmp(x->s, y->s, x->len < y->len ? x->len : y->len);
  return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* Runs in S, protected: checks the definition at 2, stores it, and encodes
 * its description (scalar fields, `from`, the sorted names in its handlers
 * field, under that field's name) into buf. */
static int sbox_p_define(lua_State *S) {
  sbox_job *job = lua_touserdata(S, 1);
  sbox *sb = job->sb;
  if (lua_type(S, 2) != LUA_TTABLE) {
    job->bad = 1;
    snprintf(sb->detail, sizeof sb->detail, "the script must return a definition table, got %s",
             luaL_typename(S, 2));
    return 0;
  }
  lua_pushstring(S, sb->handlers);
  int ht = lua_rawget(S, 2);                                         /* 3 */
  if (ht != LUA_TNIL && ht != LUA_TTABLE) {
    job->bad = 1;
    snprintf(sb->detail, sizeof sb->detail, "'%s' must be a table of functions, got %s", sb->handlers,
             lua_typename(S, ht));
    return 0;
  }
  lua_newtable(S);                                                   /* 4: the description */
  lua_pushnil(S);
  while (lua_next(S, 2)) {
    int vt = lua_type(S, -1);
    if (lua_type(S, -2) == LUA_TSTRING && (vt == LUA_TSTRING || vt == LUA_TNUMBER || vt == LUA_TBOOLEAN)) {
      lua_pushvalue(S, -2);
      lua_insert(S, -2);
      lua_rawset(S, 4);
    } else {
      lua_pop(S, 1);
    }
  }
  lua_pushliteral(S, "from");
  lua_pushliteral(S, "from");
  lua_rawget(S, 2);
  lua_rawset(S, 4);
  size_t n = 0;
  if (ht == LUA_TTABLE) {
    lua_pushnil(S);
    while (lua_next(S, 3)) {
      lua_pop(S, 1);
      if (lua_type(S, -1) == LUA_TSTRING) n++;
    }
  }
  sbox_name *names = lua_newuserdatauv(S, (n ? n : 1) * sizeof *names, 0);   /* 5 */
  size_t i = 0;
  if (ht == LUA_TTABLE) {
    lua_pushnil(S);
    while (lua_next(S, 3)) {
      lua_pop(S, 1);
      if (lua_type(S, -1) == LUA_TSTRING) {
        names[i].s = lua_tolstring(S, -1, &names[i].len);   /* kept alive by the handlers table */
        i++;
      }
    }
  }
  qsort(names, n, sizeof *names, sbox_name_cmp);
  lua_pushstring(S, sb->handlers);
  lua_createtable(S, n > INT_MAX ? 0 : (int)n, 0);
  for (i = 0; i < n; i++) {
    lua_pushlstring(S, names[i].s, names[i].len);
    lua_rawseti(S, -2, (lua_Integer)i + 1);
  }
  lua_rawset(S, 4);
  sb->buf.len = 0;
  codec_encode_capped(S, 4, &sb->buf, "definition", &sb->out);
  lua_pushvalue(S, 2);
  lua_rawsetp(S, LUA_REGISTRYINDEX, &sbox_definition_key);
  return 0;
}

/* Budgets and bookkeeping for a new load or call from host thread L. */
static void sbox_begin(sbox *sb, lua_State *L, int with_view) {
  sb->busy = 1;
  sb->running = 0;
  budget_start(sb);
  sb->host = L;
  sb->has_view = with_view;
  sb->serial++;
  sb->update_serial = 0;
  sb->calls++;
  sb->detail[0] = '\0';
  sb->where[0] = '\0';
  sb->out.room = sb->limit;
  sb->out.over = 0;
  sb->out.message = sb->out_message;
}

static void sbox_end(sbox *sb) {
  sb->last_instructions = sb->instructions - (sb->left > 0 ? sb->left : 0);
  sb->last_copied = sb->limit - sb->out.room;
  sb->busy = 0;
  sb->running = 0;
  sb->co = NULL;
  sb->host = NULL;
  sb->has_view = 0;
  lua_settop(sb->S, 0);
}

/* The outcome of a protected function in S that failed with status st. */
static int sbox_protected_failure(sbox *sb, int st, const char *what) {
  if (st == LUA_ERRMEM || (sb->oom && !sb->out.over)) {
    snprintf(sb->detail, sizeof sb->detail, "memory budget of %zu bytes exceeded (%s)", sb->limit, what);
    lua_settop(sb->S, 0);
    return SBOX_E_MEMORY;
  }
  char text[SANDBOX_MAX_MESSAGE + 1];
  sbox_value_text(sb->S, -1, text, sizeof text);
  snprintf(sb->detail, sizeof sb->detail, "%.60s: %s", what, text);
  lua_settop(sb->S, 0);
  return sb->out.over ? SBOX_E_MEMORY : SBOX_E_SCRIPT;
}

/* Whether the error text that ended a script is a memory error it did not
 * recover from: Lua's own, one of the library's refusals, or the cap on what
 * a call copies out, raised again. A script that recovered from a memory
 * error with pcall and then failed otherwise failed with its own error. */
static int sbox_memory_error(sbox *sb, lua_State *co, int st) {
  if (st == LUA_ERRMEM) return 1;
  if (lua_type(co, -1) != LUA_TSTRING) return 0;
  const char *text = lua_tostring(co, -1);   /* a string already: nothing allocated */
  if (sb->oom && strstr(text, "not enough memory")) return 1;
  return sb->out.over && strstr(text, sb->out_message) != NULL;
}

/* The outcome of a resume that stopped, failed or finished over budget. */
static int sbox_run_failure(sbox *sb, lua_State *co, int st) {
  if (sb->stop) {
    int n = sb->stop == SBOX_DEADLINE
      ? snprintf(sb->detail, sizeof sb->detail, "deadline of %lld ms exceeded", (long long)sb->time_ms)
      : snprintf(sb->detail, sizeof sb->detail, "instruction budget of %lld exceeded", (long long)sb->instructions);
    if (sb->where[0]) snprintf(sb->detail + n, sizeof sb->detail - (size_t)n, " at %s", sb->where);
    return sb->stop == SBOX_DEADLINE ? SBOX_E_DEADLINE : SBOX_E_BUDGET;
  }
  if (st == LUA_YIELD) {
    snprintf(sb->detail, sizeof sb->detail, "the script yielded");
    return SBOX_E_SCRIPT;
  }
  int memory = sbox_memory_error(sb, co, st);
  sbox_error_detail(sb, co);        /* the error value that ended the script */
  if (!memory) return SBOX_E_SCRIPT;
  if (sb->out.over && strstr(sb->detail, sb->out_message)) return SBOX_E_MEMORY;   /* says it all */
  char text[sizeof sb->detail];
  memcpy(text, sb->detail, sizeof text);
  if (strcmp(text, "not enough memory") == 0)
    snprintf(sb->detail, sizeof sb->detail, "memory budget of %zu bytes exceeded", sb->limit);
  else
    snprintf(sb->detail, sizeof sb->detail, "memory budget of %zu bytes exceeded: %.*s", sb->limit,
             SANDBOX_MAX_MESSAGE, text);
  return SBOX_E_MEMORY;
}

/* A call: the handler's first result ends up encoded in buf. No host error
 * can escape from here (view callbacks run their host side protected). */
static int sbox_run_call(sbox *sb, sbox_job *job) {
  lua_State *S = sb->S;
  lua_settop(S, 0);
  lua_pushcfunction(S, sbox_p_prepare_call);
  lua_pushlightuserdata(S, job);
  int st = lua_pcall(S, 1, 1, 0);
  if (st != LUA_OK) return sbox_protected_failure(sb, st, "copying the event in");
  if (job->missing) {
    snprintf(sb->detail, sizeof sb->detail, "no %s '%.*s'", job->field ? "field" : "handler",
             (int)(job->target_len > 200 ? 200 : job->target_len), job->target);
    return SBOX_E_NO_HANDLER;
  }
  lua_State *co = lua_tothread(S, 1);
  int nres;
  st = budget_resume(sb, co, &nres);
  if (sb->stop || st != LUA_OK) return sbox_run_failure(sb, co, st);
  sb->oom = 0;                      /* the script may have survived a memory error; this step is judged alone */
  lua_pushcfunction(S, sbox_p_encode);
  lua_pushlightuserdata(S, job);
  if (nres > 0) {
    lua_pop(co, nres - 1);
    lua_xmove(co, S, 1);
  } else {
    lua_pushnil(S);
  }
  st = lua_pcall(S, 2, 0, 0);
  if (st != LUA_OK) return sbox_protected_failure(sb, st, "copying the result out");
  return SBOX_OK;
}

/* A load: the description ends up encoded in buf. */
static int sbox_run_load(sbox *sb, sbox_job *job) {
  lua_State *S = sb->S;
  lua_settop(S, 0);
  lua_pushcfunction(S, sbox_p_prepare_load);
  lua_pushlightuserdata(S, job);
  int st = lua_pcall(S, 1, 1, 0);
  if (st != LUA_OK) return sbox_protected_failure(sb, st, "compiling");
  if (job->syntax) {
    sbox_value_text(S, -1, sb->detail, sizeof sb->detail);
    return SBOX_E_SYNTAX;
  }
  lua_State *co = lua_tothread(S, 1);
  int nres;
  st = budget_resume(sb, co, &nres);
  if (sb->stop || st != LUA_OK) return sbox_run_failure(sb, co, st);
  if (nres == 0) {
    snprintf(sb->detail, sizeof sb->detail, "the script must return a definition table, got nothing");
    return SBOX_E_DEFINITION;
  }
  sb->oom = 0;
  lua_pushcfunction(S, sbox_p_define);
  lua_pushlightuserdata(S, job);
  lua_pop(co, nres - 1);
  lua_xmove(co, S, 1);
  st = lua_pcall(S, 2, 0, 0);
  if (st != LUA_OK) {
    int outcome = sbox_protected_failure(sb, st, "describing the definition");
    return outcome == SBOX_E_SCRIPT ? SBOX_E_DEFINITION : outcome;
  }
  return job->bad ? SBOX_E_DEFINITION : SBOX_OK;
}

/* ---- the userdata ---- */

static sbox *sbox_check(lua_State *L, int idx) {
  sbox *sb = luaL_checkudata(L, idx, SANDBOX_MT);
  if (sb->S == NULL) luaL_error(L, "attempt to use a closed sandbox");
  if (sb->busy) luaL_error(L, "sandbox '%s' is busy (called again from inside its own call)", sb->name);
  return sb;
}

static void sbox_release(sbox *sb) {
  if (sb->S) {
    lua_State *S = sb->S;
    sb->S = NULL;                   /* closed before closing: a second close is a no-op */
    lua_close(S);
  }
  buf_free(&sb->buf);
}

static int sbox_close(lua_State *L) {
  sbox *sb = luaL_checkudata(L, 1, SANDBOX_MT);
  if (sb->busy) return luaL_error(L, "sandbox '%s' cannot be closed during its own call", sb->name);
  sbox_release(sb);
  return 0;
}

static int sbox_tostring(lua_State *L) {
  sbox *sb = luaL_checkudata(L, 1, SANDBOX_MT);
  lua_pushfstring(L, "chronicle sandbox (%s%s)", sb->name, sb->S ? "" : ", closed");
  return 1;
}

static int sbox_panic(lua_State *S) {
  const char *msg = lua_type(S, -1) == LUA_TSTRING ? lua_tostring(S, -1) : "?";
  fprintf(stderr, "chronicle sandbox: unprotected error in the script's state: %s\n", msg);
  return 0;                         /* Lua aborts */
}

static lua_Integer sbox_opt_integer(lua_State *L, const char *key, lua_Integer dflt, lua_Integer min) {
  lua_getfield(L, 1, key);
  lua_Integer v = dflt;
  if (!lua_isnil(L, -1)) {
    int ok;
    v = lua_tointegerx(L, -1, &ok);
    if (!ok || v < min) luaL_error(L, "sandbox_new: option '%s' must be an integer >= %I", key, min);
  }
  lua_pop(L, 1);
  return v;
}

/* A name of at most SANDBOX_MAX_METHOD_NAME bytes, without NUL, copied into out. */
static void sbox_opt_name(lua_State *L, int idx, char *out, const char *what) {
  size_t len;
  const char *s = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &len) : NULL;
  if (s == NULL || len == 0 || len > SANDBOX_MAX_METHOD_NAME || strlen(s) != len)
    luaL_error(L, "sandbox_new: %s must be a string of 1 to %d bytes", what, SANDBOX_MAX_METHOD_NAME);
  memcpy(out, s, len + 1);
}

/* Option `proxy`: a list of {name, kind}, kind "key", "value" or "function" (what
 * the method hands the host besides its key); n set to how many. */
static void sbox_opt_proxy(lua_State *L, proxy_method *methods, int *n) {
  static const char *const kinds[] = { "key", "value", "function", NULL };
  *n = 0;
  if (lua_getfield(L, 1, "proxy") == LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  int list = lua_gettop(L);
  lua_Integer len = (lua_Integer)lua_rawlen(L, list);
  if (len > SANDBOX_MAX_METHODS) luaL_error(L, "sandbox_new: option 'proxy' may name at most %d methods", SANDBOX_MAX_METHODS);
  for (lua_Integer i = 1; i <= len; i++) {
    if (lua_rawgeti(L, list, i) != LUA_TTABLE)
      luaL_error(L, "sandbox_new: option 'proxy' must be a list of {name, kind}");
    lua_rawgeti(L, -1, 1);
    sbox_opt_name(L, -1, methods[*n].name, "a proxy method's name");
    lua_rawgeti(L, -2, 2);
    const char *kind = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
    int k = 0;
    while (kinds[k] && strcmp(kinds[k], kind) != 0) k++;
    if (!kinds[k]) luaL_error(L, "sandbox_new: proxy method '%s': kind must be \"key\", \"value\" or \"function\"", methods[*n].name);
    methods[*n].kind = k;
    for (int j = 0; j < *n; j++)
      if (strcmp(methods[j].name, methods[*n].name) == 0)
        luaL_error(L, "sandbox_new: proxy method '%s' is named twice", methods[*n].name);
    (*n)++;
    lua_pop(L, 3);
  }
  lua_pop(L, 1);
}

/* sandbox.new{memory=, instructions=, time_ms=, name=, handlers=, proxy=} -> sandbox */
static int sbox_new(lua_State *L) {
  static const opt_spec options[] = {
    { "memory", OPT_INTEGER }, { "instructions", OPT_INTEGER }, { "time_ms", OPT_INTEGER }, { "name", OPT_STRING },
    { "handlers", OPT_STRING }, { "proxy", OPT_TABLE }, { NULL, 0 }
  };
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  opt_check(L, 1, "sandbox_new", options);
  lua_Integer memory = sbox_opt_integer(L, "memory", SANDBOX_DEFAULT_MEMORY, SANDBOX_MIN_MEMORY);
  lua_Integer instructions = sbox_opt_integer(L, "instructions", SANDBOX_DEFAULT_INSTRUCTIONS, 1);
  lua_Integer time_ms = sbox_opt_integer(L, "time_ms", SANDBOX_DEFAULT_TIME_MS, 1);
  if (time_ms > 365LL * 24 * 3600 * 1000) luaL_error(L, "sandbox_new: option 'time_ms' is too large");
  char handlers[SANDBOX_MAX_METHOD_NAME + 1] = "handlers";
  lua_getfield(L, 1, "handlers");
  if (!lua_isnil(L, -1)) sbox_opt_name(L, -1, handlers, "option 'handlers'");
  lua_pop(L, 1);
  proxy_method methods[SANDBOX_MAX_METHODS];
  int nmethods;
  sbox_opt_proxy(L, methods, &nmethods);
  lua_getfield(L, 1, "name");
  size_t nlen = 0;
  const char *name = "sandbox";
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "sandbox_new: option 'name' must be a string");
    name = lua_tolstring(L, -1, &nlen);
  } else {
    nlen = strlen(name);
  }

  /* The handle exists, closed, before the state: nothing leaks if this allocation fails. */
  sbox *sb = lua_newuserdatauv(L, sizeof *sb, 0);
  memset(sb, 0, sizeof *sb);
  luaL_setmetatable(L, SANDBOX_MT);
  buf_init(&sb->buf);
  sb->limit = (size_t)memory;
  sb->instructions = instructions;
  sb->time_ms = time_ms;
  memcpy(sb->handlers, handlers, sizeof handlers);
  memcpy(sb->methods, methods, (size_t)nmethods * sizeof *methods);
  sb->nmethods = nmethods;
  snprintf(sb->out_message, sizeof sb->out_message,
           "too large: one load or call may copy at most %zu bytes of values out of the sandbox (its memory budget)",
           sb->limit);
  if (nlen > SANDBOX_MAX_NAME) {
    memcpy(sb->name, name, SANDBOX_MAX_NAME);
    memcpy(sb->name + SANDBOX_MAX_NAME, "...", 4);
  } else {
    memcpy(sb->name, name, nlen);
    sb->name[nlen] = '\0';
  }
  sb->S = lua_newstate(budget_alloc, sb);
  if (sb->S == NULL) return luaL_error(L, "sandbox_new: cannot create a Lua state");
  lua_atpanic(sb->S, sbox_panic);
  lua_pushcfunction(sb->S, slib_open);
  if (lua_pcall(sb->S, 0, 0, 0) != LUA_OK) {
    sbox_release(sb);
    return luaL_error(L, "sandbox_new: cannot set up the libraries within %I bytes", memory);
  }
  return 1;
}

/* Pushes nil and an error {code, message, script, handler} for an outcome. */
static int sbox_fail(lua_State *L, sbox *sb, int outcome, const char *context) {
  lua_pushnil(L);
  cerr_new(L, sbox_codes[outcome], "%s: %s: %s", sb->name, context, sb->detail);
  lua_pushstring(L, sb->name);
  lua_setfield(L, -2, "script");
  return 2;
}

/* sb:load(source [, chunkname]) -> description | nil, err */
static int sbox_load(lua_State *L) {
  sbox *sb = sbox_check(L, 1);
  sbox_job job;
  memset(&job, 0, sizeof job);
  job.sb = sb;
  job.source = luaL_checklstring(L, 2, &job.source_len);
  if (lua_isnoneornil(L, 3)) {
    lua_settop(L, 2);
    lua_pushfstring(L, "=%s", sb->name);
  }
  job.chunkname = luaL_checkstring(L, 3);
  lua_settop(L, 3);
  sbox_begin(sb, L, 0);
  int outcome = sbox_run_load(sb, &job);
  sbox_end(sb);
  if (outcome != SBOX_OK) return sbox_fail(L, sb, outcome, "load");
  sb->loaded = 1;
  const char *why;
  if (!codec_decode(L, sb->buf.data, sb->buf.len, &why))
    return luaL_error(L, "sandbox: cannot copy the description out: %s", why);
  return 1;
}

/* Appends a short description of the event at idx (type, stream, position) to the context. */
static void sbox_push_context(lua_State *L, const char *what, const char *target, int event_idx) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  lua_pushfstring(L, "%s '%s'", what, target);
  luaL_addvalue(&b);
  if (lua_type(L, event_idx) == LUA_TTABLE) {
    static const char *const keys[] = { "type", "stream", "version", "position" };
    int any = 0;
    for (int i = 0; i < 4; i++) {
      lua_pushstring(L, keys[i]);
      int t = lua_rawget(L, event_idx);
      if (t == LUA_TSTRING || (t == LUA_TNUMBER && lua_isinteger(L, -1))) {
        size_t len;
        const char *v = lua_tolstring(L, -1, &len);
        lua_pushfstring(L, "%s%s=%s", any ? ", " : " (event ", keys[i], len > 100 ? "..." : v);
        lua_remove(L, -2);
        luaL_addvalue(&b);
        any = 1;
      } else {
        lua_pop(L, 1);
      }
    }
    if (any) luaL_addchar(&b, ')');
  }
  luaL_pushresult(&b);
}

static int sbox_do_call(lua_State *L, int field) {
  sbox *sb = sbox_check(L, 1);
  sbox_job job;
  memset(&job, 0, sizeof job);
  job.sb = sb;
  job.field = field;
  job.target = luaL_checklstring(L, 2, &job.target_len);
  if (!sb->loaded) return luaL_error(L, "sandbox '%s': nothing is loaded (call load first)", sb->name);
  int vt = lua_type(L, 4);
  job.with_view = vt != LUA_TNONE && vt != LUA_TNIL;
  luaL_argexpected(L, !job.with_view || vt == LUA_TTABLE || vt == LUA_TUSERDATA, 4, "view object");
  lua_settop(L, 4);
  sb->buf.len = 0;
  codec_encode(L, 3, &sb->buf, field ? "value" : "event");   /* misuse raises here, before the sandbox runs */
  /* What the view callbacks find in the host: {sandbox, view}. */
  lua_createtable(L, 2, 0);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, 1);
  lua_pushvalue(L, 4);
  lua_rawseti(L, -2, 2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, sb);
  sbox_begin(sb, L, job.with_view);
  int outcome = sbox_run_call(sb, &job);
  sbox_end(sb);
  lua_pushnil(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, sb);
  if (outcome != SBOX_OK) {
    sbox_push_context(L, field ? "field" : "handler", job.target, 3);
    int n = sbox_fail(L, sb, outcome, lua_tostring(L, 5));
    lua_pushvalue(L, 2);
    lua_setfield(L, -2, "handler");
    return n;
  }
  const char *why;
  if (!codec_decode(L, sb->buf.data, sb->buf.len, &why))
    return luaL_error(L, "sandbox: cannot copy the result out: %s", why);
  return 1;
}

/* sb:call(handler, event [, view]) -> result | nil, err */
static int sbox_call(lua_State *L) { return sbox_do_call(L, 0); }

/* sb:call_field(name, value [, view]) -> result | nil, err: definition[name] instead of a handler */
static int sbox_call_field(lua_State *L) { return sbox_do_call(L, 1); }

/* sb:copied() -> bytes the last load or call copied out to the host (counted as codec_cap counts) */
static int sbox_copied(lua_State *L) {
  sbox *sb = sbox_check(L, 1);
  lua_pushinteger(L, (lua_Integer)sb->last_copied);
  return 1;
}

/* sb:stats() -> {memory=, memory_limit=, instructions=, calls=} */
static int sbox_stats(lua_State *L) {
  sbox *sb = sbox_check(L, 1);
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, (lua_Integer)sb->used);
  lua_setfield(L, -2, "memory");
  lua_pushinteger(L, (lua_Integer)sb->limit);
  lua_setfield(L, -2, "memory_limit");
  lua_pushinteger(L, sb->last_instructions);
  lua_setfield(L, -2, "instructions");
  lua_pushinteger(L, sb->calls);
  lua_setfield(L, -2, "calls");
  return 1;
}

static const luaL_Reg sbox_methods[] = {
  { "load", sbox_load },
  { "call", sbox_call },
  { "call_field", sbox_call_field },
  { "stats", sbox_stats },
  { "copied", sbox_copied },
  { "close", sbox_close },
  { NULL, NULL }
};

static const luaL_Reg sbox_metamethods[] = {
  { "__gc", sbox_close },
  { "__close", sbox_close },
  { "__tostring", sbox_tostring },
  { NULL, NULL }
};

CHRONICLE_EXPORT int luaopen_chronicle_sandbox(lua_State *L);

/* chronicle.sandbox: new(opts), LIMITS, and error/is_error as every module has
 * (its errors share the one error metatable); no LMDB, no libpq. */
int luaopen_chronicle_sandbox(lua_State *L) {
  luaL_newmetatable(L, SANDBOX_MT);
  luaL_setfuncs(L, sbox_metamethods, 0);
  luaL_newlib(L, sbox_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_newtable(L);
  cerr_open(L);
  lua_pushcfunction(L, sbox_new);
  lua_setfield(L, -2, "new");
  lua_createtable(L, 0, 8);
  lua_pushinteger(L, SANDBOX_DEFAULT_MEMORY);
  lua_setfield(L, -2, "memory");
  lua_pushinteger(L, SANDBOX_DEFAULT_INSTRUCTIONS);
  lua_setfield(L, -2, "instructions");
  lua_pushinteger(L, SANDBOX_DEFAULT_TIME_MS);
  lua_setfield(L, -2, "time_ms");
  lua_pushinteger(L, SANDBOX_MIN_MEMORY);
  lua_setfield(L, -2, "min_memory");
  lua_pushinteger(L, SANDBOX_MAX_PATTERN);
  lua_setfield(L, -2, "max_pattern");
  lua_pushinteger(L, SANDBOX_BYTES_PER_STEP);
  lua_setfield(L, -2, "bytes_per_step");
  lua_pushinteger(L, SANDBOX_MAX_MESSAGE);
  lua_setfield(L, -2, "max_message");
  lua_setfield(L, -2, "LIMITS");
  return 1;
}
