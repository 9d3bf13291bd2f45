/* The store methods of append.c: append, append_many, write. */
#ifndef CHRONICLE_APPEND_H
#define CHRONICLE_APPEND_H

#include <lua.h>

/* Adds append, append_many, write to the method table on top of the stack. */
void append_register(lua_State *L);

#endif
