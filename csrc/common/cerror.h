/* Error values for outcomes a correct program must handle: `nil, err` where
 * err is a table {code=, message=, ...} sharing one metatable with __tostring. */
#ifndef CHRONICLE_CERROR_H
#define CHRONICLE_CERROR_H

#include <lua.h>
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

/* Pushes a new error table (code, message); returns its stack index. */
int cerr_new(lua_State *L, const char *code, const char *fmt, ...);
/* Pushes nil and a new error; returns 2 so a C function can `return cerr_result(...)`. */
int cerr_result(lua_State *L, const char *code, const char *fmt, ...);
/* The stable code for an LMDB or errno failure. */
const char *cerr_code_of(int rc);
/* nil, err for an LMDB/errno failure while doing `what`. */
int cerr_mdb_result(lua_State *L, int rc, const char *what);
/* Registers the metatable and `core.error(code, message, fields)`. */
void cerr_open(lua_State *L);

#pragma GCC visibility pop
#endif
