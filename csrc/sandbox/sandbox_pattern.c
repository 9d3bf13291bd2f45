/* The sandbox's string.find, match, gmatch and gsub: Lua's pattern language,
 * matched by our own matcher that counts its steps against the instruction budget. */

/* The same language as the manual's section 6.4.1, matched by backtracking
 * like the standard library, but each step (a call of the matcher, a
 * character tried by a repetition, a class member compared, a balance or
 * back-reference character) counts against the instruction budget, so a
 * pathological pattern ends with the budget instead of hanging the host. */
#include <ctype.h>
#include <stddef.h>
#include <string.h>
#include <lauxlib.h>
#include "sandbox.h"
#include "sandbox_budget.h"
#include "sandbox_pattern.h"

#define PM_CHUNK 1024                 /* matching steps charged at a time */
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
  m->steps = PM_CHUNK;
  budget_charge(m->L, PM_CHUNK);
}

#define PM_STEP(m) do { if (--(m)->steps <= 0) pm_charge(m); } while (0)

/* Charges the steps not charged yet (at the end of a pattern function). */
static void pm_settle(pm *m) {
  int used = PM_CHUNK - m->steps;
  m->steps = PM_CHUNK;
  if (used > 0) budget_charge(m->L, used);
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
  m->steps = PM_CHUNK;
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

int pm_str_find(lua_State *L) { return pm_find_aux(L, 1); }
int pm_str_match(lua_State *L) { return pm_find_aux(L, 0); }

/* gmatch's iterator state: upvalues 1 and 2 keep the subject and pattern alive. */
typedef struct pm_gmatch {
  const char *next;               /* where the next search starts */
  const char *pattern;
  const char *lastmatch;          /* end of the last match: an empty match there is skipped */
  pm m;
} pm_gmatch;

static int pm_gmatch_step(lua_State *L) {
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

int pm_str_gmatch(lua_State *L) {
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
  lua_pushcclosure(L, pm_gmatch_step, 3);
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

int pm_str_gsub(lua_State *L) {
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
