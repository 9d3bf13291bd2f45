/* The store methods of watch.c: wait, wait_fd. */
#ifndef CHRONICLE_WATCH_H
#define CHRONICLE_WATCH_H

#include <lua.h>
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

struct store;
/* Closes the store's inotify handle, if wait opened one (store.c, when the handle closes). */
void watch_close(struct store *s);

/* Adds wait, wait_fd to the method table on top of the stack. */
void watch_register(lua_State *L);

#pragma GCC visibility pop
#endif
