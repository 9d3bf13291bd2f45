/* The utilities every backend module and chronicle.common give Lua: uuid, now, hash. */
#ifndef CHRONICLE_LIB_H
#define CHRONICLE_LIB_H

#include <lua.h>

/* Sets uuid, now and hash on the table at the top of the stack. */
void common_lib_register(lua_State *L);

#endif
