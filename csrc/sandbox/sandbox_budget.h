/* The sandbox's budgets (sandbox_budget.c): memory in the allocator, instructions
 * and the deadline in a count hook and in what C functions charge for their work. */
#ifndef CHRONICLE_SANDBOX_BUDGET_H
#define CHRONICLE_SANDBOX_BUDGET_H

#include <lua.h>
#include "sandbox_internal.h"
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

/* The allocator of a sandbox's state (ud is its sbox): growth past the memory
 * budget is refused and sets sb->oom. */
void *budget_alloc(void *ud, void *ptr, size_t osize, size_t nsize);
/* Fresh budgets for a new load or call: all its instructions, and a deadline from now. */
void budget_start(sbox *sb);
/* Runs what is on co's stack under the budgets; the lua_resume status. */
int budget_resume(sbox *sb, lua_State *co, int *nres);
/* Charges `n` instructions for work done in C; raises once the call is over budget. */
void budget_charge(lua_State *L, lua_Integer n);

#pragma GCC visibility pop
#endif
