/* The utilities every backend module and chronicle.common give Lua: uuid, now, hash. */
#ifndef CHRONICLE_LIB_H
#define CHRONICLE_LIB_H

#include <lua.h>
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

/* Sets uuid, now and hash on the table at the top of the stack. */
void common_lib_register(lua_State *L);

#pragma GCC visibility pop
#endif
