/* store:wait(after, timeout): blocks until the log has an event after
 * position `after`, woken by inotify on data.mdb when another process (or
 * this one) writes, with a short poll as a fallback. No transaction is held
 * while waiting. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <lauxlib.h>
#include "common/cerror.h"
#include "common/options.h"
#include "watch.h"
#include "logdb.h"
#include "store.h"

#define WATCH_POLL_MS 50   /* fallback when inotify is unavailable or misses a write */

static double watch_clock(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One inotify handle per store, kept open: closing one can block in the kernel
 * for milliseconds, which a runner waiting in a loop would pay each time.
 * Returns it, or -1 when inotify is unavailable (wait then polls). */
static int watch_fd(store *s) {
  if (s->watch_fd < 0) {
    char path[4200];
    snprintf(path, sizeof path, "%s/data.mdb", s->e->path);
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd >= 0 && inotify_add_watch(fd, path, IN_MODIFY) < 0) {
      close(fd);
      fd = -1;
    }
    s->watch_fd = fd;
  }
  return s->watch_fd;
}

void watch_close(store *s) {
  if (s->watch_fd < 0) return;
  close(s->watch_fd);
  s->watch_fd = -1;
}

static void watch_drain(int fd) {
  char drain[4096];
  while (read(fd, drain, sizeof drain) > 0) {}
}

/* store:wait_fd() -> a file descriptor that becomes readable when the log may
 * have moved, for an event loop to poll (the server does); store:wait(after, 0)
 * drains it and says whether it did. nil where there is none (wait polls). */
static int watch_wait_fd(lua_State *L) {
  store *s = store_check(L, 1);
  int fd = watch_fd(s);
  if (fd < 0) lua_pushnil(L);
  else lua_pushinteger(L, fd);
  return 1;
}

/* store:wait(after [, timeout_seconds]) -> head (> after) | false on timeout | nil, err */
static int watch_wait(lua_State *L) {
  store *s = store_check(L, 1);
  lua_Integer after = luaL_checkinteger(L, 2);
  luaL_argcheck(L, after >= 0, 2, "position must be >= 0");
  /* No timeout waits for ever; a negative or NaN one is a mistake, not "for ever". */
  double timeout = luaL_optnumber(L, 3, -1);
  if (!lua_isnoneornil(L, 3))
    luaL_argcheck(L, timeout >= 0, 3, "timeout must be a number of seconds >= 0 (nil: no timeout)");
  double deadline = timeout < 0 ? -1 : watch_clock() + timeout;

  int fd = watch_fd(s);
  if (fd >= 0) watch_drain(fd);        /* what woke an event loop polling wait_fd */
  uint64_t head = 0;
  int rc;
  /* A write to data.mdb wakes us before the writer publishes its commit in
   * lock.mdb (a memory store inotify cannot see), so after a wake the head
   * is checked again soon, backing off from 1 ms to the normal poll. */
  int soon_ms = 0;
  for (;;) {
    if ((rc = store_read_head(s, &head))) break;
    if (head > (uint64_t)after) break;
    int wait_ms = soon_ms ? soon_ms : WATCH_POLL_MS;
    if (soon_ms) soon_ms = soon_ms * 2 > WATCH_POLL_MS ? 0 : soon_ms * 2;
    if (deadline >= 0) {
      double left = deadline - watch_clock();
      if (left <= 0) break;
      if (left * 1000 < wait_ms) wait_ms = (int)(left * 1000) + 1;
    }
    if (fd >= 0) {
      struct pollfd p = { fd, POLLIN, 0 };
      if (poll(&p, 1, wait_ms) > 0) {
        watch_drain(fd);
        soon_ms = 1;
      }
    } else {
      usleep((useconds_t)wait_ms * 1000);
    }
  }
  if (rc) return cerr_mdb_result(L, rc, "wait");
  if (head > (uint64_t)after) lua_pushinteger(L, (lua_Integer)head);
  else lua_pushboolean(L, 0);
  return 1;
}

void watch_register(lua_State *L) {
  lua_pushcfunction(L, watch_wait);
  lua_setfield(L, -2, "wait");
  lua_pushcfunction(L, watch_wait_fd);
  lua_setfield(L, -2, "wait_fd");
}
