/* chronicle-host: a C program that embeds Lua 5.4 and runs chronicle's rules.
 *
 *   chronicle-host --store DIR --rules DIR [--sandboxed DIR] [--driver FILE]
 *                  [--lua-path PATTERNS] [--lua-cpath PATTERNS]
 *
 * It opens the store in DIR, loads the rules folders with chronicle.load_scripts
 * (--rules trusted: aggregates and anything else; --sandboxed: projections and
 * reactors, each in a sandbox with the limits below), then reads one JSON
 * command per line on standard input and answers each with one JSON line on
 * standard output. Its log goes to standard error. It stops at the end of its
 * input or on SIGINT/SIGTERM, and closes the store either way.
 *
 * The work is split: this file owns the process (input, output, signals, the
 * Lua state, shutdown); driver.lua owns JSON (lua-cjson), the store and the
 * answers. Build (Debian: liblua5.4-dev):
 *
 *   cc -Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE $(pkg-config --cflags lua5.4) \
 *      host.c -o chronicle-host $(pkg-config --libs lua5.4)
 *
 * Link the shared liblua5.4 as here: chronicle.core (a C module) takes its lua_*
 * functions from the program that loads it. A host that links Lua statically
 * must export them (-Wl,-E), or the module gets a second Lua and crashes.
 *
 * THREADS. A lua_State may be used by one thread at a time, and nothing in it
 * (tables, functions, the store object) can be shared with another state. A
 * program with several threads gives each its own lua_State (made, set up and
 * closed like the one in main below), and each opens the store itself. That
 * is cheap and safe because of two things chronicle.core does with LMDB:
 *   - one environment per store directory per process: LMDB must not open the
 *     same files twice in a process (closing one descriptor would drop the
 *     other's locks), so the second chronicle.open of a directory shares the
 *     first one's environment, and the last close closes it;
 *   - MDB_NOTLS: a read transaction belongs to its handle, not to the thread
 *     that began it, so one state may hold several (open iterators), and a
 *     state may move between threads (a thread pool) if only one uses it at a
 *     time. Write transactions begin and end inside one call into chronicle.
 * LMDB has one writer at a time for the whole machine: a thread's append waits
 * while another thread's (or process's) write is open. Data goes between states
 * through the store (one thread appends, another's runner sees the event: the
 * store is the shared thing), or as plain values you copy, never as Lua values.
 * Do not fork() with a store open (the child gets an error and must reopen).
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

/* The budgets of every sandboxed rule, per call of one of its handlers: the
 * host chooses them. The deadline is generous so that a slow run (valgrind)
 * stops a runaway rule for the same reason as a fast one: its instructions. */
#define SANDBOX_MEMORY (8 * 1024 * 1024) /* bytes held by the script's state */
#define SANDBOX_INSTRUCTIONS 1000000     /* Lua VM instructions */
#define SANDBOX_TIME_MS 5000             /* wall clock */

#define MAX_LINE (1024 * 1024) /* a longer input line gets an error answer */
#define MSGH 1                 /* stack index of the message handler */
#define DRIVER_KEY "chronicle-host.driver" /* the driver table, in the registry */

#ifndef HOST_DRIVER
#define HOST_DRIVER "examples/embed/driver.lua"
#endif

struct options {
  const char *store, *rules, *sandboxed, *driver, *lua_path, *lua_cpath;
};

/* ---- signals -------------------------------------------------------------
 * A signal handler may not call into Lua (the state may be in the middle of
 * anything). It only records the signal. SIGINT and SIGTERM stay blocked all
 * the time except inside ppoll() in the main loop, between two commands: a
 * command always runs to its end and gets its answer, then the host stops. */
static volatile sig_atomic_t stop_signal = 0;
static void on_signal(int sig) { stop_signal = sig; }

/* ---- errors from Lua -----------------------------------------------------
 * Every call into Lua goes through lua_pcall with this message handler. It
 * runs where the error happened, so it can add the traceback; it turns
 * chronicle's error values (tables with __tostring) into text too. */
static int message_handler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      msg = lua_tostring(L, -1);
    else
      msg = lua_pushfstring(L, "(an error object of type %s)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Outside any lua_pcall an error has nowhere to go: Lua calls this, then
 * abort()s. This host makes no such call (see driver_call), but say so loudly. */
static int on_panic(lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  fprintf(stderr, "chronicle-host: PANIC: unprotected error in Lua: %s\n", msg ? msg : "?");
  return 0;
}

/* Runs protected, through driver_call: returns driver[name](text, n), a string.
 * Stack: [1] name, [2] text (both light userdata: C strings that the caller
 * owns), [3] the length of text, [4] n. Anything here may raise (even pushing
 * a string can fail for memory); lua_pcall in driver_call catches it, and no C
 * frame between here and there holds anything that would leak. */
static int call_driver(lua_State *L) {
  const char *name = lua_touserdata(L, 1);
  const char *text = lua_touserdata(L, 2);
  size_t len = (size_t)lua_tointeger(L, 3);
  lua_Integer n = lua_tointeger(L, 4);
  lua_getfield(L, LUA_REGISTRYINDEX, DRIVER_KEY);
  lua_getfield(L, -1, name);
  lua_pushlstring(L, text, len);
  lua_pushinteger(L, n);
  lua_call(L, 2, 1);
  if (lua_type(L, -1) != LUA_TSTRING)
    return luaL_error(L, "driver.%s returned %s, not a string", name, luaL_typename(L, -1));
  return 1;
}

/* Calls driver[name](text, n) in protected mode. Pushing a C function, light
 * userdata and integers never allocates, so nothing here can raise outside
 * the pcall. Returns lua_pcall's status with the result (or the error text
 * with its traceback) on top of the stack, for the caller to pop. The caller's
 * buffers stay valid: an error unwinds to lua_pcall, never past this frame. */
static int driver_call(lua_State *L, const char *name, const char *text, size_t len, long n) {
  lua_pushcfunction(L, call_driver);
  lua_pushlightuserdata(L, (void *)name);
  lua_pushlightuserdata(L, (void *)text);
  lua_pushinteger(L, (lua_Integer)len);
  lua_pushinteger(L, (lua_Integer)n);
  return lua_pcall(L, 4, 1, MSGH);
}

/* Writes the string on top of the stack and a newline to stdout, then pops
 * it. Returns 0, or -1 when stdout is gone (the reader went away). */
static int write_answer(lua_State *L) {
  size_t len = 0;
  const char *text = lua_tolstring(L, -1, &len);
  int ok = fwrite(text, 1, len, stdout) == len && fputc('\n', stdout) != EOF && fflush(stdout) == 0;
  lua_pop(L, 1);
  return ok ? 0 : -1;
}

/* Answers line n with an error: driver.error_answer("code: message", n).
 * The text is copied into this frame first (a C array: nothing to free). */
static int answer_error(lua_State *L, const char *code, const char *msg, size_t len, long n) {
  char text[4096];
  snprintf(text, sizeof text, "%s: %.*s", code, (int)(len < 4000 ? len : 4000), msg);
  if (driver_call(L, "error_answer", text, strlen(text), n) == LUA_OK) return write_answer(L);
  /* Not even an error answer could be made (out of memory?): a fixed one. */
  fprintf(stderr, "chronicle-host: line %ld: no answer: %s\n", n, lua_tostring(L, -1));
  lua_pop(L, 1);
  fputs("{\"req\":null,\"ok\":false,\"error\":{\"code\":\"host_error\",\"message\":\"see the host's log\"}}\n",
        stdout);
  return fflush(stdout) == 0 ? 0 : -1;
}

/* Answers one input line with driver.handle(line, n). When that raised (a rule
 * that failed, a bug in the driver), the error and its traceback go to the
 * log and the answer is an error answer with the message, up to its traceback.
 * Returns 0, or -1 when the answer could not be written. */
static int answer(lua_State *L, const char *line, size_t len, long n) {
  if (driver_call(L, "handle", line, len, n) == LUA_OK) return write_answer(L);
  size_t mlen = 0;
  const char *msg = lua_tolstring(L, -1, &mlen);
  if (msg == NULL) msg = "(no message)", mlen = strlen(msg);
  fprintf(stderr, "chronicle-host: line %ld: %s\n", n, msg);
  const char *tb = strstr(msg, "\nstack traceback:");
  int rc = answer_error(L, "script_error", msg, tb ? (size_t)(tb - msg) : mlen, n);
  lua_pop(L, 1); /* the message: msg stayed valid while it was on the stack */
  return rc;
}

/* Prepends `extra` to package[field] ("path" or "cpath"). */
static void prepend_path(lua_State *L, const char *field, const char *extra) {
  if (extra == NULL) return;
  lua_getglobal(L, "package");
  lua_getfield(L, -1, field);
  lua_pushfstring(L, "%s;%s", extra, lua_tostring(L, -1));
  lua_setfield(L, -3, field);
  lua_pop(L, 2);
}

/* Runs protected: makes the state ready and starts the driver. [1] the options. */
static int setup(lua_State *L) {
  const struct options *o = lua_touserdata(L, 1);
  /* Where Lua finds modules is the host's decision: with LUA_NOENV set before
   * the package library opens, LUA_PATH and LUA_CPATH in the user's
   * environment are ignored, and package.path/cpath start from Lua's built-in
   * defaults (which hold Debian's lua-cjson and lfs), with the host's own
   * --lua-path/--lua-cpath in front. */
  lua_pushboolean(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
  luaL_openlibs(L);
  prepend_path(L, "path", o->lua_path);
  prepend_path(L, "cpath", o->lua_cpath);

  if (luaL_loadfile(L, o->driver) != LUA_OK) return lua_error(L);
  lua_call(L, 0, 1);
  if (!lua_istable(L, -1)) return luaL_error(L, "%s must return a table", o->driver);
  lua_setfield(L, LUA_REGISTRYINDEX, DRIVER_KEY);

  /* driver.start(config): the store, the folders, and the sandbox limits. */
  lua_getfield(L, LUA_REGISTRYINDEX, DRIVER_KEY);
  lua_getfield(L, -1, "start");
  lua_createtable(L, 0, 4);
  lua_pushstring(L, o->store);
  lua_setfield(L, -2, "store");
  lua_pushstring(L, o->rules);
  lua_setfield(L, -2, "rules");
  if (o->sandboxed) {
    lua_pushstring(L, o->sandboxed);
    lua_setfield(L, -2, "sandboxed");
  }
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, SANDBOX_MEMORY);
  lua_setfield(L, -2, "memory");
  lua_pushinteger(L, SANDBOX_INSTRUCTIONS);
  lua_setfield(L, -2, "instructions");
  lua_pushinteger(L, SANDBOX_TIME_MS);
  lua_setfield(L, -2, "time_ms");
  lua_setfield(L, -2, "limits");
  lua_call(L, 1, 1);
  fprintf(stderr, "chronicle-host: %s\n", lua_tostring(L, -1));
  return 0;
}

/* Reads lines from stdin and answers them, until EOF, a signal or a write error.
 * Returns 0 when the input ended or a signal came, 1 on an I/O error. */
static int serve(lua_State *L, char *buf, const sigset_t *waitmask) {
  size_t start = 0, used = 0; /* buf[start, used) is read and not handled yet */
  long n = 0;                 /* lines seen */
  int eof = 0, skipping = 0;  /* skipping: the rest of a line that was too long */
  for (;;) {
    char *nl = memchr(buf + start, '\n', used - start);
    /* The only place where SIGINT/SIGTERM get through: ppoll unblocks them
     * while it waits (not at all when a line is already here). */
    struct pollfd in = { .fd = STDIN_FILENO, .events = POLLIN, .revents = 0 };
    struct timespec now = { 0, 0 };
    int ready = ppoll(&in, 1, (nl || eof) ? &now : NULL, waitmask);
    if (stop_signal) {
      fprintf(stderr, "chronicle-host: %s: stopping\n", stop_signal == SIGINT ? "SIGINT" : "SIGTERM");
      return 0;
    }
    if (ready < 0 && errno != EINTR) { perror("chronicle-host: ppoll"); return 1; }

    if (nl || (eof && start < used)) { /* a line (or the last one, without its newline) */
      size_t len = nl ? (size_t)(nl - (buf + start)) : used - start;
      buf[start + len] = '\0';
      const char *line = buf + start;
      start += len + (nl ? 1 : 0);
      if (skipping) { skipping = 0; continue; }
      n++;
      if (len == 0 || (len == 1 && line[0] == '\r')) continue; /* blank lines get no answer */
      if (answer(L, line, len, n) != 0) { perror("chronicle-host: stdout"); return 1; }
      continue;
    }
    if (eof) return 0;
    if (ready <= 0) continue;

    if (start > 0) { /* move the unhandled part to the front */
      memmove(buf, buf + start, used - start);
      used -= start;
      start = 0;
    }
    if (used == MAX_LINE) { /* no newline in a full buffer: refuse the line, skip the rest */
      const char *why = "line longer than 1 MiB";
      if (!skipping && answer_error(L, "bad_request", why, strlen(why), ++n) != 0) return 1;
      skipping = 1;
      used = 0;
    }
    ssize_t got = read(STDIN_FILENO, buf + used, MAX_LINE - used);
    if (got == 0) eof = 1;
    else if (got > 0) used += (size_t)got;
    else if (errno != EINTR && errno != EAGAIN) { perror("chronicle-host: stdin"); return 1; }
  }
}

static void usage(FILE *to) {
  fprintf(to, "usage: chronicle-host --store DIR --rules DIR [--sandboxed DIR] [--driver FILE]\n"
              "                      [--lua-path PATTERNS] [--lua-cpath PATTERNS]\n"
              "  JSON commands on stdin, one per line; one JSON answer per line on stdout.\n"
              "  --driver defaults to " HOST_DRIVER "; --lua-path/--lua-cpath go in front of\n"
              "  Lua's default package.path/cpath (LUA_PATH and LUA_CPATH are ignored).\n");
}

int main(int argc, char **argv) {
  struct options o = { .driver = HOST_DRIVER };
  static const struct option longopts[] = {
    { "store", required_argument, NULL, 's' },     { "rules", required_argument, NULL, 'r' },
    { "sandboxed", required_argument, NULL, 'x' }, { "driver", required_argument, NULL, 'd' },
    { "lua-path", required_argument, NULL, 'p' },  { "lua-cpath", required_argument, NULL, 'c' },
    { "help", no_argument, NULL, 'h' },            { NULL, 0, NULL, 0 },
  };
  int opt;
  while ((opt = getopt_long(argc, argv, "s:r:x:d:p:c:h", longopts, NULL)) != -1) {
    switch (opt) {
    case 's': o.store = optarg; break;
    case 'r': o.rules = optarg; break;
    case 'x': o.sandboxed = optarg; break;
    case 'd': o.driver = optarg; break;
    case 'p': o.lua_path = optarg; break;
    case 'c': o.lua_cpath = optarg; break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (o.store == NULL || o.rules == NULL || optind != argc) { usage(stderr); return 2; }

  /* Block SIGINT/SIGTERM (see serve), handle them with a flag, and let a
   * closed stdout be a write error instead of a silent death by SIGPIPE.
   * Programs that Lua code starts (io.popen, os.execute) inherit the blocked
   * mask: a rule that starts one cannot count on SIGTERM reaching it. */
  sigset_t stops, waitmask;
  sigemptyset(&stops);
  sigaddset(&stops, SIGINT);
  sigaddset(&stops, SIGTERM);
  sigprocmask(SIG_BLOCK, &stops, &waitmask); /* waitmask: the mask as it was */
  sigdelset(&waitmask, SIGINT);
  sigdelset(&waitmask, SIGTERM);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  /* The input buffer belongs to this frame and is freed here on every path:
   * that is only possible because no Lua error ever unwinds through main. */
  char *buf = malloc(MAX_LINE + 1);
  lua_State *L = luaL_newstate();
  if (buf == NULL || L == NULL) {
    fprintf(stderr, "chronicle-host: out of memory\n");
    free(buf);
    if (L) lua_close(L);
    return 1;
  }
  lua_atpanic(L, on_panic);
  lua_pushcfunction(L, message_handler); /* stays at MSGH for every lua_pcall */

  int status = 1;
  lua_pushcfunction(L, setup);
  lua_pushlightuserdata(L, &o);
  if (lua_pcall(L, 1, 0, MSGH) != LUA_OK) {
    fprintf(stderr, "chronicle-host: cannot start: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
  } else {
    status = serve(L, buf, &waitmask);
    /* The clean shutdown: the driver closes the store (its transactions, its
     * sandboxes' states are released with it; the LMDB environment closes
     * with the last store of this directory in the process). */
    if (driver_call(L, "close", "", 0, 0) == LUA_OK) {
      fprintf(stderr, "chronicle-host: %s\n", lua_tostring(L, -1));
    } else {
      fprintf(stderr, "chronicle-host: closing: %s\n", lua_tostring(L, -1));
      status = 1;
    }
    lua_pop(L, 1);
  }
  /* lua_close runs every finalizer left (a store the driver did not close is
   * closed here) and frees the state; only then may the process exit. */
  lua_close(L);
  free(buf);
  return status;
}
