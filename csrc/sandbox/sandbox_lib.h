/* The library a script sees (sandbox_lib.c): Lua's own, less what reaches outside
 * the state, with each C function that could run long paying for its work first. */
#ifndef CHRONICLE_SANDBOX_LIB_H
#define CHRONICLE_SANDBOX_LIB_H

#include <lua.h>
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

/* Runs in a new sandbox's state, protected: opens the libraries and takes out
 * what a script must not have. */
int slib_open(lua_State *S);

#pragma GCC visibility pop
#endif
