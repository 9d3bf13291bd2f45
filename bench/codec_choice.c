/*
 * codec_choice.c -- pick a MessagePack C library for chronicle by measurement.
 *
 * Compares, in one run, Debian's
 *   libmsgpack-dev  (msgpack-c 4.0,  <msgpack.h>, -lmsgpackc)
 *   libmpack-dev    (libmpack 1.0.5, <mpack.h>,   -lmpack)
 * on a representative ~190-byte event payload:
 *   - encode into a reusable growable byte buffer
 *   - decode the same bytes, visiting every value the way a decoder that
 *     pushes onto a Lua stack would (scalars, string ptr+len, container sizes)
 *   - rejection of every truncated prefix of the encoded payload (each decoder
 *     is run in a forked child so a crash is reported rather than fatal)
 *
 * Build: gcc -O2 -Wall -Wextra -Werror bench/codec_choice.c -lmsgpackc -lmpack \
 *            -o /tmp/codec_choice
 *
 * Include order matters a little: <mpack.h> does "#define bool unsigned" when
 * bool is not yet a macro, so include <msgpack.h> (which pulls <stdbool.h>)
 * first.
 */
#include <msgpack.h>
#include <mpack.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef N_ITERS
#define N_ITERS   1000000
#endif
#define N_REPS    3
#define MAX_DEPTH 32

/* ------------------------------------------------------------------------ */
/* The event payload (what a Lua table would hold).                          */

typedef struct {
  const char *sku;
  uint64_t qty;
  int64_t adj;
} item_t;

typedef struct {
  const char *id, *stream, *type;
  uint64_t seq;      /* small uint */
  uint64_t ts_ns;    /* large uint */
  int64_t delta;     /* large negative int */
  double amount;     /* float */
  int final;         /* boolean */
  item_t items[3];   /* nested array of 3 small maps */
} event_t;

static event_t g_event = {
  "evt-01HZX3K9Q2", "orders-4711", "OrderPlaced",
  42, 1718035200123456789ULL, -5000000000LL, 1234.5678, 1,
  { { "A-100", 2, -3 }, { "B-2200", 1, 0 }, { "C-33000", 12, -100 } }
};

/* ------------------------------------------------------------------------ */
/* Growable, reusable output buffer.                                         */

typedef struct {
  char *p;
  size_t len, cap;
} buf_t;

static __attribute__((noinline)) int buf_grow(buf_t *b, size_t need)
{
  size_t ncap = b->cap ? b->cap : 64;
  char *np;
  while (ncap - b->len < need) ncap *= 2;
  np = realloc(b->p, ncap);
  if (!np) return -1;
  b->p = np;
  b->cap = ncap;
  return 0;
}

static inline int buf_reserve(buf_t *b, size_t need)
{
  return (b->cap - b->len >= need) ? 0 : buf_grow(b, need);
}

/* msgpack_packer write callback */
static int buf_write_cb(void *data, const char *s, size_t n)
{
  buf_t *b = data;
  if (buf_reserve(b, n)) return -1;
  memcpy(b->p + b->len, s, n);
  b->len += n;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Checksum accumulator: every visited value is folded in.                   */
/* Values are normalised so both libraries produce the same sum for the same */
/* logical document: ints as 64-bit two's complement, floats as double bits, */
/* strings as (offset into input, length), maps as pair counts.              */

enum { T_NIL = 1, T_BOOL, T_INT, T_FLT, T_STR, T_BIN, T_EXT, T_ARR, T_MAP };

typedef struct {
  uint64_t h;      /* hash */
  uint64_t n;      /* values visited */
  const char *base;
} acc_t;

/* cheap, order-sensitive fold: the serial dependency is only rotate+add, so
 * the checksum itself adds little to the decode timings */
static inline void mix(acc_t *a, uint64_t tag, uint64_t v)
{
  a->h = ((a->h << 7) | (a->h >> 57)) +
         (v ^ (tag << 58)) * 0x9e3779b97f4a7c15ULL;
  a->n++;
}

/* strings/bin/ext: offset into the input buffer and length */
static inline void mix_blob(acc_t *a, uint64_t tag, const char *p,
                            uint64_t len)
{
  mix(a, tag, (uint64_t)(p - a->base) ^ (len << 32));
}

static inline uint64_t dbits(double d)
{
  uint64_t u;
  memcpy(&u, &d, sizeof u);
  return u;
}

static inline void acc_reset(acc_t *a, const char *base)
{
  a->h = 0xcbf29ce484222325ULL;
  a->n = 0;
  a->base = base;
}

static volatile uint64_t g_sink;

static double now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* ======================================================================== */
/* msgpack-c                                                                 */

static int mc_encode(buf_t *b, const event_t *e)
{
  msgpack_packer pk;
  int i, r = 0;
  b->len = 0;
  msgpack_packer_init(&pk, b, buf_write_cb);
#define S(s) msgpack_pack_str_with_body(&pk, (s), strlen(s))
  r |= msgpack_pack_map(&pk, 9);
  r |= S("id");     r |= S(e->id);
  r |= S("stream"); r |= S(e->stream);
  r |= S("type");   r |= S(e->type);
  r |= S("seq");    r |= msgpack_pack_uint64(&pk, e->seq);
  r |= S("ts_ns");  r |= msgpack_pack_uint64(&pk, e->ts_ns);
  r |= S("delta");  r |= msgpack_pack_int64(&pk, e->delta);
  r |= S("amount"); r |= msgpack_pack_double(&pk, e->amount);
  r |= S("final");  r |= e->final ? msgpack_pack_true(&pk)
                                  : msgpack_pack_false(&pk);
  r |= S("items");
  r |= msgpack_pack_array(&pk, 3);
  for (i = 0; i < 3; i++) {
    r |= msgpack_pack_map(&pk, 3);
    r |= S("sku"); r |= S(e->items[i].sku);
    r |= S("qty"); r |= msgpack_pack_uint64(&pk, e->items[i].qty);
    r |= S("adj"); r |= msgpack_pack_int64(&pk, e->items[i].adj);
  }
#undef S
  return r;
}

static void mc_walk(const msgpack_object *o, acc_t *a)
{
  uint32_t i;
  switch (o->type) {
    case MSGPACK_OBJECT_NIL: mix(a, T_NIL, 0); break;
    case MSGPACK_OBJECT_BOOLEAN: mix(a, T_BOOL, o->via.boolean); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: mix(a, T_INT, o->via.u64); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
      mix(a, T_INT, (uint64_t)o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: mix(a, T_FLT, dbits(o->via.f64)); break;
    case MSGPACK_OBJECT_STR:
      mix_blob(a, T_STR, o->via.str.ptr, o->via.str.size);
      break;
    case MSGPACK_OBJECT_BIN:
      mix_blob(a, T_BIN, o->via.bin.ptr, o->via.bin.size);
      break;
    case MSGPACK_OBJECT_EXT:
      mix_blob(a, T_EXT, o->via.ext.ptr,
               ((uint64_t)o->via.ext.size << 8) | (uint8_t)o->via.ext.type);
      break;
    case MSGPACK_OBJECT_ARRAY:
      mix(a, T_ARR, o->via.array.size);
      for (i = 0; i < o->via.array.size; i++) mc_walk(&o->via.array.ptr[i], a);
      break;
    case MSGPACK_OBJECT_MAP:
      mix(a, T_MAP, o->via.map.size);
      for (i = 0; i < o->via.map.size; i++) {
        mc_walk(&o->via.map.ptr[i].key, a);
        mc_walk(&o->via.map.ptr[i].val, a);
      }
      break;
    default: mix(a, 0xff, o->type); break;
  }
}

/* msgpack_unpack (marked "obsolete" in unpack.h) with a caller-owned zone.
 * Returns 0 on a complete object, -1 otherwise. */
static int mc_decode_unpack(const char *d, size_t len, msgpack_zone *z,
                            acc_t *a)
{
  size_t off = 0;
  msgpack_object obj;
  msgpack_unpack_return r;
  msgpack_zone_clear(z);
  r = msgpack_unpack(d, len, &off, z, &obj);
  if (r != MSGPACK_UNPACK_SUCCESS && r != MSGPACK_UNPACK_EXTRA_BYTES)
    return -1;
  mc_walk(&obj, a);
  return 0;
}

/* msgpack_unpack_next: the documented non-streaming API. It frees the
 * previous msgpack_unpacked zone and allocates a new one on every call. */
static int mc_decode_next(const char *d, size_t len, msgpack_unpacked *u,
                          acc_t *a)
{
  size_t off = 0;
  msgpack_unpack_return r = msgpack_unpack_next(u, d, len, &off);
  if (r != MSGPACK_UNPACK_SUCCESS) return -1;
  mc_walk(&u->data, a);
  return 0;
}

/* ======================================================================== */
/* libmpack                                                                  */

/* Make sure there is room for a whole token (MPACK_MAX_TOKEN_LEN) or chunk;
 * otherwise mpack_write spills into tb->pending and returns MPACK_EOF. */
static inline int mp_put(mpack_tokbuf_t *tb, buf_t *b, mpack_token_t tok,
                         size_t need)
{
  char *p;
  size_t avail;
  int r;
  if (buf_reserve(b, need)) return -1;
  p = b->p + b->len;
  avail = b->cap - b->len;
  r = mpack_write(tb, &p, &avail, &tok);
  b->len = (size_t)(p - b->p);
  return r != MPACK_OK;
}

static inline int mp_str(mpack_tokbuf_t *tb, buf_t *b, const char *s)
{
  mpack_uint32_t l = (mpack_uint32_t)strlen(s);
  return mp_put(tb, b, mpack_pack_str(l), MPACK_MAX_TOKEN_LEN) |
         mp_put(tb, b, mpack_pack_chunk(s, l), l ? l : 1);
}

static inline int mp_int(mpack_tokbuf_t *tb, buf_t *b, int64_t v)
{
  return mp_put(tb, b, v < 0 ? mpack_pack_sint(v)
                             : mpack_pack_uint((mpack_uintmax_t)v),
                MPACK_MAX_TOKEN_LEN);
}

static inline int mp_uint(mpack_tokbuf_t *tb, buf_t *b, uint64_t v)
{
  return mp_put(tb, b, mpack_pack_uint(v), MPACK_MAX_TOKEN_LEN);
}

static int mp_encode(buf_t *b, const event_t *e)
{
  mpack_tokbuf_t tb;
  int i, r = 0;
  b->len = 0;
  mpack_tokbuf_init(&tb);
#define T(tok) mp_put(&tb, b, (tok), MPACK_MAX_TOKEN_LEN)
  /* mpack_pack_map takes the number of pairs (as msgpack_pack_map does) */
  r |= T(mpack_pack_map(9));
  r |= mp_str(&tb, b, "id");     r |= mp_str(&tb, b, e->id);
  r |= mp_str(&tb, b, "stream"); r |= mp_str(&tb, b, e->stream);
  r |= mp_str(&tb, b, "type");   r |= mp_str(&tb, b, e->type);
  r |= mp_str(&tb, b, "seq");    r |= mp_uint(&tb, b, e->seq);
  r |= mp_str(&tb, b, "ts_ns");  r |= mp_uint(&tb, b, e->ts_ns);
  r |= mp_str(&tb, b, "delta");  r |= mp_int(&tb, b, e->delta);
  r |= mp_str(&tb, b, "amount"); r |= T(mpack_pack_float_fast(e->amount));
  r |= mp_str(&tb, b, "final");  r |= T(mpack_pack_boolean(e->final != 0));
  r |= mp_str(&tb, b, "items");
  r |= T(mpack_pack_array(3));
  for (i = 0; i < 3; i++) {
    r |= T(mpack_pack_map(3));
    r |= mp_str(&tb, b, "sku"); r |= mp_str(&tb, b, e->items[i].sku);
    r |= mp_str(&tb, b, "qty"); r |= mp_uint(&tb, b, e->items[i].qty);
    r |= mp_str(&tb, b, "adj"); r |= mp_int(&tb, b, e->items[i].adj);
  }
#undef T
  return r;
}

/* Token loop decoding exactly one top-level object from a contiguous buffer.
 * mpack_read is a streaming tokenizer: it has no notion of "end of object",
 * so container nesting is tracked here. Guards needed for untrusted input:
 *   - never call mpack_read with *buflen == 0 (its assert is compiled out in
 *     Debian's build, it would read past the end and wrap *buflen);
 *   - str/bin/ext payload arrives as separate CHUNK token(s), and a chunk is
 *     returned with MPACK_OK even if shorter than the header said: check;
 *   - zero-length str/bin/ext produce no CHUNK token at all;
 *   - map token length is the pair count, so a map holds 2*length values
 *     (kept in 64 bits: map32 may claim 2^32-1 pairs);
 *   - container lengths are attacker-controlled (a Lua decoder must
 *     lua_checkstack / bound them, libmpack does not).
 * Returns 0 on success, -1 on truncation, -2 on malformed input. */
static int mp_decode(const char *d, size_t len, acc_t *a)
{
  mpack_tokbuf_t tb;
  mpack_token_t t;
  const char *p = d;
  size_t bl = len;
  uint64_t left[MAX_DEPTH + 1];
  int depth = 1, r;

  mpack_tokbuf_init(&tb);
  left[0] = 1;
  while (depth > 0) {
    if (bl == 0) return -1;
    r = mpack_read(&tb, &p, &bl, &t);
    if (r == MPACK_EOF) return -1;
    if (r != MPACK_OK) return -2;
    left[depth - 1]--;
    switch (t.type) {
      case MPACK_TOKEN_NIL: mix(a, T_NIL, 0); break;
      case MPACK_TOKEN_BOOLEAN: mix(a, T_BOOL, mpack_unpack_boolean(t)); break;
      case MPACK_TOKEN_UINT: mix(a, T_INT, mpack_unpack_uint(t)); break;
      case MPACK_TOKEN_SINT:
        mix(a, T_INT, (uint64_t)mpack_unpack_sint(t)); break;
      case MPACK_TOKEN_FLOAT:
        mix(a, T_FLT, dbits(mpack_unpack_float_fast(t))); break;
      case MPACK_TOKEN_STR:
      case MPACK_TOKEN_BIN:
      case MPACK_TOKEN_EXT: {
        mpack_token_type_t ty = t.type;
        mpack_uint32_t l = t.length;
        int ext = ty == MPACK_TOKEN_EXT ? t.data.ext_type : 0;
        const char *ptr = p;
        if (l) {
          if (bl < l) return -1;
          r = mpack_read(&tb, &p, &bl, &t);
          if (r != MPACK_OK || t.type != MPACK_TOKEN_CHUNK || t.length != l)
            return -2;
          ptr = t.data.chunk_ptr;
        }
        if (ty == MPACK_TOKEN_STR)
          mix_blob(a, T_STR, ptr, l);
        else if (ty == MPACK_TOKEN_BIN)
          mix_blob(a, T_BIN, ptr, l);
        else
          mix_blob(a, T_EXT, ptr, ((uint64_t)l << 8) | (uint8_t)ext);
        break;
      }
      case MPACK_TOKEN_ARRAY:
      case MPACK_TOKEN_MAP:
        mix(a, t.type == MPACK_TOKEN_MAP ? T_MAP : T_ARR, t.length);
        if (t.length) {
          if (depth > MAX_DEPTH) return -2;
          left[depth++] = (uint64_t)t.length *
                          (t.type == MPACK_TOKEN_MAP ? 2 : 1);
        }
        break;
      default:
        return -2;
    }
    while (depth > 0 && left[depth - 1] == 0) depth--;
  }
  return 0;
}

/* What a straightforward token loop looks like without the guards above
 * (used only in the truncation test, inside a forked child). */
static int mp_decode_naive(const char *d, size_t len, acc_t *a)
{
  mpack_tokbuf_t tb;
  mpack_token_t t;
  const char *p = d;
  size_t bl = len;
  uint64_t left[MAX_DEPTH + 1];
  int depth = 1, r, steps = 0;

  mpack_tokbuf_init(&tb);
  left[0] = 1;
  while (depth > 0) {
    if (++steps > 1000) return -3;   /* runaway after reading past the end */
    r = mpack_read(&tb, &p, &bl, &t);
    if (r != MPACK_OK) return -1;
    if (t.type == MPACK_TOKEN_CHUNK) {
      mix(a, T_STR, t.length);
      continue;                      /* chunk does not consume a slot */
    }
    left[depth - 1]--;
    mix(a, t.type, t.length);
    if ((t.type == MPACK_TOKEN_ARRAY || t.type == MPACK_TOKEN_MAP) &&
        t.length && depth <= MAX_DEPTH)
      left[depth++] = (uint64_t)t.length *
                      (t.type == MPACK_TOKEN_MAP ? 2 : 1);
    while (depth > 0 && left[depth - 1] == 0) depth--;
  }
  return 0;
}

/* ======================================================================== */
/* Benchmark driver                                                          */

typedef struct {
  buf_t out;            /* encode target */
  const char *in;       /* decode source */
  size_t in_len;
  msgpack_zone zone;
  msgpack_unpacked unp;
  uint64_t sum;
  int err;
} ctx_t;

typedef void (*loop_fn)(ctx_t *c, long n);

static void loop_mc_encode(ctx_t *c, long n)
{
  long i;
  for (i = 0; i < n; i++) {
    c->err |= mc_encode(&c->out, &g_event);
    c->sum += c->out.len + (unsigned char)c->out.p[c->out.len - 1];
  }
}

static void loop_mp_encode(ctx_t *c, long n)
{
  long i;
  for (i = 0; i < n; i++) {
    c->err |= mp_encode(&c->out, &g_event);
    c->sum += c->out.len + (unsigned char)c->out.p[c->out.len - 1];
  }
}

static void loop_mc_unpack(ctx_t *c, long n)
{
  long i;
  acc_t a;
  for (i = 0; i < n; i++) {
    acc_reset(&a, c->in);
    c->err |= mc_decode_unpack(c->in, c->in_len, &c->zone, &a);
    c->sum += a.h + a.n;
  }
}

static void loop_mc_next(ctx_t *c, long n)
{
  long i;
  acc_t a;
  for (i = 0; i < n; i++) {
    acc_reset(&a, c->in);
    c->err |= mc_decode_next(c->in, c->in_len, &c->unp, &a);
    c->sum += a.h + a.n;
  }
}

static void loop_mp_decode(ctx_t *c, long n)
{
  long i;
  acc_t a;
  for (i = 0; i < n; i++) {
    acc_reset(&a, c->in);
    c->err |= mp_decode(c->in, c->in_len, &a);
    c->sum += a.h + a.n;
  }
}

/* warm-up pass, then best of N_REPS timed passes; returns ns/op */
static double bench(const char *name, loop_fn fn, ctx_t *c)
{
  double best = 1e300;
  int rep;
  c->sum = 0;
  c->err = 0;
  fn(c, N_ITERS);                         /* warm-up */
  for (rep = 0; rep < N_REPS; rep++) {
    double t0 = now_ns(), dt;
    fn(c, N_ITERS);
    dt = now_ns() - t0;
    if (dt < best) best = dt;
  }
  g_sink += c->sum;
  best /= N_ITERS;
  printf("  %-34s %8.1f ns/op%s\n", name, best, c->err ? "  (ERRORS!)" : "");
  return best;
}

/* ------------------------------------------------------------------------ */
/* Truncation test: every prefix 0..len-1 must be rejected; full must pass.  */

enum { D_MC_UNPACK, D_MC_NEXT, D_MP, D_MP_NAIVE };

static int run_decoder(int which, const char *d, size_t len)
{
  acc_t a;
  acc_reset(&a, d);
  switch (which) {
    case D_MC_UNPACK: {
      msgpack_zone z;
      int r;
      msgpack_zone_init(&z, MSGPACK_ZONE_CHUNK_SIZE);
      r = mc_decode_unpack(d, len, &z, &a);
      msgpack_zone_destroy(&z);
      return r;
    }
    case D_MC_NEXT: {
      msgpack_unpacked u;
      int r;
      msgpack_unpacked_init(&u);
      r = mc_decode_next(d, len, &u, &a);
      msgpack_unpacked_destroy(&u);
      return r;
    }
    case D_MP: return mp_decode(d, len, &a);
    default: return mp_decode_naive(d, len, &a);
  }
}

static void truncation_test(const char *name, int which, const char *enc,
                            size_t len)
{
  pid_t pid;
  int st;
  fflush(stdout);
  pid = fork();
  if (pid < 0) { perror("fork"); return; }
  if (pid == 0) {
    size_t k, rejected = 0, accepted = 0;
    int full_ok;
    for (k = 0; k < len; k++) {
      /* exact-size heap copy so over-reads are past the allocation */
      char *pre = malloc(k ? k : 1);
      if (!pre) _exit(3);
      memcpy(pre, enc, k);
      if (run_decoder(which, pre, k) == 0) accepted++;
      else rejected++;
      free(pre);
    }
    full_ok = run_decoder(which, enc, len) == 0;
    printf("  %-34s %zu/%zu prefixes rejected, %zu wrongly accepted, "
           "full buffer %s -> %s\n", name, rejected, len, accepted,
           full_ok ? "ok" : "REJECTED",
           (accepted == 0 && full_ok) ? "PASS" : "FAIL");
    fflush(stdout);
    _exit(0);
  }
  waitpid(pid, &st, 0);
  if (WIFSIGNALED(st))
    printf("  %-34s CRASHED (signal %d) -> FAIL\n", name, WTERMSIG(st));
  else if (WEXITSTATUS(st) != 0)
    printf("  %-34s child exit %d\n", name, WEXITSTATUS(st));
}

/* ------------------------------------------------------------------------ */

static void hexdump(const char *label, const buf_t *b)
{
  size_t i;
  printf("  %s (%zu bytes):", label, b->len);
  for (i = 0; i < b->len; i++)
    printf("%s%02x", (i % 32) ? "" : "\n    ", (unsigned char)b->p[i]);
  printf("\n");
}

static void print_doc(const char *label, const buf_t *b)
{
  msgpack_zone z;
  msgpack_object o;
  size_t off = 0;
  msgpack_zone_init(&z, MSGPACK_ZONE_CHUNK_SIZE);
  printf("  %s: ", label);
  if (msgpack_unpack(b->p, b->len, &off, &z, &o) == MSGPACK_UNPACK_SUCCESS)
    msgpack_object_print(stdout, o);
  else
    printf("<undecodable>");
  printf("\n");
  msgpack_zone_destroy(&z);
}

int main(void)
{
  ctx_t c;
  buf_t mc_bytes = { 0, 0, 0 }, mp_bytes = { 0, 0, 0 };
  acc_t a_unpack, a_next, a_mp;
  double e_mc, e_mp, d_unpack, d_next, d_mp;
  int ok = 1;

  memset(&c, 0, sizeof c);
  msgpack_zone_init(&c.zone, MSGPACK_ZONE_CHUNK_SIZE);
  msgpack_unpacked_init(&c.unp);

  /* ---- reference encodings ---- */
  if (mc_encode(&mc_bytes, &g_event) || mp_encode(&mp_bytes, &g_event)) {
    fprintf(stderr, "encode failed\n");
    return 1;
  }
  printf("payload: msgpack-c %zu bytes, libmpack %zu bytes, "
         "byte-identical: %s\n", mc_bytes.len, mp_bytes.len,
         (mc_bytes.len == mp_bytes.len &&
          !memcmp(mc_bytes.p, mp_bytes.p, mc_bytes.len)) ? "yes" : "NO");

  /* ---- correctness: all decoders on the same (msgpack-c) bytes ---- */
  acc_reset(&a_unpack, mc_bytes.p);
  acc_reset(&a_next, mc_bytes.p);
  acc_reset(&a_mp, mc_bytes.p);
  ok &= mc_decode_unpack(mc_bytes.p, mc_bytes.len, &c.zone, &a_unpack) == 0;
  ok &= mc_decode_next(mc_bytes.p, mc_bytes.len, &c.unp, &a_next) == 0;
  ok &= mp_decode(mc_bytes.p, mc_bytes.len, &a_mp) == 0;
  ok &= a_unpack.h == a_next.h && a_unpack.n == a_next.n;
  ok &= a_unpack.h == a_mp.h && a_unpack.n == a_mp.n;
  printf("decode check on msgpack-c bytes: values/checksum\n"
         "  msgpack_unpack      %3llu  %016llx\n"
         "  msgpack_unpack_next %3llu  %016llx\n"
         "  libmpack mpack_read %3llu  %016llx\n"
         "  -> %s\n",
         (unsigned long long)a_unpack.n, (unsigned long long)a_unpack.h,
         (unsigned long long)a_next.n, (unsigned long long)a_next.h,
         (unsigned long long)a_mp.n, (unsigned long long)a_mp.h,
         ok ? "MATCH" : "MISMATCH");

  /* ---- does libmpack's encoder produce the same document? ---- */
  if (mc_bytes.len != mp_bytes.len ||
      memcmp(mc_bytes.p, mp_bytes.p, mc_bytes.len)) {
    printf("libmpack encoding differs from msgpack-c:\n");
    hexdump("msgpack-c", &mc_bytes);
    hexdump("libmpack ", &mp_bytes);
    print_doc("msgpack-c bytes decode to", &mc_bytes);
    print_doc("libmpack  bytes decode to", &mp_bytes);
  }

  /* ---- truncated input ---- */
  printf("truncation test (every prefix 0..%zu of the msgpack-c bytes):\n",
         mc_bytes.len - 1);
  truncation_test("msgpack_unpack", D_MC_UNPACK, mc_bytes.p, mc_bytes.len);
  truncation_test("msgpack_unpack_next", D_MC_NEXT, mc_bytes.p, mc_bytes.len);
  truncation_test("libmpack (guarded loop)", D_MP, mc_bytes.p, mc_bytes.len);
  truncation_test("libmpack (naive loop, no guards)", D_MP_NAIVE, mc_bytes.p,
                  mc_bytes.len);

  /* ---- timing ---- */
  printf("timing: N=%d, warm-up + best of %d\n", N_ITERS, N_REPS);
  e_mc = bench("encode msgpack-c (packer+cb)", loop_mc_encode, &c);
  e_mp = bench("encode libmpack (mpack_write)", loop_mp_encode, &c);
  c.in = mc_bytes.p;
  c.in_len = mc_bytes.len;
  d_unpack = bench("decode msgpack-c unpack+zone reuse", loop_mc_unpack, &c);
  d_next = bench("decode msgpack-c unpack_next", loop_mc_next, &c);
  d_mp = bench("decode libmpack mpack_read loop", loop_mp_decode, &c);

  printf("ratios (libmpack / msgpack-c; >1 means libmpack slower):\n");
  printf("  encode                              %.2fx\n", e_mp / e_mc);
  printf("  decode vs msgpack_unpack+zone reuse %.2fx\n", d_mp / d_unpack);
  printf("  decode vs msgpack_unpack_next       %.2fx\n", d_mp / d_next);

  msgpack_unpacked_destroy(&c.unp);
  msgpack_zone_destroy(&c.zone);
  free(c.out.p);
  free(mc_bytes.p);
  free(mp_bytes.p);
  return ok ? 0 : 1;
}
