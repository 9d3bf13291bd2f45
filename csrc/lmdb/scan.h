/* The store methods of scan.c: read, read_all, fold, streams, kv_scan, position_of. */
#ifndef CHRONICLE_SCAN_H
#define CHRONICLE_SCAN_H

#include <lua.h>
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

/* Adds read, read_all, fold, streams, kv_scan, position_of to the method table on top of the stack. */
void scan_register(lua_State *L);

#pragma GCC visibility pop
#endif
