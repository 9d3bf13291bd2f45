/* A host program that embeds Lua, opens a store, then forks: the child must
 * get a clear error from the inherited store and be able to open it anew. */
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>
#include <lauxlib.h>
#include <lualib.h>

static const char *run(lua_State *L, const char *code) {
  if (luaL_dostring(L, code) != LUA_OK) return lua_tostring(L, -1);
  return lua_isstring(L, -1) ? lua_tostring(L, -1) : "ok";
}

int main(int argc, char **argv) {
  if (argc != 4) return 2;   /* store dir, package.path, package.cpath */
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  lua_pushstring(L, argv[1]);
  lua_setglobal(L, "dir");
  lua_getglobal(L, "package");
  lua_pushstring(L, argv[2]);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, argv[3]);
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
  printf("parent: %s\n", run(L, "chronicle = require 'chronicle'; store = assert(chronicle.open(dir));"
                                "assert(store:append('s', { { type = 'Before' } })); return tostring(store:head())"));
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    printf("child inherited: %s\n", run(L, "return tostring(store:head())"));
    /* Closing the inherited store must leave the parent's LMDB handles (its
     * environment and its kept read transaction) alone. */
    printf("child closed inherited: %s\n", run(L, "store:close(); return tostring(store:is_open())"));
    printf("child reopened: %s\n", run(L, "local again = assert(chronicle.open(dir));"
                                          "assert(again:append('s', { { type = 'FromChild' } }));"
                                          "return tostring(again:head())"));
    fflush(stdout);
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  printf("child exit: %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  printf("parent reads after: %s\n", run(L, "return tostring(store:head())"));
  printf("parent after: %s\n", run(L, "assert(store:append('s', { { type = 'After' } })); return tostring(store:head())"));
  lua_close(L);
  return 0;
}
