/* The store methods of verify.c: verify. */
#ifndef CHRONICLE_VERIFY_H
#define CHRONICLE_VERIFY_H

#include <lua.h>
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

/* Adds verify to the method table on top of the stack. */
void verify_register(lua_State *L);

#pragma GCC visibility pop
#endif
