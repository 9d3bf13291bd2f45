/* string.find, match, gmatch and gsub for the sandbox (sandbox_pattern.c): Lua's
 * pattern language, with every matching step charged to the instruction budget. */
#ifndef CHRONICLE_SANDBOX_PATTERN_H
#define CHRONICLE_SANDBOX_PATTERN_H

#include <lua.h>
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

int pm_str_find(lua_State *L);
int pm_str_match(lua_State *L);
int pm_str_gmatch(lua_State *L);
int pm_str_gsub(lua_State *L);

#pragma GCC visibility pop
#endif
