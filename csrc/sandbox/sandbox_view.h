/* The view proxy (sandbox_view.c): a table in the script whose get, put, update
 * and delete call the host's view, with keys and values copied by the codec. */
#ifndef CHRONICLE_SANDBOX_VIEW_H
#define CHRONICLE_SANDBOX_VIEW_H

#include <lua.h>
#include "sandbox_internal.h"
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

/* Pushes onto S a view proxy for sb's current call. Its methods find
 * {sandbox, view} in the host's registry at key sb, set for the call's duration. */
void view_push(lua_State *S, sbox *sb);

#pragma GCC visibility pop
#endif
