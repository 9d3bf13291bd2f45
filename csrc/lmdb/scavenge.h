/* The store methods of scavenge.c: scavenge_stream, scavenged. */
#ifndef CHRONICLE_SCAVENGE_H
#define CHRONICLE_SCAVENGE_H

#include <lua.h>
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

/* Adds scavenge_stream and scavenged to the method table on top of the stack. */
void scavenge_register(lua_State *L);

#pragma GCC visibility pop
#endif
