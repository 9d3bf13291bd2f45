/* The store methods of verify.c: verify. */
#ifndef CHRONICLE_VERIFY_H
#define CHRONICLE_VERIFY_H

#include <lua.h>

/* Adds verify to the method table on top of the stack. */
void verify_register(lua_State *L);

#endif
