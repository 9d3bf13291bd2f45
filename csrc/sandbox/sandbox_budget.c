/* The sandbox's budgets: the allocator that enforces the memory budget, and the
 * count hook and charges that enforce the instruction budget and the deadline. */

/* Each load or call runs in a fresh coroutine under a count hook that charges
 * the instruction budget and checks the wall-clock deadline; when either runs
 * out the hook yields, and a yield passes through the script's pcall, so the
 * script cannot swallow the stop. C functions, inside which the hook never
 * fires, charge for their work through budget_charge. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <lauxlib.h>
#include "sandbox_budget.h"

#define BUDGET_TICK 1000                /* instructions between two runs of the count hook */
#define BUDGET_CLOCK_EVERY (64 << 10)   /* bytes allocated in a call between two looks at the clock */
#define BUDGET_STOPPED_GROWTH 4096      /* largest growth allowed once a call has been stopped (its error message) */

static uint64_t budget_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void budget_hook(lua_State *L, lua_Debug *ar);

/* Notes where the script was (the function at `level`) when the call was stopped. */
static void budget_note_where(sbox *sb, lua_State *L, int level) {
  lua_Debug ar;
  if (sb->where[0] == '\0' && lua_getstack(L, level, &ar) && lua_getinfo(L, "Sl", &ar) && ar.currentline > 0)
    snprintf(sb->where, sizeof sb->where, "%s:%d", ar.short_src, ar.currentline);
}

/* From now on every instruction runs the hook, which ends the call. */
static void budget_halt(sbox *sb, lua_State *L, int why) {
  if (!sb->stop) sb->stop = why;
  sb->tick = 1;
  lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
}

void *budget_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  sbox *sb = ud;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    sb->used -= old;
    return NULL;
  }
  if (nsize > old) {
    size_t grow = nsize - old;
    /* Past the budget, or a big block once the call has been stopped (C code
     * such as string.pack's padding loop ends at its next growth, not at the end). */
    if (grow > sb->limit - sb->used || (sb->stop && sb->running && grow > BUDGET_STOPPED_GROWTH)) {
      sb->oom = 1;
      return NULL;
    }
    /* Big allocations mean C work the count hook cannot see: look at the clock. */
    if (sb->running && (sb->alloc_since_clock += grow) >= BUDGET_CLOCK_EVERY) {
      sb->alloc_since_clock = 0;
      if (!sb->stop && budget_now() >= sb->deadline) budget_halt(sb, sb->co, SBOX_DEADLINE);
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

static const char *budget_stop_text(int stop) {
  return stop == SBOX_DEADLINE ? "deadline exceeded" : "instruction budget exceeded";
}

static void budget_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  sbox *sb = sbox_of(L);
  if (!sb->stop) {
    sb->left -= sb->tick;
    if (sb->left <= 0) {
      budget_halt(sb, L, SBOX_BUDGET);
    } else if (budget_now() >= sb->deadline) {
      budget_halt(sb, L, SBOX_DEADLINE);
    } else {
      if (sb->left < sb->tick) {
        sb->tick = (int)sb->left;
        lua_sethook(L, budget_hook, LUA_MASKCOUNT, sb->tick);
      }
      return;
    }
  }
  budget_note_where(sb, L, 0);
  /* A yield goes through pcall to our lua_resume. Where the script is inside a
   * C call (a metamethod called from C, a sort comparator) it cannot yield:
   * raise instead, and again at the next instruction, until it can. */
  if (lua_isyieldable(L)) {
    lua_yield(L, 0);
    return;
  }
  luaL_error(L, "%s", budget_stop_text(sb->stop));
}

/* Charges `n` instructions for work done in C; raises once the call is over budget.
 * A charge that does not fit in what is left is refused whole, before the work. */
void budget_charge(lua_State *L, lua_Integer n) {
  sbox *sb = sbox_of(L);
  if (!sb->running) return;
  if (n < 0) n = LUA_MAXINTEGER;        /* an overflowed charge is refused, never credited */
  if (!sb->stop) {
    if (n >= sb->left) {
      sb->left = 0;
      budget_halt(sb, L, SBOX_BUDGET);
    } else {
      sb->left -= n;
      if (n >= BUDGET_TICK - sb->charged_since_clock) {   /* (never summed: no overflow) */
        sb->charged_since_clock = 0;
        if (budget_now() >= sb->deadline) budget_halt(sb, L, SBOX_DEADLINE);
      } else {
        sb->charged_since_clock += n;
      }
    }
  }
  if (sb->stop) {
    budget_halt(sb, L, sb->stop);
    budget_note_where(sb, L, 1);      /* the Lua code that called this C function */
    luaL_error(L, "%s", budget_stop_text(sb->stop));
  }
}

/* Fresh budgets for a new load or call. */
void budget_start(sbox *sb) {
  sb->stop = SBOX_RUNNING;
  sb->oom = 0;
  sb->left = sb->instructions;
  sb->deadline = budget_now() + (uint64_t)sb->time_ms * 1000000u;
  sb->alloc_since_clock = 0;
  sb->charged_since_clock = 0;
}

/* Runs what is on co's stack under the budgets; the lua_resume status. */
int budget_resume(sbox *sb, lua_State *co, int *nres) {
  sb->co = co;
  sb->tick = sb->left < BUDGET_TICK ? (int)sb->left : BUDGET_TICK;
  lua_sethook(co, budget_hook, LUA_MASKCOUNT, sb->tick);
  sb->running = 1;
  int st = lua_resume(co, sb->S, lua_gettop(co) - 1, nres);
  sb->running = 0;
  return st;
}
