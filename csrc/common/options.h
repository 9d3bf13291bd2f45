/* The one checker of the core's options tables (the Lua side has
 * chronicle.options): unknown names and values of the wrong type raise. */
#ifndef CHRONICLE_OPTIONS_H
#define CHRONICLE_OPTIONS_H

#include <lua.h>
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

/* The types an option may have: one or several, or'ed. */
#define OPT_BOOLEAN  1u
#define OPT_INTEGER  2u      /* a number with an exact integer value (2^30 too), as luaL_checkinteger */
#define OPT_NUMBER   4u      /* any number (implies OPT_INTEGER) */
#define OPT_STRING   8u
#define OPT_TABLE    16u
#define OPT_FUNCTION 32u
#define OPT_ANY      63u     /* any type: the caller checks the value itself */

typedef struct opt_spec {
  const char *name;          /* NULL ends a list */
  unsigned types;
} opt_spec;

/* Checks the options table at idx against specs (listed in the order the
 * error names them). Returns idx made absolute, or 0 when it is none or nil.
 * Raises "fn: options must be a table, got T", "fn: unknown option 'x'
 * (allowed: a, b)" or "fn: option 'x' must be a boolean, got string". */
int opt_check(lua_State *L, int idx, const char *fn, const opt_spec *specs);

/* The options of store:verify and store:backup, read the same way on every backend. verify's
 * at idx: {max_problems = an integer >= 1 (default 100), progress = fn}; sets *max_problems.
 * backup's: {progress = fn}. Both push `progress` and return its stack index when it is given,
 * else push nothing and return 0; they raise on misuse, naming verify or backup. */
int opt_verify(lua_State *L, int idx, lua_Integer *max_problems);
int opt_backup(lua_State *L, int idx);
/* store:write's table at idx, on every backend: appends, checks, clears, deletes, puts (lists)
 * and dry_run (a boolean), nothing else. Returns whether dry_run is true. */
int opt_write(lua_State *L, int idx);

/* The options tables of the reads, the lists every backend checks them against (opt_check):
 * read, read_all, fold (a query table: read_all's plus `stream` and `until_position`),
 * streams and kv_scan. */
extern const opt_spec opt_read_spec[], opt_read_all_spec[], opt_fold_spec[], opt_streams_spec[],
    opt_kv_scan_spec[];
/* The integer option `name` of the checked options table at opts (0: none), dflt when absent;
 * raises "fn: option 'name' must be an integer >= min" for a value below min. */
lua_Integer opt_integer(lua_State *L, int opts, const char *fn, const char *name, lua_Integer dflt,
                        lua_Integer min);

#pragma GCC visibility pop
#endif
