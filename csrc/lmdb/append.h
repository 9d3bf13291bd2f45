/* The store methods of append.c: append, append_many, write. */
#ifndef CHRONICLE_APPEND_H
#define CHRONICLE_APPEND_H

#include <lua.h>
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

/* Adds append, append_many, write to the method table on top of the stack. */
void append_register(lua_State *L);

#pragma GCC visibility pop
#endif
