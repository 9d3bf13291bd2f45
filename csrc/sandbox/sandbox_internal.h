/* What the sandbox's files share: the handle of one sandbox, which any C
 * function running in its state finds through the allocator's ud. */
#ifndef CHRONICLE_SANDBOX_INTERNAL_H
#define CHRONICLE_SANDBOX_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <lua.h>
#include "common/buf.h"
#include "common/codec.h"
#include "sandbox.h"
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

enum { SBOX_RUNNING = 0, SBOX_BUDGET, SBOX_DEADLINE };   /* sbox.stop */

/* What a proxy method hands the host besides its key (the host names them at sandbox.new). */
enum { PROXY_KEY, PROXY_VALUE, PROXY_FUNCTION };

/* One method of the proxy: the script's proxy:name(k [, v | fn]) calls host_object:name(...). */
typedef struct proxy_method {
  char name[SANDBOX_MAX_METHOD_NAME + 1];
  int kind;                       /* PROXY_KEY: (k); PROXY_VALUE: (k, copy of v); PROXY_FUNCTION: (k, bridge to fn) */
} proxy_method;

/* One sandbox: the userdata sandbox.new returns (chronicle.sandbox). */
typedef struct sbox {
  lua_State *S;                   /* the script's state; NULL once closed */
  size_t used, limit;             /* bytes allocated in S, and the budget */
  lua_Integer instructions;       /* budget per call */
  lua_Integer time_ms;            /* deadline per call */
  char name[SANDBOX_MAX_NAME + 4];
  char handlers[SANDBOX_MAX_METHOD_NAME + 1];   /* the definition's field that sb:call looks handlers up in */
  proxy_method methods[SANDBOX_MAX_METHODS];    /* the proxy's methods, in the order the host gave them */
  int nmethods;
  int loaded;                     /* a definition is stored */
  int busy;                       /* a load or call is under way: no re-entry, no close */
  /* during a load or call */
  int running;                    /* script code may be executing (inside lua_resume) */
  int stop;                       /* SBOX_BUDGET or SBOX_DEADLINE once the call must end */
  int oom;                        /* an allocation was refused */
  lua_Integer left;               /* instructions left */
  int tick;                       /* the count hook's current period */
  uint64_t deadline;              /* CLOCK_MONOTONIC, ns */
  size_t alloc_since_clock;
  lua_Integer charged_since_clock;
  lua_State *co;                  /* the call's coroutine */
  lua_State *host;                /* the caller's thread, for view callbacks */
  int has_view;
  lua_Integer serial;             /* call number: view proxies of other calls refuse */
  lua_Integer update_serial;      /* the view:update whose bridge may run now (0: none) */
  lua_Integer update_counter;
  lua_Integer calls;
  lua_Integer last_instructions;
  size_t last_copied;             /* bytes (as codec_cap counts them) the last load or call copied out */
  buf buf;                        /* encoded values on their way across */
  codec_cap out;                  /* what this load or call may still copy out to the host */
  char out_message[160];          /* the error when it copies more */
  char where[96];                  /* chunk:line where the call was stopped */
  char detail[SANDBOX_MAX_MESSAGE + 96];   /* why the last load or call failed */
} sbox;

/* Every function running in S finds its sandbox through the allocator's ud,
 * which a script cannot reach or change. */
static inline sbox *sbox_of(lua_State *S) {
  void *ud;
  lua_getallocf(S, &ud);
  return ud;
}

/* (sandbox.c) The text of the error value at idx of thread T, cut to fit
 * out[0..size), without allocating in T (so without running any metamethod). */
void sbox_value_text(lua_State *T, int idx, char *out, size_t size);

#pragma GCC visibility pop
#endif
