/* Key-value spaces: named sets of rows (snapshots, checkpoints, read models)
 * kept in the `kv` database under keys `u8 space length | space | key`, so
 * that they commit in the same transaction as the events they follow. */
#ifndef CHRONICLE_KV_H
#define CHRONICLE_KV_H

#include <lua.h>
#include <lmdb.h>
#include "store.h"
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

#define KV_MAX_SPACE 64
#define KV_MAX_KEY 400
#define KV_KEY_MAX (1 + KV_MAX_SPACE + KV_MAX_KEY)

/* Builds the LMDB key for (space, key); returns its length. */
size_t kv_key(unsigned char *out, const char *space, size_t slen, const char *key, size_t klen);

/* Checks the space name at idx (raises with `where` on misuse); returns it. */
const char *kv_check_space(lua_State *L, int idx, const char *where, size_t *len);
const char *kv_check_key(lua_State *L, int idx, const char *where, size_t *len);

/* write(): encodes ops.checks/clears/deletes/puts of the table at idx into the store's scratch. */
void kv_encode_ops(lua_State *L, store *s, int ops_idx);
/* Applies them inside txn. Returns 0, an LMDB error, or KV_CHECK_FAILED with *failed = the op index. */
#define KV_CHECK_FAILED 0x100001
int kv_apply_ops(store *s, MDB_txn *txn, size_t *failed);
/* Pushes the error for a failed check. */
void kv_push_check_failure(lua_State *L, store *s, size_t failed);

/* Adds kv_get, kv_count and kv_spaces to the method table on top of the stack (kv_scan is scan.c's). */
void kv_register(lua_State *L);

#pragma GCC visibility pop
#endif
