/* What a chronicle .so shows outside: its luaopen_* function and nothing else. The Makefile
 * compiles with -fvisibility=hidden; the rockspec's builtin build cannot pass a compiler flag, so
 * every header of ours also declares its functions between `#pragma GCC visibility push(hidden)`
 * and `pop` (after its system includes, whose functions must stay visible to be linked), and a
 * function defined in a .c file without a declaration in a header is static. */
#ifndef CHRONICLE_EXPORT_H
#define CHRONICLE_EXPORT_H

#define CHRONICLE_EXPORT __attribute__((visibility("default")))

#endif
