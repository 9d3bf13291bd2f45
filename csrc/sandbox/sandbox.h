/* The sandbox (chronicle.sandbox, its own module: luaopen_chronicle_sandbox in
 * sandbox.c): an untrusted script in its own lua_State, with a memory budget
 * in its allocator and an instruction budget and a wall-clock deadline per
 * call. Nothing is shared with the host but values copied by the codec, and
 * the callbacks of the proxy whose methods the host names at sandbox.new. */
#ifndef CHRONICLE_SANDBOX_H
#define CHRONICLE_SANDBOX_H

#include <lua.h>
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

#define SANDBOX_MT "chronicle.sandbox"

/* Defaults of sandbox.new. */
#define SANDBOX_DEFAULT_MEMORY (16 << 20)        /* bytes the script's state may hold */
#define SANDBOX_DEFAULT_INSTRUCTIONS 10000000    /* VM instructions per call */
#define SANDBOX_DEFAULT_TIME_MS 1000             /* wall-clock deadline per call */
#define SANDBOX_MIN_MEMORY (256 << 10)           /* smallest budget accepted */

/* Caps on what C functions can do between two checks of the budgets. */
#define SANDBOX_MAX_PATTERN 4096     /* bytes of a find/match/gmatch/gsub pattern (plain find: no cap) */
#define SANDBOX_BYTES_PER_STEP 64    /* library functions pay one instruction per this many input bytes */
#define SANDBOX_MAX_MESSAGE 1024     /* bytes of a script's error message copied out */
#define SANDBOX_MAX_NAME 200         /* bytes of the script name kept */
#define SANDBOX_MAX_METHODS 16       /* methods of the proxy a call hands the script */
#define SANDBOX_MAX_METHOD_NAME 32   /* bytes of a proxy method's name, and of the handlers field's */
/* What one load or call may copy out to the host (its result, view keys and
 * values, view:update results, a definition's description), counted as what
 * the copies take in the host (codec.h, codec_cap), is its memory budget. */

#pragma GCC visibility pop
#endif
