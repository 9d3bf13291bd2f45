/* The store methods of backup.c: backup. */
#ifndef CHRONICLE_BACKUP_H
#define CHRONICLE_BACKUP_H

#include <lua.h>

/* Adds backup to the method table on top of the stack. */
void backup_register(lua_State *L);

#endif
