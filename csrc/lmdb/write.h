/* The store method of write.c: write. */
#ifndef CHRONICLE_WRITE_H
#define CHRONICLE_WRITE_H

#include <lua.h>
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

/* Adds write to the method table on top of the stack. */
void write_register(lua_State *L);

#pragma GCC visibility pop
#endif
