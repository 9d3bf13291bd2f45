/* chronicle.crypto: the libsodium half of erasing personal data (crypto-shredding). Subject
 * keys, the key that wraps them (a key file), and sealing an event's `personal` table with
 * XChaCha20-Poly1305 (IETF AEAD). Keys live only in sodium_malloc'd memory that is wiped on
 * close and __gc; Lua never sees a key, only the rows the store keeps (a key wrapped by the
 * key file, or the raw key when the store has no key file). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sodium.h>
#include <lauxlib.h>
#include "common/buf.h"
#include "common/cerror.h"
#include "common/codec.h"
#include "common/export.h"
#include "common/uuid.h"
#include "crypto/ring.h"

CHRONICLE_EXPORT int luaopen_chronicle_crypto(lua_State *L);


/* A subject key row, as stored in the `subject_keys` space: one tag byte, then the key
 * (ROW_PLAIN) or a nonce and the key sealed with the key file's key (ROW_WRAPPED). */
#define ROW_PLAIN 1
#define ROW_WRAPPED 2
#define ROW_PLAIN_LEN (1 + KEY_BYTES)
#define ROW_WRAPPED_LEN (1 + NONCE_BYTES + KEY_BYTES + TAG_BYTES)

static const char ad_wrap[] = "chronicle subject key";
static const char ad_check[] = "chronicle key check";
static const char nonce_context[] = "chronicle personal nonce";

#define KEY_MT "chronicle.crypto.key"

/* One secret key (the key file's, or a subject's) in guarded memory. */
typedef struct secret {
  unsigned char *key;   /* sodium_malloc'd KEY_BYTES, NULL once wiped */
} secret;

static void secret_wipe(secret *s) {
  if (s->key) {
    sodium_memzero(s->key, KEY_BYTES);
    sodium_free(s->key);
    s->key = NULL;
  }
}

static int key_gc(lua_State *L) {
  secret_wipe(luaL_checkudata(L, 1, KEY_MT));
  return 0;
}

/* Pushes a new userdata owning fresh guarded memory for a key (raises on no memory,
 * before any secret is in it). */
static secret *secret_new(lua_State *L) {
  secret *s = lua_newuserdatauv(L, sizeof *s, 0);
  s->key = NULL;
  luaL_setmetatable(L, KEY_MT);
  s->key = sodium_malloc(KEY_BYTES);
  if (!s->key) luaL_error(L, "crypto: out of guarded memory for a key");
  return s;
}

static secret *check_master(lua_State *L, int idx) {
  secret *s = luaL_checkudata(L, idx, KEY_MT);
  if (!s->key) luaL_error(L, "crypto: the key file's key was closed");
  return s;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* crypto.load_key_file(path) -> key | nil, err(bad_key)
 * The file holds the 32 key bytes, or them as 64 hex digits (a trailing newline allowed). */
static int crypto_load_key_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  secret *s = secret_new(L);
  unsigned char *raw = sodium_malloc(130);
  if (!raw) return luaL_error(L, "crypto: out of guarded memory for a key");
  FILE *f = fopen(path, "rb");
  if (!f) {
    int e = errno;
    sodium_free(raw);
    return cerr_result(L, "bad_key", "key file %s: %s", path, strerror(e));
  }
  size_t n = fread(raw, 1, 130, f);
  int bad = ferror(f);
  fclose(f);
  while (n > 0 && (raw[n - 1] == '\n' || raw[n - 1] == '\r')) n--;
  int ok = 0;
  if (!bad && n == 2 * KEY_BYTES) {
    ok = 1;
    for (size_t i = 0; i < KEY_BYTES; i++) {
      int hi = hexval(raw[2 * i]), lo = hexval(raw[2 * i + 1]);
      if (hi < 0 || lo < 0) { ok = 0; break; }
      s->key[i] = (unsigned char)(hi << 4 | lo);
    }
  } else if (!bad && n == KEY_BYTES) {
    memcpy(s->key, raw, KEY_BYTES);
    ok = 1;
  }
  sodium_memzero(raw, 130);
  sodium_free(raw);
  if (!ok) {
    secret_wipe(s);
    return cerr_result(L, "bad_key", "key file %s: expected 32 bytes or 64 hex digits", path);
  }
  return 1;
}

/* crypto.new_key_file(path) -> true | nil, err: writes a new random key (64 hex digits)
 * to a file that must not exist yet, readable by its owner only. */
static int crypto_new_key_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  unsigned char key[KEY_BYTES];
  char hex[2 * KEY_BYTES + 2];
  randombytes_buf(key, sizeof key);
  sodium_bin2hex(hex, sizeof hex, key, sizeof key);
  sodium_memzero(key, sizeof key);
  hex[2 * KEY_BYTES] = '\n';
  hex[2 * KEY_BYTES + 1] = 0;
  /* "x": never overwrite a key (O_EXCL); fchmod before the key is written */
  FILE *f = fopen(path, "wx");
  if (!f) {
    int e = errno;
    sodium_memzero(hex, sizeof hex);
    return cerr_result(L, e == EEXIST ? "exists" : "io", "key file %s: %s", path, strerror(e));
  }
  int ok = fchmod(fileno(f), 0600) == 0 && fwrite(hex, 1, 2 * KEY_BYTES + 1, f) == 2 * KEY_BYTES + 1;
  int e = errno;
  ok = (fclose(f) == 0) && ok;
  sodium_memzero(hex, sizeof hex);
  if (!ok) return cerr_result(L, "io", "key file %s: %s", path, strerror(e));
  lua_pushboolean(L, 1);
  return 1;
}

/* crypto.check_row(master) -> a row proving which key file wrote a store's keys */
static int crypto_check_row(lua_State *L) {
  secret *m = check_master(L, 1);
  unsigned char row[NONCE_BYTES + TAG_BYTES];
  randombytes_buf(row, NONCE_BYTES);
  crypto_aead_xchacha20poly1305_ietf_encrypt(row + NONCE_BYTES, NULL, NULL, 0,
      (const unsigned char *)ad_check, sizeof ad_check - 1, NULL, row, m->key);
  lua_pushlstring(L, (const char *)row, sizeof row);
  return 1;
}

/* crypto.check(master, row) -> true when `row` was made by check_row with this key */
static int crypto_check(lua_State *L) {
  secret *m = check_master(L, 1);
  size_t len;
  const unsigned char *row = (const unsigned char *)luaL_checklstring(L, 2, &len);
  int ok = len == NONCE_BYTES + TAG_BYTES &&
    crypto_aead_xchacha20poly1305_ietf_decrypt(NULL, NULL, NULL, row + NONCE_BYTES, TAG_BYTES,
        (const unsigned char *)ad_check, sizeof ad_check - 1, row, m->key) == 0;
  lua_pushboolean(L, ok);
  return 1;
}

/* crypto.new_row(master | nil, subject) -> a new subject key's row (wrapped when a master is given;
 * the subject is the wrap's associated data, so a row cannot be moved to another subject) */
static int crypto_new_row(lua_State *L) {
  secret *m = lua_isnoneornil(L, 1) ? NULL : check_master(L, 1);
  size_t slen;
  const char *subject = luaL_checklstring(L, 2, &slen);
  /* On the stack, wiped below: sodium_malloc maps guard pages per call (44 us a key, more than
   * the subject's events cost to seal), and the key then lives in a keyring's ordinary memory. */
  unsigned char key[KEY_BYTES];
  crypto_aead_xchacha20poly1305_ietf_keygen(key);
  unsigned char row[ROW_WRAPPED_LEN];
  size_t len;
  if (m) {
    row[0] = ROW_WRAPPED;
    randombytes_buf(row + 1, NONCE_BYTES);
    unsigned char ad[sizeof ad_wrap - 1 + 256];
    size_t adlen = sizeof ad_wrap - 1;
    memcpy(ad, ad_wrap, adlen);
    memcpy(ad + adlen, subject, slen < 256 ? slen : 256);
    adlen += slen < 256 ? slen : 256;
    crypto_aead_xchacha20poly1305_ietf_encrypt(row + 1 + NONCE_BYTES, NULL, key, KEY_BYTES,
        ad, adlen, NULL, row + 1, m->key);
    len = ROW_WRAPPED_LEN;
  } else {
    row[0] = ROW_PLAIN;
    memcpy(row + 1, key, KEY_BYTES);
    len = ROW_PLAIN_LEN;
  }
  sodium_memzero(key, KEY_BYTES);
  lua_pushlstring(L, (const char *)row, len);
  sodium_memzero(row, sizeof row);
  return 1;
}

static int subject_key_gc(lua_State *L) {
  subject_key *k = lua_touserdata(L, 1);
  sodium_memzero(k, sizeof *k);
  return 0;
}

keyring *ring_check(lua_State *L, int idx) {
  keyring *r = luaL_checkudata(L, idx, RING_MT);
  if (r->closed) luaL_error(L, "crypto: keyring used after close");
  return r;
}

static keyring *check_ring(lua_State *L) { return ring_check(L, 1); }

/* crypto.keyring(master | nil) -> ring */
int crypto_keyring(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) check_master(L, 1);
  keyring *r = lua_newuserdatauv(L, sizeof *r, 2);
  r->sealer.seal_meta = ring_seal_meta;
  r->closed = 0;
  r->count = 0;
  buf_init(&r->plain);
  buf_init(&r->box);
  luaL_setmetatable(L, RING_MT);
  lua_newtable(L);
  lua_setiuservalue(L, -2, 1);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 2);
  return 1;
}

subject_key *ring_lookup_in(lua_State *L, int keys, int subject, int *gone) {
  lua_pushvalue(L, subject);
  lua_rawget(L, keys);
  subject_key *k = lua_touserdata(L, -1);
  *gone = lua_type(L, -1) == LUA_TBOOLEAN;
  lua_pop(L, 1);
  return k && k->live ? k : NULL;
}

subject_key *ring_lookup(lua_State *L, int ring, int subject, int *gone) {
  lua_getiuservalue(L, ring, 1);
  lua_pushvalue(L, subject);
  lua_rawget(L, -2);
  subject_key *k = lua_touserdata(L, -1);
  *gone = lua_type(L, -1) == LUA_TBOOLEAN;
  lua_pop(L, 2);
  return k && k->live ? k : NULL;
}

void ring_mark_gone(lua_State *L, int ring, int subject) {
  lua_getiuservalue(L, ring, 1);
  lua_pushvalue(L, subject);
  lua_pushboolean(L, 0);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

subject_key *ring_add_row(lua_State *L, int ring, int subject_idx, int row_idx) {
  size_t slen, len;
  const char *subject = lua_tolstring(L, subject_idx, &slen);
  const unsigned char *row = (const unsigned char *)lua_tolstring(L, row_idx, &len);
  lua_getiuservalue(L, ring, 2);
  secret *m = lua_isnil(L, -1) ? NULL : check_master(L, -1);
  lua_pop(L, 1);
  subject_key *s = lua_newuserdatauv(L, sizeof *s, 0);   /* stack: ... key */
  memset(s, 0, sizeof *s);
  luaL_setmetatable(L, SUBJECT_MT);
  if (len == ROW_PLAIN_LEN && row[0] == ROW_PLAIN) {
    if (m) {
      lua_pop(L, 1);
      cerr_result(L, "bad_key", "subject '%s': its key is not wrapped, but the store was opened with a key file", subject);
      return NULL;
    }
    memcpy(s->key, row + 1, KEY_BYTES);
  } else if (len == ROW_WRAPPED_LEN && row[0] == ROW_WRAPPED) {
    if (!m) {
      lua_pop(L, 1);
      cerr_result(L, "bad_key", "subject '%s': its key is wrapped by a key file: open the store with key_file", subject);
      return NULL;
    }
    unsigned char ad[sizeof ad_wrap - 1 + 256];
    size_t adlen = sizeof ad_wrap - 1;
    memcpy(ad, ad_wrap, adlen);
    memcpy(ad + adlen, subject, slen < 256 ? slen : 256);
    adlen += slen < 256 ? slen : 256;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(s->key, NULL, NULL, row + 1 + NONCE_BYTES,
          KEY_BYTES + TAG_BYTES, ad, adlen, row + 1, m->key) != 0) {
      sodium_memzero(s, sizeof *s);
      lua_pop(L, 1);
      cerr_result(L, "bad_key", "subject '%s': its key does not unwrap with this key file", subject);
      return NULL;
    }
  } else {
    lua_pop(L, 1);
    cerr_result(L, "corrupt", "subject '%s': its key row is damaged", subject);
    return NULL;
  }
  s->live = 1;
  lua_getiuservalue(L, ring, 1);
  lua_pushvalue(L, subject_idx);
  lua_pushvalue(L, -3);
  lua_rawset(L, -3);
  lua_pop(L, 2);
  ((keyring *)lua_touserdata(L, ring))->count++;
  return s;
}

/* ring:add(subject, row) -> true | nil, err(bad_key): unwraps a subject key row */
static int ring_add(lua_State *L) {
  check_ring(L);
  luaL_checkstring(L, 2);
  luaL_checkstring(L, 3);
  if (!ring_add_row(L, 1, 2, 3)) return 2;
  lua_pushboolean(L, 1);
  return 1;
}

/* ring:has(subject) -> boolean */
static int ring_has(lua_State *L) {
  check_ring(L);
  luaL_checkstring(L, 2);
  int gone;
  lua_pushboolean(L, ring_lookup(L, 1, 2, &gone) != NULL);
  return 1;
}

/* ring:count() -> the number of keys added to the ring */
static int ring_count(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_ring(L)->count);
  return 1;
}

/* Associated data of an event's sealed box: the subject and the event id, so that a box
 * cannot be moved to another event or subject. */
static size_t box_ad(lua_State *L, int subject, int id, unsigned char *ad) {
  size_t slen, idlen;
  const char *s = lua_tolstring(L, subject, &slen);
  const char *text = luaL_checklstring(L, id, &idlen);
  if (slen > MAX_SUBJECT) luaL_error(L, "personal: subject is longer than 200 bytes");
  if (uuid_parse(text, idlen, ad) != 0) luaL_error(L, "personal: event id is not a UUID");
  memcpy(ad + 16, s, slen);
  return 16 + slen;
}

/* The box is nonce | ciphertext of the value's encoding. The nonce is a keyed BLAKE2b of the
 * associated data (event id, subject) and the plaintext, under a subkey of the subject key, so
 * sending the same event again seals it to the same bytes and idempotent replay still
 * recognises it; two different plaintexts never share a nonce. */
void box_seal(lua_State *L, keyring *r, subject_key *k, const unsigned char *ad, size_t adlen, int value) {
  if (!k->nonce_ready) {
    crypto_generichash(k->nonce_key, sizeof k->nonce_key, (const unsigned char *)nonce_context,
                       sizeof nonce_context - 1, k->key, KEY_BYTES);
    k->nonce_ready = 1;
  }
  /* The ring owns the encoding buffer, so an encode error (misuse) leaks nothing. */
  buf *plain = &r->plain;
  if (plain->data) sodium_memzero(plain->data, plain->len);
  plain->len = 0;
  codec_encode(L, value, plain, "personal");
  size_t boxlen = NONCE_BYTES + plain->len + TAG_BYTES;
  buf *out = &r->box;
  out->len = 0;
  if (buf_reserve(out, boxlen)) {
    sodium_memzero(plain->data, plain->len);
    plain->len = 0;
    luaL_error(L, "personal: out of memory");
  }
  unsigned char *box = out->data;
  crypto_generichash_state st;
  crypto_generichash_init(&st, k->nonce_key, sizeof k->nonce_key, NONCE_BYTES);
  crypto_generichash_update(&st, ad, adlen);
  crypto_generichash_update(&st, plain->data, plain->len);
  crypto_generichash_final(&st, box, NONCE_BYTES);
  sodium_memzero(&st, sizeof st);
  crypto_aead_xchacha20poly1305_ietf_encrypt(box + NONCE_BYTES, NULL, plain->data, plain->len,
      ad, adlen, NULL, box, k->key);
  sodium_memzero(plain->data, plain->len);
  plain->len = 0;
  out->len = boxlen;
}

/* ring:seal(subject, id, value) -> box (see box_seal) */
static int ring_seal(lua_State *L) {
  keyring *r = check_ring(L);
  luaL_checkstring(L, 2);
  int gone;
  subject_key *k = ring_lookup(L, 1, 2, &gone);
  if (!k) return luaL_error(L, "crypto: no key for this subject in the keyring");
  unsigned char ad[BOX_AD_MAX];
  size_t adlen = box_ad(L, 2, 3, ad);
  box_seal(L, r, k, ad, adlen, 4);
  lua_pushlstring(L, (const char *)r->box.data, r->box.len);
  return 1;
}

int box_open(lua_State *L, const subject_key *k, const unsigned char *ad, size_t adlen,
             const unsigned char *box, size_t len, const char *id, codec_strings *strings) {
  char text[UUID_TEXT_LEN + 1];
  if (!id) {                        /* named only in an error: the id is ad's first 16 bytes */
    uuid_format(ad, text);
    text[UUID_TEXT_LEN] = 0;
    id = text;
  }
  if (len < NONCE_BYTES + TAG_BYTES) return cerr_result(L, "corrupt", "personal data of event %s is truncated", id);
  size_t plen = len - NONCE_BYTES - TAG_BYTES;
  unsigned char small[512];
  unsigned char *plain = plen <= sizeof small ? small : malloc(plen);
  if (!plain) return luaL_error(L, "personal: out of memory");
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(plain, NULL, NULL, box + NONCE_BYTES, len - NONCE_BYTES,
        ad, adlen, box, k->key) != 0) {
    if (plain != small) free(plain);
    return cerr_result(L, "corrupt", "personal data of event %s does not authenticate", id);
  }
  const char *why;
  int ok = codec_decode_cached(L, plain, plen, strings, &why);
  sodium_memzero(plain, plen);
  if (plain != small) free(plain);
  if (!ok) return cerr_result(L, "corrupt", "personal data of event %s does not decode: %s", id, why);
  return 1;
}

/* ring:open(subject, id, box) -> value | false (no key of that subject in the ring: add it)
 * | nil, err(corrupt): a box that does not authenticate under the subject's key is damage
 * (nothing is ever decoded from it). */
static int ring_open(lua_State *L) {
  check_ring(L);
  luaL_checkstring(L, 2);
  int gone;
  subject_key *k = ring_lookup(L, 1, 2, &gone);
  if (!k) {
    lua_pushboolean(L, 0);
    return 1;
  }
  size_t len;
  const unsigned char *box = (const unsigned char *)luaL_checklstring(L, 4, &len);
  unsigned char ad[BOX_AD_MAX];
  size_t adlen = box_ad(L, 2, 3, ad);
  return box_open(L, k, ad, adlen, box, len, lua_tostring(L, 3), NULL);
}

/* ring:close(): wipes every key it holds (also __gc and __close) */
int ring_close(lua_State *L) {
  keyring *r = luaL_checkudata(L, 1, RING_MT);
  if (r->closed) return 0;
  r->closed = 1;
  if (r->plain.data) sodium_memzero(r->plain.data, r->plain.cap);
  buf_free(&r->plain);
  buf_free(&r->box);
  lua_getiuservalue(L, 1, 1);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    subject_key *k = luaL_testudata(L, -1, SUBJECT_MT);
    if (k) sodium_memzero(k, sizeof *k);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_newtable(L);
  lua_setiuservalue(L, 1, 1);
  return 0;
}

/* crypto.close_key(key): wipes a key file's key now rather than at __gc */
static int crypto_close_key(lua_State *L) {
  secret_wipe(luaL_checkudata(L, 1, KEY_MT));
  return 0;
}

static int buf_gc(lua_State *L) {
  buf *b = lua_touserdata(L, 1);
  if (b->data) sodium_memzero(b->data, b->len);
  buf_free(b);
  return 0;
}

static const luaL_Reg ring_methods[] = {
  { "add", ring_add },
  { "has", ring_has },
  { "count", ring_count },
  { "seal", ring_seal },
  { "open", ring_open },
  { "close", ring_close },
  { NULL, NULL }
};

static const luaL_Reg crypto_functions[] = {
  { "load_key_file", crypto_load_key_file },
  { "new_key_file", crypto_new_key_file },
  { "close_key", crypto_close_key },
  { "check_row", crypto_check_row },
  { "check", crypto_check },
  { "new_row", crypto_new_row },
  { "keyring", crypto_keyring },
  { NULL, NULL }
};

int luaopen_chronicle_crypto(lua_State *L) {
  if (sodium_init() < 0) return luaL_error(L, "chronicle.crypto: libsodium did not initialise");
  luaL_newmetatable(L, KEY_MT);
  lua_pushcfunction(L, key_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushliteral(L, "chronicle key");
  lua_setfield(L, -2, "__name");
  lua_pop(L, 1);
  luaL_newmetatable(L, SUBJECT_MT);
  lua_pushcfunction(L, subject_key_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, "chronicle.crypto.buf");
  lua_pushcfunction(L, buf_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, RING_MT);
  luaL_newlib(L, ring_methods);
  batch_register(L);
  reveal_register(L);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, ring_close);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, ring_close);
  lua_setfield(L, -2, "__close");
  lua_pop(L, 1);
  luaL_newlib(L, crypto_functions);
  reveal_open(L);
  cerr_open(L);
  return 1;
}
