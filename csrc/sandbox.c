/* The sandbox (see sandbox.h): one untrusted script per lua_State, made here
 * with an allocator that enforces a memory budget. Each load or call runs in a
 * fresh coroutine under a count hook that charges an instruction budget and
 * checks a wall-clock deadline; when either runs out the hook yields, and a
 * yield passes through the script's pcall, so the script cannot swallow the
 * stop. Values cross between the host and the script only through the codec.
 *
 * The C library functions a script can reach are the other way to burn time:
 * the count hook never fires inside them. So the pattern functions are our
 * own matcher that counts its steps against the instruction budget, and the
 * others pay for the bytes or elements they will touch before they run. */
#include <ctype.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <lauxlib.h>
#include <lualib.h>
#include "buf.h"
#include "cerror.h"
#include "codec.h"
#include "sandbox.h"

#define SBOX_TICK 1000                /* instructions between two runs of the count hook */
#define SBOX_CLOCK_EVERY (64 << 10)   /* bytes allocated in a call between two looks at the clock */
#define SBOX_PM_CHUNK 1024            /* matching steps charged at a time */

enum { SBOX_RUNNING = 0, SBOX_BUDGET, SBOX_DEADLINE };

enum {
  SBOX_OK, SBOX_E_SCRIPT, SBOX_E_BUDGET, SBOX_E_DEADLINE, SBOX_E_MEMORY, SBOX_E_SYNTAX,
  SBOX_E_DEFINITION, SBOX_E_NO_HANDLER
};
static const char *const sbox_codes[] = {
  "ok", "script_error", "budget_exceeded", "timeout", "memory_exceeded", "syntax_error",
  "bad_definition", "no_handler"
};

enum { SBOX_GET, SBOX_PUT, SBOX_UPDATE, SBOX_DELETE };
static const char *const sbox_view_names[] = { "get", "put", "update", "delete" };

typedef struct sbox {
  lua_State *S;                   /* the script's state; NULL once closed */
  size_t used, limit;             /* bytes allocated in S, and the budget */
  lua_Integer instructions;       /* budget per call */
  lua_Integer time_ms;            /* deadline per call */
  char name[SANDBOX_MAX_NAME + 4];
  int loaded;                     /* a definition is stored */
  int busy;                       /* a load or call is under way: no re-entry, no close */
  /* during a load or call */
  int running;                    /* script code may be executing (inside lua_resume) */
  int stop;                       /* SBOX_BUDGET or SBOX_DEADLINE once the call must end */
  int oom;                        /* an allocation was refused */
  lua_Integer left;               /* instructions left */
  int tick;                       /* the count hook's current period */
  uint64_t deadline;              /* CLOCK_MONOTONIC, ns */
  size_t alloc_since_clock;
  lua_Integer charged_since_clock;
  lua_State *co;                  /* the call's coroutine */
  lua_State *host;                /* the caller's thread, for view callbacks */
  int has_view;
  lua_Integer serial;             /* call number: view proxies of other calls refuse */
  lua_Integer update_serial;      /* the view:update whose bridge may run now (0: none) */
  lua_Integer update_counter;
  lua_Integer calls;
  lua_Integer last_instructions;
  buf buf;                        /* encoded values on their way across */
  char where[96];                  /* chunk:line where the call was stopped */
  char detail[SANDBOX_MAX_MESSAGE + 96];   /* why the last load or call failed */
} sbox;

/* What a load or call is about, handed to the protected functions that run in S. */
typedef struct sbox_job {
  sbox *sb;
  const char *target;             /* handler or field name */
  size_t target_len;
  int field;                      /* definition[target] rather than definition.handlers[target] */
  int with_view;
  int missing;                    /* no such handler */
  const char *source;             /* load */
  size_t source_len;
  const char *chunkname;
  int syntax;                     /* the chunk did not compile */
  int bad;                        /* the definition is unusable (detail says why) */
} sbox_job;

/* A view callback on its way to the host. */
typedef struct sbox_hostcall {
  sbox *sb;
  int method;
  size_t key_len;                 /* buf holds the key, then (put) the value */
  lua_Integer update_serial;
} sbox_hostcall;

static char sbox_definition_key;  /* S's registry: the loaded definition */

/* ---- budgets: allocator, clock, count hook ---- */

static uint64_t sbox_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Every function running in S finds its sandbox through the allocator's ud,
 * which a script cannot reach or change. */
static sbox *sbox_of(lua_State *S) {
  void *ud;
  lua_getallocf(S, &ud);
  return ud;
}

static void sbox_hook(lua_State *L, lua_Debug *ar);

/* Notes where the script was (the function at `level`) when the call was stopped. */
static void sbox_note_where(sbox *sb, lua_State *L, int level) {
  lua_Debug ar;
  if (sb->where[0] == '\0' && lua_getstack(L, level, &ar) && lua_getinfo(L, "Sl", &ar) && ar.currentline > 0)
    snprintf(sb->where, sizeof sb->where, "%s:%d", ar.short_src, ar.currentline);
}

/* From now on every instruction runs the hook, which ends the call. */
static void sbox_halt(sbox *sb, lua_State *L, int why) {
  if (!sb->stop) sb->stop = why;
  sb->tick = 1;
  lua_sethook(L, sbox_hook, LUA_MASKCOUNT, 1);
}

static void *sbox_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  sbox *sb = ud;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    sb->used -= old;
    return NULL;
  }
  if (nsize > old) {
    size_t grow = nsize - old;
    if (grow > sb->limit - sb->used) {
      sb->oom = 1;
      return NULL;
    }
    /* Big allocations mean C work the count hook cannot see: look at the clock. */
    if (sb->running && (sb->alloc_since_clock += grow) >= SBOX_CLOCK_EVERY) {
      sb->alloc_since_clock = 0;
      if (!sb->stop && sbox_now() >= sb->deadline) sbox_halt(sb, sb->co, SBOX_DEADLINE);
    }
  }
  void *p = realloc(ptr, nsize);
  if (p == NULL) {
    if (nsize <= old) return ptr;   /* Lua assumes shrinking never fails */
    sb->oom = 1;
    return NULL;
  }
  sb->used = sb->used - old + nsize;
  return p;
}

static const char *sbox_stop_text(int stop) {
  return stop == SBOX_DEADLINE ? "deadline exceeded" : "instruction budget exceeded";
}

static void sbox_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  sbox *sb = sbox_of(L);
  if (!sb->stop) {
    sb->left -= sb->tick;
    if (sb->left <= 0) {
      sbox_halt(sb, L, SBOX_BUDGET);
    } else if (sbox_now() >= sb->deadline) {
      sbox_halt(sb, L, SBOX_DEADLINE);
    } else {
      if (sb->left < sb->tick) {
        sb->tick = (int)sb->left;
        lua_sethook(L, sbox_hook, LUA_MASKCOUNT, sb->tick);
      }
      return;
    }
  }
  sbox_note_where(sb, L, 0);
  /* A yield goes through pcall to our lua_resume. Where the script is inside a
   * C call (a metamethod called from C, a sort comparator) it cannot yield:
   * raise instead, and again at the next instruction, until it can. */
  if (lua_isyieldable(L)) {
    lua_yield(L, 0);
    return;
  }
  luaL_error(L, "%s", sbox_stop_text(sb->stop));
}

/* Charges `n` instructions for work done in C; raises once the call is over budget. */
static void sbox_charge(lua_State *L, lua_Integer n) {
  sbox *sb = sbox_of(L);
  if (!sb->running) return;
  if (!sb->stop) {
    if (n >= sb->left) {
      sb->left = 0;
      sbox_halt(sb, L, SBOX_BUDGET);
    } else {
      sb->left -= n;
      sb->charged_since_clock += n;
      if (sb->charged_since_clock >= SBOX_TICK) {
        sb->charged_since_clock = 0;
        if (sbox_now() >= sb->deadline) sbox_halt(sb, L, SBOX_DEADLINE);
      }
    }
  }
  if (sb->stop) {
    sbox_halt(sb, L, sb->stop);
    sbox_note_where(sb, L, 1);      /* the Lua code that called this C function */
    luaL_error(L, "%s", sbox_stop_text(sb->stop));
  }
}

static lua_Integer sbox_bytes_cost(size_t bytes) {
  return 1 + (lua_Integer)(bytes / SANDBOX_BYTES_PER_STEP);
}

/* Elements in i..j, saturating. */
static lua_Integer sbox_span(lua_Integer i, lua_Integer j) {
  if (j < i) return 0;
  lua_Unsigned d = (lua_Unsigned)j - (lua_Unsigned)i;
  return d >= (lua_Unsigned)LUA_MAXINTEGER ? LUA_MAXINTEGER : (lua_Integer)d + 1;
}

/* ---- the library a script sees ---- */

/* Wrappers call the original C function (their upvalue) in their own frame,
 * so its error messages still name the function the script called. */
static int sbox_call_original(lua_State *L) {
  lua_CFunction f = lua_tocfunction(L, lua_upvalueindex(1));
  return f(L);
}

/* A library function that pays for the bytes of its string arguments first. */
static int sbox_lib_metered(lua_State *L) {
  size_t bytes = 0;
  int n = lua_gettop(L);
  for (int i = 1; i <= n; i++)
    if (lua_type(L, i) == LUA_TSTRING) bytes += lua_rawlen(L, i);
  sbox_charge(L, sbox_bytes_cost(bytes));
  return sbox_call_original(L);
}

/* load: text only, whatever mode the script asks for; env defaults to the sandbox's globals. */
static int sbox_lib_load(lua_State *L) {
  if (lua_type(L, 1) == LUA_TSTRING) sbox_charge(L, sbox_bytes_cost(lua_rawlen(L, 1)));
  if (lua_gettop(L) < 3) lua_settop(L, 3);
  lua_pushliteral(L, "t");
  lua_replace(L, 3);
  return sbox_call_original(L);
}

/* xpcall's message handler runs before the error unwinds; after an error
 * raised by the count hook, Lua runs it with hooks still off. So once the
 * call has been stopped the script's handler is skipped, and the error goes
 * on unchanged. */
static int sbox_msgh(lua_State *L) {
  if (sbox_of(L)->stop) return 1;
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

static int sbox_lib_xpcall(lua_State *L) {
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushvalue(L, 2);
  lua_pushcclosure(L, sbox_msgh, 1);
  lua_replace(L, 2);
  return sbox_call_original(L);
}

/* setmetatable without __gc: a finaliser would run whenever the collector
 * gets to it, outside any budget (Lua only marks an object for finalisation
 * if its metatable has __gc when it is set, so adding it later does nothing). */
static int sbox_lib_setmetatable(lua_State *L) {
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
static int sbox_lib_rep(lua_State *L) {
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
  sbox_charge(L, sbox_bytes_cost((size_t)n * (l + lsep)));
  return sbox_call_original(L);
}

/* table.concat and table.unpack: bounds computed once, paid for, and passed
 * explicitly, so a __len or __index written in C cannot make the loop endless. */
static int sbox_lib_concat(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer i = luaL_optinteger(L, 3, 1);
  lua_Integer j = lua_isnoneornil(L, 4) ? luaL_len(L, 1) : luaL_checkinteger(L, 4);
  sbox_charge(L, 1 + sbox_span(i, j));
  lua_settop(L, 4);
  lua_pushinteger(L, i);
  lua_replace(L, 3);
  lua_pushinteger(L, j);
  lua_replace(L, 4);
  return sbox_call_original(L);
}

static int sbox_lib_unpack(lua_State *L) {
  lua_Integer i = luaL_optinteger(L, 2, 1);
  lua_Integer j = lua_isnoneornil(L, 3) ? luaL_len(L, 1) : luaL_checkinteger(L, 3);
  sbox_charge(L, 1 + sbox_span(i, j));
  lua_settop(L, 3);
  lua_pushinteger(L, i);
  lua_replace(L, 2);
  lua_pushinteger(L, j);
  lua_replace(L, 3);
  return sbox_call_original(L);
}

static int sbox_lib_move(lua_State *L) {
  lua_Integer f = luaL_checkinteger(L, 2);
  lua_Integer e = luaL_checkinteger(L, 3);
  sbox_charge(L, 1 + sbox_span(f, e));
  return sbox_call_original(L);
}

/* table.insert(t, [pos,] v), as the manual describes it, paying for the shift. */
static int sbox_lib_insert(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer e = luaL_len(L, 1) + 1;   /* first empty slot */
  lua_Integer pos;
  switch (lua_gettop(L)) {
    case 2:
      pos = e;
      break;
    case 3:
      pos = luaL_checkinteger(L, 2);
      luaL_argcheck(L, (lua_Unsigned)pos - 1u < (lua_Unsigned)e, 2, "position out of bounds");
      sbox_charge(L, 1 + sbox_span(pos, e));
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
static int sbox_lib_remove(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer size = luaL_len(L, 1);
  lua_Integer pos = luaL_optinteger(L, 2, size);
  if (pos != size)
    luaL_argcheck(L, (lua_Unsigned)pos - 1u <= (lua_Unsigned)size, 2, "position out of bounds");
  sbox_charge(L, 1 + sbox_span(pos, size));
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
static int sbox_lib_sort(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer n = luaL_len(L, 1);
  lua_Integer log2n = 1;
  for (lua_Integer m = n; m > 1; m >>= 1) log2n++;
  if (n > 0) sbox_charge(L, n < LUA_MAXINTEGER / log2n ? n * log2n : LUA_MAXINTEGER);
  if (n < 2 || !lua_getmetatable(L, 1)) return sbox_call_original(L);
  lua_pop(L, 1);
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

/* ---- patterns: Lua's pattern language, counting every step ----
 * The same language as the manual's section 6.4.1, matched by backtracking
 * like the standard library, but each step (a call of the matcher, a
 * character tried by a repetition, a class member compared, a balance or
 * back-reference character) counts against the instruction budget, so a
 * pathological pattern ends with the budget instead of hanging the host. */

#define PM_MAXCAPTURES 32
#define PM_MAXDEPTH 200
#define PM_CAP_UNFINISHED (-1)
#define PM_CAP_POSITION (-2)
#define PM_ESC '%'
#define PM_SPECIALS "^$*+?.([%-"

typedef struct pm {
  const char *src, *src_end;      /* the subject */
  const char *pat_end;
  lua_State *L;
  int level;                      /* captures open or closed */
  int depth;                      /* recursion left */
  int steps;                      /* steps left before the next charge */
  struct {
    const char *init;
    ptrdiff_t len;
  } cap[PM_MAXCAPTURES];
} pm;

static void pm_charge(pm *m) {
  m->steps = SBOX_PM_CHUNK;
  sbox_charge(m->L, SBOX_PM_CHUNK);
}

#define PM_STEP(m) do { if (--(m)->steps <= 0) pm_charge(m); } while (0)

/* Charges the steps not charged yet (at the end of a pattern function). */
static void pm_settle(pm *m) {
  int used = SBOX_PM_CHUNK - m->steps;
  m->steps = SBOX_PM_CHUNK;
  if (used > 0) sbox_charge(m->L, used);
}

static void pm_bytes(pm *m, size_t n) {
  while (n >= SANDBOX_BYTES_PER_STEP) {
    PM_STEP(m);
    n -= SANDBOX_BYTES_PER_STEP;
  }
}

static void pm_setup(pm *m, lua_State *L, const char *s, size_t ls, const char *p, size_t lp) {
  m->L = L;
  m->src = s;
  m->src_end = s + ls;
  m->pat_end = p + lp;
  m->level = 0;
  m->depth = PM_MAXDEPTH;
  m->steps = SBOX_PM_CHUNK;
}

static void pm_again(pm *m) {
  m->level = 0;
  m->depth = PM_MAXDEPTH;
}

static void pm_check_pattern(lua_State *L, size_t lp) {
  if (lp > SANDBOX_MAX_PATTERN)
    luaL_error(L, "pattern too long (%I bytes; the sandbox allows %d)", (lua_Integer)lp, SANDBOX_MAX_PATTERN);
}

/* The end of the single-character class starting at p. */
static const char *pm_class_end(pm *m, const char *p) {
  char c = *p++;
  if (c == PM_ESC) {
    if (p >= m->pat_end) luaL_error(m->L, "malformed pattern (ends with '%%')");
    return p + 1;
  }
  if (c == '[') {
    if (*p == '^') p++;
    /* the first character of a set is literal, even ']' */
    do {
      if (p >= m->pat_end) luaL_error(m->L, "malformed pattern (missing ']')");
      c = *p++;
      if (c == PM_ESC && p < m->pat_end) p++;
    } while (*p != ']');
    return p + 1;
  }
  return p;
}

/* Does character c belong to class %cl (or equal cl when it is not a class letter)? */
static int pm_class(int c, int cl) {
  int in;
  switch (tolower(cl)) {
    case 'a': in = isalpha(c); break;
    case 'c': in = iscntrl(c); break;
    case 'd': in = isdigit(c); break;
    case 'g': in = isgraph(c); break;
    case 'l': in = islower(c); break;
    case 'p': in = ispunct(c); break;
    case 's': in = isspace(c); break;
    case 'u': in = isupper(c); break;
    case 'w': in = isalnum(c); break;
    case 'x': in = isxdigit(c); break;
    case 'z': in = c == 0; break;   /* deprecated, but still in Lua 5.4 */
    default: return cl == c;
  }
  in = in != 0;
  return isupper(cl) ? !in : in;
}

/* Does c belong to the set [...] from p ('[') to close (']')? */
static int pm_set(pm *m, int c, const char *p, const char *close) {
  int yes = 1;
  if (p[1] == '^') {
    yes = 0;
    p++;
  }
  while (++p < close) {
    PM_STEP(m);
    if (*p == PM_ESC) {
      p++;
      if (pm_class(c, (unsigned char)*p)) return yes;
    } else if (p[1] == '-' && p + 2 < close) {
      if ((unsigned char)p[0] <= c && c <= (unsigned char)p[2]) return yes;
      p += 2;
    } else if ((unsigned char)*p == c) {
      return yes;
    }
  }
  return !yes;
}

/* Does the subject character at s match the class p..ep? */
static int pm_single(pm *m, const char *s, const char *p, const char *ep) {
  if (s >= m->src_end) return 0;
  int c = (unsigned char)*s;
  switch (*p) {
    case '.': return 1;
    case PM_ESC: return pm_class(c, (unsigned char)p[1]);
    case '[': return pm_set(m, c, p, ep - 1);
    default: return (unsigned char)*p == c;
  }
}

static const char *pm_match(pm *m, const char *s, const char *p);

static const char *pm_max_expand(pm *m, const char *s, const char *p, const char *ep) {
  ptrdiff_t i = 0;
  while (pm_single(m, s + i, p, ep)) {
    PM_STEP(m);
    i++;
  }
  for (; i >= 0; i--) {             /* longest first, then give back one at a time */
    const char *r = pm_match(m, s + i, ep + 1);
    if (r) return r;
  }
  return NULL;
}

static const char *pm_min_expand(pm *m, const char *s, const char *p, const char *ep) {
  for (;;) {
    const char *r = pm_match(m, s, ep + 1);
    if (r) return r;
    if (!pm_single(m, s, p, ep)) return NULL;
    s++;
  }
}

static const char *pm_open_capture(pm *m, const char *s, const char *p, ptrdiff_t what) {
  if (m->level >= PM_MAXCAPTURES) luaL_error(m->L, "too many captures");
  m->cap[m->level].init = s;
  m->cap[m->level].len = what;
  m->level++;
  const char *r = pm_match(m, s, p);
  if (!r) m->level--;
  return r;
}

static const char *pm_close_capture(pm *m, const char *s, const char *p) {
  int l = m->level - 1;
  while (l >= 0 && m->cap[l].len != PM_CAP_UNFINISHED) l--;
  if (l < 0) luaL_error(m->L, "invalid pattern capture");
  m->cap[l].len = s - m->cap[l].init;
  const char *r = pm_match(m, s, p);
  if (!r) m->cap[l].len = PM_CAP_UNFINISHED;
  return r;
}

/* %b xy at p (p points at x). */
static const char *pm_balance(pm *m, const char *s, const char *p) {
  if (p + 1 >= m->pat_end) luaL_error(m->L, "malformed pattern (missing arguments to '%%b')");
  if (s >= m->src_end || *s != *p) return NULL;
  char open = p[0], close = p[1];
  int depth = 1;
  while (++s < m->src_end) {
    PM_STEP(m);
    if (*s == close) {
      if (--depth == 0) return s + 1;
    } else if (*s == open) {
      depth++;
    }
  }
  return NULL;
}

/* %1..%9: the text of an earlier capture, again. */
static const char *pm_back_reference(pm *m, const char *s, int digit) {
  int l = digit - '1';
  if (l < 0 || l >= m->level || m->cap[l].len == PM_CAP_UNFINISHED)
    luaL_error(m->L, "invalid capture index %%%d", l + 1);
  ptrdiff_t len = m->cap[l].len;
  if (len < 0) return NULL;         /* a position capture has no text */
  pm_bytes(m, (size_t)len);
  if (m->src_end - s >= len && memcmp(m->cap[l].init, s, (size_t)len) == 0) return s + len;
  return NULL;
}

/* Matches pattern p..pat_end at s; the end of the match, or NULL. */
static const char *pm_match(pm *m, const char *s, const char *p) {
  if (m->depth-- == 0) luaL_error(m->L, "pattern too complex");
  for (;;) {
    PM_STEP(m);
    if (p == m->pat_end) break;
    if (*p == '(') {
      if (p + 1 < m->pat_end && p[1] == ')') s = pm_open_capture(m, s, p + 2, PM_CAP_POSITION);
      else s = pm_open_capture(m, s, p + 1, PM_CAP_UNFINISHED);
      break;
    }
    if (*p == ')') {
      s = pm_close_capture(m, s, p + 1);
      break;
    }
    if (*p == '$' && p + 1 == m->pat_end) {
      if (s != m->src_end) s = NULL;
      break;
    }
    if (*p == PM_ESC && p + 1 < m->pat_end && p[1] == 'b') {
      s = pm_balance(m, s, p + 2);
      if (s == NULL) break;
      p += 4;
      continue;
    }
    if (*p == PM_ESC && p + 1 < m->pat_end && p[1] == 'f') {
      p += 2;
      if (p >= m->pat_end || *p != '[') luaL_error(m->L, "missing '[' after '%%f' in pattern");
      const char *ep = pm_class_end(m, p);
      int prev = s == m->src ? 0 : (unsigned char)s[-1];
      int cur = s < m->src_end ? (unsigned char)*s : 0;
      if (!pm_set(m, prev, p, ep - 1) && pm_set(m, cur, p, ep - 1)) {
        p = ep;
        continue;
      }
      s = NULL;
      break;
    }
    if (*p == PM_ESC && p + 1 < m->pat_end && isdigit((unsigned char)p[1])) {
      s = pm_back_reference(m, s, (unsigned char)p[1]);
      if (s == NULL) break;
      p += 2;
      continue;
    }
    /* a single-character class, maybe with a repetition suffix */
    const char *ep = pm_class_end(m, p);
    char suffix = ep < m->pat_end ? *ep : '\0';
    if (!pm_single(m, s, p, ep)) {
      if (suffix == '*' || suffix == '?' || suffix == '-') {   /* zero repetitions are fine */
        p = ep + 1;
        continue;
      }
      s = NULL;
      break;
    }
    if (suffix == '?') {
      const char *r = pm_match(m, s + 1, ep + 1);
      if (r) {
        s = r;
        break;
      }
      p = ep + 1;
      continue;
    }
    if (suffix == '+') { s = pm_max_expand(m, s + 1, p, ep); break; }
    if (suffix == '*') { s = pm_max_expand(m, s, p, ep); break; }
    if (suffix == '-') { s = pm_min_expand(m, s, p, ep); break; }
    s++;
    p = ep;
  }
  m->depth++;
  return s;
}

/* Pushes capture i (the whole match s..e when there are no captures). */
static void pm_push_capture(pm *m, int i, const char *s, const char *e) {
  if (i >= m->level) {
    if (i != 0) luaL_error(m->L, "invalid capture index %%%d", i + 1);
    lua_pushlstring(m->L, s, (size_t)(e - s));
    return;
  }
  ptrdiff_t len = m->cap[i].len;
  if (len == PM_CAP_UNFINISHED) luaL_error(m->L, "unfinished capture");
  if (len == PM_CAP_POSITION) lua_pushinteger(m->L, (lua_Integer)(m->cap[i].init - m->src) + 1);
  else lua_pushlstring(m->L, m->cap[i].init, (size_t)len);
}

static int pm_push_captures(pm *m, const char *s, const char *e) {
  int n = (m->level == 0 && s) ? 1 : m->level;
  luaL_checkstack(m->L, n, "too many captures");
  for (int i = 0; i < n; i++) pm_push_capture(m, i, s, e);
  return n;
}

static size_t pm_start(lua_Integer pos, size_t len) {
  if (pos > 0) return (size_t)pos;
  if (pos == 0 || pos < -(lua_Integer)len) return 1;
  return len + (size_t)pos + 1;
}

static int pm_plain(const char *p, size_t lp) {
  for (size_t i = 0; i < lp; i++)
    if (p[i] != '\0' && strchr(PM_SPECIALS, p[i])) return 0;
  return 1;
}

/* Plain search for needle in hay, paying per byte looked at. */
static const char *pm_find_plain(pm *m, const char *hay, size_t lh, const char *needle, size_t ln) {
  if (ln == 0) return hay;
  if (ln > lh) return NULL;
  const char *last = hay + (lh - ln);
  while (hay <= last) {
    const char *hit = memchr(hay, needle[0], (size_t)(last - hay) + 1);
    pm_bytes(m, (size_t)((hit ? hit : last) - hay));
    if (hit == NULL) return NULL;
    PM_STEP(m);
    pm_bytes(m, ln);
    if (memcmp(hit + 1, needle + 1, ln - 1) == 0) return hit;
    hay = hit + 1;
  }
  return NULL;
}

static int pm_find_aux(lua_State *L, int find) {
  size_t ls, lp;
  const char *s = luaL_checklstring(L, 1, &ls);
  const char *p = luaL_checklstring(L, 2, &lp);
  size_t init = pm_start(luaL_optinteger(L, 3, 1), ls) - 1;
  pm m;
  if (init > ls) {
    luaL_pushfail(L);
    return 1;
  }
  if (find && (lua_toboolean(L, 4) || pm_plain(p, lp))) {
    pm_setup(&m, L, s, ls, p, lp);
    const char *hit = pm_find_plain(&m, s + init, ls - init, p, lp);
    pm_settle(&m);
    if (hit) {
      lua_pushinteger(L, (lua_Integer)(hit - s) + 1);
      lua_pushinteger(L, (lua_Integer)(hit - s + lp));
      return 2;
    }
    luaL_pushfail(L);
    return 1;
  }
  pm_check_pattern(L, lp);
  int anchor = *p == '^';
  if (anchor) {
    p++;
    lp--;
  }
  pm_setup(&m, L, s, ls, p, lp);
  const char *s1 = s + init;
  do {
    pm_again(&m);
    const char *e = pm_match(&m, s1, p);
    if (e) {
      pm_settle(&m);
      if (find) {
        lua_pushinteger(L, (lua_Integer)(s1 - s) + 1);
        lua_pushinteger(L, (lua_Integer)(e - s));
        return pm_push_captures(&m, NULL, NULL) + 2;
      }
      return pm_push_captures(&m, s1, e);
    }
  } while (s1++ < m.src_end && !anchor);
  pm_settle(&m);
  luaL_pushfail(L);
  return 1;
}

static int sbox_str_find(lua_State *L) { return pm_find_aux(L, 1); }
static int sbox_str_match(lua_State *L) { return pm_find_aux(L, 0); }

/* gmatch's iterator state: upvalues 1 and 2 keep the subject and pattern alive. */
typedef struct pm_gmatch {
  const char *next;               /* where the next search starts */
  const char *pattern;
  const char *lastmatch;          /* end of the last match: an empty match there is skipped */
  pm m;
} pm_gmatch;

static int sbox_gmatch_step(lua_State *L) {
  pm_gmatch *g = lua_touserdata(L, lua_upvalueindex(3));
  g->m.L = L;                     /* a later call runs in another coroutine */
  for (const char *src = g->next; src <= g->m.src_end; src++) {
    pm_again(&g->m);
    const char *e = pm_match(&g->m, src, g->pattern);
    if (e && e != g->lastmatch) {
      g->next = g->lastmatch = e;
      pm_settle(&g->m);
      return pm_push_captures(&g->m, src, e);
    }
  }
  pm_settle(&g->m);
  return 0;
}

static int sbox_str_gmatch(lua_State *L) {
  size_t ls, lp;
  const char *s = luaL_checklstring(L, 1, &ls);
  const char *p = luaL_checklstring(L, 2, &lp);
  size_t init = pm_start(luaL_optinteger(L, 3, 1), ls) - 1;
  pm_check_pattern(L, lp);
  if (init > ls) init = ls + 1;     /* starts past the end: no matches */
  lua_settop(L, 2);
  pm_gmatch *g = lua_newuserdatauv(L, sizeof *g, 0);
  pm_setup(&g->m, L, s, ls, p, lp);
  g->next = s + init;
  g->pattern = p;
  g->lastmatch = NULL;
  lua_pushcclosure(L, sbox_gmatch_step, 3);
  return 1;
}

/* gsub with a replacement string: %0..%9 and %%. */
static void pm_add_string(pm *m, luaL_Buffer *b, const char *s, const char *e) {
  lua_State *L = m->L;
  size_t l;
  const char *r = lua_tolstring(L, 3, &l);
  const char *end = r + l;
  pm_bytes(m, l);
  while (r < end) {
    const char *esc = memchr(r, PM_ESC, (size_t)(end - r));
    if (esc == NULL) {
      luaL_addlstring(b, r, (size_t)(end - r));
      return;
    }
    luaL_addlstring(b, r, (size_t)(esc - r));
    char c = esc + 1 < end ? esc[1] : '\0';
    if (c == PM_ESC) {
      luaL_addchar(b, PM_ESC);
    } else if (c == '0') {
      luaL_addlstring(b, s, (size_t)(e - s));
    } else if (isdigit((unsigned char)c)) {
      pm_push_capture(m, c - '1', s, e);
      luaL_addvalue(b);              /* a position capture is a number: addvalue converts it */
    } else {
      luaL_error(L, "invalid use of '%c' in replacement string", PM_ESC);
    }
    r = esc + 2;
  }
}

/* Adds the replacement of match s..e; returns whether it changed anything. */
static int pm_add_value(pm *m, luaL_Buffer *b, const char *s, const char *e, int tr) {
  lua_State *L = m->L;
  if (tr == LUA_TFUNCTION) {
    lua_pushvalue(L, 3);
    int n = pm_push_captures(m, s, e);
    lua_call(L, n, 1);
  } else if (tr == LUA_TTABLE) {
    pm_push_capture(m, 0, s, e);
    lua_gettable(L, 3);
  } else {
    pm_add_string(m, b, s, e);
    return 1;
  }
  if (!lua_toboolean(L, -1)) {      /* nil or false: keep the original text */
    lua_pop(L, 1);
    luaL_addlstring(b, s, (size_t)(e - s));
    return 0;
  }
  if (!lua_isstring(L, -1)) return luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
  luaL_addvalue(b);
  return 1;
}

static int sbox_str_gsub(lua_State *L) {
  size_t srcl, lp;
  const char *src = luaL_checklstring(L, 1, &srcl);
  const char *p = luaL_checklstring(L, 2, &lp);
  int tr = lua_type(L, 3);
  lua_Integer max_s = luaL_optinteger(L, 4, (lua_Integer)srcl + 1);
  luaL_argexpected(L, tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION || tr == LUA_TTABLE, 3,
                   "string/function/table");
  pm_check_pattern(L, lp);
  int anchor = *p == '^';
  if (anchor) {
    p++;
    lp--;
  }
  const char *lastmatch = NULL;
  lua_Integer n = 0;
  int changed = 0;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  pm m;
  pm_setup(&m, L, src, srcl, p, lp);
  while (n < max_s) {
    pm_again(&m);
    const char *e = pm_match(&m, src, p);
    if (e && e != lastmatch) {
      n++;
      changed = pm_add_value(&m, &b, src, e, tr) | changed;
      src = lastmatch = e;
    } else if (src < m.src_end) {
      luaL_addchar(&b, *src++);
    } else {
      break;
    }
    if (anchor) break;
  }
  pm_settle(&m);
  if (!changed) {
    lua_pushvalue(L, 1);
  } else {
    luaL_addlstring(&b, src, (size_t)(m.src_end - src));
    luaL_pushresult(&b);
  }
  lua_pushinteger(L, n);
  return 2;
}

/* ---- building the script's state ---- */

static void sbox_wrap(lua_State *S, int t, const char *name, lua_CFunction wrapper) {
  lua_getfield(S, t, name);         /* the original becomes the wrapper's upvalue */
  lua_pushcclosure(S, wrapper, 1);
  lua_setfield(S, t, name);
}

static void sbox_set(lua_State *S, int t, const char *name, lua_CFunction f) {
  if (f) lua_pushcfunction(S, f);
  else lua_pushnil(S);
  lua_setfield(S, t, name);
}

/* Runs in S, protected: opens the libraries and takes out what a script must not have. */
static int sbox_p_setup(lua_State *S) {
  static const char *const base_removed[] = { "dofile", "loadfile", "collectgarbage", "print", "warn", NULL };
  static const char *const string_metered[] = {
    "byte", "char", "format", "lower", "upper", "reverse", "sub", "pack", "packsize", "unpack", NULL
  };
  static const char *const utf8_metered[] = { "char", "codepoint", "len", "offset", NULL };

  luaL_requiref(S, LUA_GNAME, luaopen_base, 1);                     /* 1 */
  for (int i = 0; base_removed[i]; i++) sbox_set(S, 1, base_removed[i], NULL);
  sbox_wrap(S, 1, "load", sbox_lib_load);
  sbox_wrap(S, 1, "tonumber", sbox_lib_metered);
  sbox_wrap(S, 1, "xpcall", sbox_lib_xpcall);
  sbox_set(S, 1, "setmetatable", sbox_lib_setmetatable);

  luaL_requiref(S, LUA_STRLIBNAME, luaopen_string, 1);              /* 2, also the strings' __index */
  sbox_set(S, 2, "dump", NULL);
  sbox_set(S, 2, "find", sbox_str_find);
  sbox_set(S, 2, "match", sbox_str_match);
  sbox_set(S, 2, "gmatch", sbox_str_gmatch);
  sbox_set(S, 2, "gsub", sbox_str_gsub);
  sbox_wrap(S, 2, "rep", sbox_lib_rep);
  for (int i = 0; string_metered[i]; i++) sbox_wrap(S, 2, string_metered[i], sbox_lib_metered);

  luaL_requiref(S, LUA_TABLIBNAME, luaopen_table, 1);               /* 3 */
  sbox_wrap(S, 3, "concat", sbox_lib_concat);
  sbox_wrap(S, 3, "unpack", sbox_lib_unpack);
  sbox_wrap(S, 3, "move", sbox_lib_move);
  sbox_wrap(S, 3, "sort", sbox_lib_sort);
  sbox_set(S, 3, "insert", sbox_lib_insert);
  sbox_set(S, 3, "remove", sbox_lib_remove);

  luaL_requiref(S, LUA_MATHLIBNAME, luaopen_math, 1);               /* 4 */

  luaL_requiref(S, LUA_UTF8LIBNAME, luaopen_utf8, 1);               /* 5 */
  for (int i = 0; utf8_metered[i]; i++) sbox_wrap(S, 5, utf8_metered[i], sbox_lib_metered);

  luaL_requiref(S, LUA_OSLIBNAME, luaopen_os, 0);                   /* 6: not global */
  lua_createtable(S, 0, 3);                                         /* 7: the os a script sees */
  lua_getfield(S, 6, "time");
  lua_setfield(S, 7, "time");
  lua_getfield(S, 6, "clock");
  lua_setfield(S, 7, "clock");
  lua_getfield(S, 6, "date");
  lua_pushcclosure(S, sbox_lib_metered, 1);
  lua_setfield(S, 7, "date");
  lua_setglobal(S, "os");
  return 0;
}

static int sbox_panic(lua_State *S) {
  const char *msg = lua_type(S, -1) == LUA_TSTRING ? lua_tostring(S, -1) : "?";
  fprintf(stderr, "chronicle sandbox: unprotected error in the script's state: %s\n", msg);
  return 0;                         /* Lua aborts */
}

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

/* The text of an error value at idx of thread T, without allocating in T
 * (so without running any metamethod). */
static void sbox_value_text(lua_State *T, int idx, char *out, size_t size) {
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

/* ---- the view: a proxy in the script, calling back into the host's view ---- */

/* Runs in the host, protected: turns any error into a string. */
static int sbox_host_msgh(lua_State *L) {
  luaL_tolstring(L, 1, NULL);
  return 1;
}

/* Calls fn(ud) protected in host thread L; on failure copies the message to text. */
static int sbox_host_pcall(lua_State *L, lua_CFunction fn, void *ud, char *text, size_t size) {
  int top = lua_gettop(L);
  if (!lua_checkstack(L, 4)) {
    snprintf(text, size, "host stack overflow");
    return 1;
  }
  lua_pushcfunction(L, sbox_host_msgh);
  lua_pushcfunction(L, fn);
  lua_pushlightuserdata(L, ud);
  int st = lua_pcall(L, 1, 0, top + 1);
  if (st != LUA_OK) sbox_value_text(L, -1, text, size);
  lua_settop(L, top);
  return st != LUA_OK;
}

static int sbox_bridge(lua_State *L);

/* Runs in the host, protected: view[method](view, key [, value | bridge]). */
static int sbox_host_invoke(lua_State *L) {
  sbox_hostcall *hc = lua_touserdata(L, 1);
  sbox *sb = hc->sb;
  const char *mname = sbox_view_names[hc->method];
  const char *why;
  lua_rawgetp(L, LUA_REGISTRYINDEX, sb);             /* 2: the call's {sandbox, view} */
  lua_rawgeti(L, 2, 2);                              /* 3: the host's view */
  lua_getfield(L, 3, mname);
  if (lua_isnil(L, -1)) return luaL_error(L, "the host's view has no method '%s'", mname);
  lua_pushvalue(L, 3);
  if (!codec_decode(L, sb->buf.data, hc->key_len, &why)) return luaL_error(L, "key: %s", why);
  int nargs = 2;
  if (hc->method == SBOX_PUT) {
    if (!codec_decode(L, sb->buf.data + hc->key_len, sb->buf.len - hc->key_len, &why))
      return luaL_error(L, "value: %s", why);
    nargs++;
  } else if (hc->method == SBOX_UPDATE) {
    lua_pushvalue(L, 2);
    lua_pushinteger(L, hc->update_serial);
    lua_pushcclosure(L, sbox_bridge, 2);
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
static int sbox_p_update_fn(lua_State *co) {
  sbox *sb = sbox_of(co);
  const char *why;
  if (!codec_decode(co, sb->buf.data, sb->buf.len, &why)) return luaL_error(co, "view:update: %s", why);
  lua_call(co, 1, 1);
  sb->buf.len = 0;
  codec_encode(co, -1, &sb->buf, "view:update new value");
  return 0;
}

/* The host-side function given to the host view's update: it runs the
 * script's function on a copy of the current value and returns a copy of the
 * result. It works only while that view:update call is running. */
static int sbox_bridge(lua_State *L) {
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
  lua_pushcfunction(co, sbox_p_update_fn);
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
static int sbox_view_method(lua_State *co) {
  sbox *sb = sbox_of(co);
  int method = (int)lua_tointeger(co, lua_upvalueindex(1));
  const char *mname = sbox_view_names[method];
  if (!sb->running || !sb->has_view || lua_tointeger(co, lua_upvalueindex(2)) != sb->serial)
    return luaL_error(co, "view:%s: this view belongs to a call that has ended", mname);
  if (lua_type(co, 1) != LUA_TTABLE) return luaL_error(co, "view:%s: call it as view:%s(...)", mname, mname);
  if (lua_isnoneornil(co, 2)) return luaL_error(co, "view:%s: a key is needed", mname);
  if (method == SBOX_UPDATE) luaL_checktype(co, 3, LUA_TFUNCTION);
  lua_settop(co, method == SBOX_PUT || method == SBOX_UPDATE ? 3 : 2);
  sbox_charge(co, 1);               /* no host work once the call has been stopped */
  char root[32];
  snprintf(root, sizeof root, "view:%s key", mname);
  sb->buf.len = 0;
  codec_encode(co, 2, &sb->buf, root);
  sbox_hostcall hc = { sb, method, sb->buf.len, 0 };
  if (method == SBOX_PUT) codec_encode(co, 3, &sb->buf, "view:put value");
  luaL_checkstack(co, 4, "view");
  lua_Integer saved_update = sb->update_serial;
  if (method == SBOX_UPDATE) hc.update_serial = ++sb->update_counter;
  sb->update_serial = hc.update_serial;
  char text[SANDBOX_MAX_MESSAGE + 96];
  int failed = sbox_host_pcall(sb->host, sbox_host_invoke, &hc, text, sizeof text);
  sb->update_serial = saved_update;
  if (failed) return luaL_error(co, "view:%s: %s", mname, text);
  const char *why;
  if (!codec_decode(co, sb->buf.data, sb->buf.len, &why))
    return luaL_error(co, "view:%s: %s", mname, why);
  return 1;
}

/* Pushes a view proxy for this call: a table holding only its four methods. */
static void sbox_push_view(lua_State *S, sbox *sb) {
  lua_createtable(S, 0, 4);
  for (int m = SBOX_GET; m <= SBOX_DELETE; m++) {
    lua_pushinteger(S, m);
    lua_pushinteger(S, sb->serial);
    lua_pushcclosure(S, sbox_view_method, 2);
    lua_setfield(S, -2, sbox_view_names[m]);
  }
}

/* ---- loads and calls ---- */

/* Runs in S, protected: a coroutine holding the handler and its arguments. */
static int sbox_p_prepare_call(lua_State *S) {
  sbox_job *job = lua_touserdata(S, 1);
  sbox *sb = job->sb;
  lua_State *co = lua_newthread(S);                                  /* 2 */
  lua_rawgetp(S, LUA_REGISTRYINDEX, &sbox_definition_key);           /* 3 */
  if (!job->field) {
    lua_pushliteral(S, "handlers");
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
    sbox_push_view(S, sb);
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
  codec_encode(S, 2, &job->sb->buf, "result");
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
 * its description (scalar fields, `from`, sorted handler names) into buf. */
static int sbox_p_define(lua_State *S) {
  sbox_job *job = lua_touserdata(S, 1);
  sbox *sb = job->sb;
  if (lua_type(S, 2) != LUA_TTABLE) {
    job->bad = 1;
    snprintf(sb->detail, sizeof sb->detail, "the script must return a definition table, got %s",
             luaL_typename(S, 2));
    return 0;
  }
  lua_pushliteral(S, "handlers");
  int ht = lua_rawget(S, 2);                                         /* 3 */
  if (ht != LUA_TNIL && ht != LUA_TTABLE) {
    job->bad = 1;
    snprintf(sb->detail, sizeof sb->detail, "'handlers' must be a table of functions, got %s", lua_typename(S, ht));
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
  lua_pushliteral(S, "handlers");
  lua_createtable(S, n > INT_MAX ? 0 : (int)n, 0);
  for (i = 0; i < n; i++) {
    lua_pushlstring(S, names[i].s, names[i].len);
    lua_rawseti(S, -2, (lua_Integer)i + 1);
  }
  lua_rawset(S, 4);
  sb->buf.len = 0;
  codec_encode(S, 4, &sb->buf, "definition");
  lua_pushvalue(S, 2);
  lua_rawsetp(S, LUA_REGISTRYINDEX, &sbox_definition_key);
  return 0;
}

/* Budgets and bookkeeping for a new load or call from host thread L. */
static void sbox_begin(sbox *sb, lua_State *L, int with_view) {
  sb->busy = 1;
  sb->running = 0;
  sb->stop = SBOX_RUNNING;
  sb->oom = 0;
  sb->left = sb->instructions;
  sb->deadline = sbox_now() + (uint64_t)sb->time_ms * 1000000u;
  sb->alloc_since_clock = 0;
  sb->charged_since_clock = 0;
  sb->host = L;
  sb->has_view = with_view;
  sb->serial++;
  sb->update_serial = 0;
  sb->calls++;
  sb->detail[0] = '\0';
  sb->where[0] = '\0';
}

static void sbox_end(sbox *sb) {
  sb->last_instructions = sb->instructions - (sb->left > 0 ? sb->left : 0);
  sb->busy = 0;
  sb->running = 0;
  sb->co = NULL;
  sb->host = NULL;
  sb->has_view = 0;
  lua_settop(sb->S, 0);
}

/* Runs what is on co's stack under the budgets; the lua_resume status. */
static int sbox_resume(sbox *sb, lua_State *co, int *nres) {
  sb->co = co;
  sb->tick = sb->left < SBOX_TICK ? (int)sb->left : SBOX_TICK;
  lua_sethook(co, sbox_hook, LUA_MASKCOUNT, sb->tick);
  sb->running = 1;
  int st = lua_resume(co, sb->S, lua_gettop(co) - 1, nres);
  sb->running = 0;
  return st;
}

/* The outcome of a protected function in S that failed with status st. */
static int sbox_protected_failure(sbox *sb, int st, const char *what) {
  if (st == LUA_ERRMEM || sb->oom) {
    snprintf(sb->detail, sizeof sb->detail, "memory budget of %zu bytes exceeded (%s)", sb->limit, what);
    lua_settop(sb->S, 0);
    return SBOX_E_MEMORY;
  }
  char text[SANDBOX_MAX_MESSAGE + 1];
  sbox_value_text(sb->S, -1, text, sizeof text);
  snprintf(sb->detail, sizeof sb->detail, "%.60s: %s", what, text);
  lua_settop(sb->S, 0);
  return SBOX_E_SCRIPT;
}

/* The outcome of a resume that stopped, failed or finished over budget. */
static int sbox_run_failure(sbox *sb, lua_State *co, int st) {
  if (sb->stop) {
    int n = sb->stop == SBOX_DEADLINE
      ? snprintf(sb->detail, sizeof sb->detail, "deadline of %lld ms exceeded", (long long)sb->time_ms)
      : snprintf(sb->detail, sizeof sb->detail, "instruction budget of %lld exceeded", (long long)sb->instructions);
    (void)co;
    if (sb->where[0]) snprintf(sb->detail + n, sizeof sb->detail - (size_t)n, " at %s", sb->where);
    return sb->stop == SBOX_DEADLINE ? SBOX_E_DEADLINE : SBOX_E_BUDGET;
  }
  if (st == LUA_YIELD) {
    snprintf(sb->detail, sizeof sb->detail, "the script yielded");
    return SBOX_E_SCRIPT;
  }
  if (st == LUA_ERRMEM || sb->oom) {
    snprintf(sb->detail, sizeof sb->detail, "memory budget of %zu bytes exceeded", sb->limit);
    return SBOX_E_MEMORY;
  }
  sbox_error_detail(sb, co);
  return SBOX_E_SCRIPT;
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
  st = sbox_resume(sb, co, &nres);
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
  st = sbox_resume(sb, co, &nres);
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

/* core.sandbox_new{memory=, instructions=, time_ms=, name=} -> sandbox */
static int sbox_new(lua_State *L) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer memory = sbox_opt_integer(L, "memory", SANDBOX_DEFAULT_MEMORY, SANDBOX_MIN_MEMORY);
  lua_Integer instructions = sbox_opt_integer(L, "instructions", SANDBOX_DEFAULT_INSTRUCTIONS, 1);
  lua_Integer time_ms = sbox_opt_integer(L, "time_ms", SANDBOX_DEFAULT_TIME_MS, 1);
  if (time_ms > 365LL * 24 * 3600 * 1000) luaL_error(L, "sandbox_new: option 'time_ms' is too large");
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
  if (nlen > SANDBOX_MAX_NAME) {
    memcpy(sb->name, name, SANDBOX_MAX_NAME);
    memcpy(sb->name + SANDBOX_MAX_NAME, "...", 4);
  } else {
    memcpy(sb->name, name, nlen);
    sb->name[nlen] = '\0';
  }
  sb->S = lua_newstate(sbox_alloc, sb);
  if (sb->S == NULL) return luaL_error(L, "sandbox_new: cannot create a Lua state");
  lua_atpanic(sb->S, sbox_panic);
  lua_pushcfunction(sb->S, sbox_p_setup);
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
  { "close", sbox_close },
  { NULL, NULL }
};

static const luaL_Reg sbox_metamethods[] = {
  { "__gc", sbox_close },
  { "__close", sbox_close },
  { "__tostring", sbox_tostring },
  { NULL, NULL }
};

void sandbox_open(lua_State *L) {
  luaL_newmetatable(L, SANDBOX_MT);
  luaL_setfuncs(L, sbox_metamethods, 0);
  luaL_newlib(L, sbox_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_pushcfunction(L, sbox_new);
  lua_setfield(L, -2, "sandbox_new");
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
  lua_setfield(L, -2, "SANDBOX");
}
