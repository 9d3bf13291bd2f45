/* The store methods of backup.c: backup. */
#ifndef CHRONICLE_BACKUP_H
#define CHRONICLE_BACKUP_H

#include <lua.h>
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

/* Adds backup to the method table on top of the stack. */
void backup_register(lua_State *L);

#pragma GCC visibility pop
#endif
