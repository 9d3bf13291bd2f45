/* The keyring of chronicle.crypto, shared by crypto.c (keys, rows, one box at a time) and
 * batch.c (a whole write's events sealed, one event revealed, in one call each). */
#ifndef CHRONICLE_CRYPTO_RING_H
#define CHRONICLE_CRYPTO_RING_H

#include <stddef.h>
#include <sodium.h>
#include <lua.h>
#include "common/buf.h"
#include "common/seal.h"
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

#define KEY_BYTES crypto_aead_xchacha20poly1305_ietf_KEYBYTES     /* 32 */
#define NONCE_BYTES crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  /* 24 */
#define TAG_BYTES crypto_aead_xchacha20poly1305_ietf_ABYTES       /* 16 */
#define MAX_SUBJECT 200
#define BOX_AD_MAX (16 + MAX_SUBJECT)

#define RING_MT "chronicle.crypto.keyring"
#define SUBJECT_MT "chronicle.crypto.subject_key"

/* A subject key in a keyring: inline in a userdata (sodium_malloc maps guard pages per call,
 * too slow for a key per subject per read), wiped by ring:close and __gc. `nonce_key` is the
 * BLAKE2b subkey that derives sealing nonces, made on the first seal (reads never need it). */
typedef struct subject_key {
  unsigned char key[KEY_BYTES];
  unsigned char nonce_key[crypto_generichash_KEYBYTES];
  int live;
  int nonce_ready;
} subject_key;

/* A keyring: the subject keys one read or write has unwrapped. Its uservalue 1 maps
 * subject -> key userdata (or false: a read found the subject forgotten); the master (or nil)
 * is in uservalue 2. */
typedef struct keyring {
  event_sealer sealer;   /* first: the backends reach it through the userdata (common/seal.h) */
  int closed;
  size_t count;  /* keys added */
  buf plain;     /* the encoding being sealed, reused (wiped after each seal, freed on close) */
  buf box;       /* the last box sealed (ciphertext only), reused */
} keyring;

/* The open ring at `idx` (raises when it is not one, or closed). */
keyring *ring_check(lua_State *L, int idx);
/* The key of the subject (string at `subject`) in the ring at `ring`, or NULL; *gone is set
 * when the ring marks the subject forgotten. The stack is unchanged. */
subject_key *ring_lookup(lua_State *L, int ring, int subject, int *gone);
/* ring_lookup in the ring's keys table (its uservalue 1) at `keys`, pushed once for many lookups. */
subject_key *ring_lookup_in(lua_State *L, int keys, int subject, int *gone);
/* Unwraps the key row at `row` into the ring at `ring` for the subject at `subject`. Returns the
 * key, or NULL with nil, err (bad_key, corrupt) pushed. */
subject_key *ring_add_row(lua_State *L, int ring, int subject, int row);
/* Marks the subject at `subject` forgotten in the ring at `ring`. */
void ring_mark_gone(lua_State *L, int ring, int subject);
/* Seals the value at `value` with `k` (associated data ad[0..adlen)) into r->box.
 * Raises on a value the codec cannot store (the ring owns the buffers: nothing leaks). */
void box_seal(lua_State *L, keyring *r, subject_key *k, const unsigned char *ad, size_t adlen, int value);
/* The event_sealer's seal_meta (batch.c). */
void ring_seal_meta(lua_State *L, int ring, int meta, int subject, int personal, const unsigned char *id,
                    buf *out, long long index);
/* Pushes the value in `box` opened with `k`, or nil, err (corrupt); returns the number pushed.
 * `id` names the event in messages (NULL: the UUID in ad's first 16 bytes); `strings` is a
 * short-string cache (codec_decode_cached) or NULL. */
int box_open(lua_State *L, const subject_key *k, const unsigned char *ad, size_t adlen,
             const unsigned char *box, size_t len, const char *id, codec_strings *strings);

/* crypto.keyring(master | nil) and ring:close() (crypto.c), as Lua C functions. */
int crypto_keyring(lua_State *L);
int ring_close(lua_State *L);

/* batch.c: registers ring:prepare in the methods table at the top. */
void batch_register(lua_State *L);
/* reveal.c: registers ring:reveal in the methods table at the top; reveal_open registers the
 * revealer's metatable and crypto.revealer in the module table at the top. */
void reveal_register(lua_State *L);
void reveal_open(lua_State *L);

#pragma GCC visibility pop
#endif
