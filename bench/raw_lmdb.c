/*
 * raw_lmdb.c -- the storage baseline for chronicle's append benchmarks:
 * liblmdb used directly, no Lua, no encoding, no checksum.
 *
 * Build: cc -O2 -Wall -Wextra -o raw_lmdb bench/raw_lmdb.c -llmdb
 * Run:   raw_lmdb DIR MODE [key=value ...]      (bench/append.lua drives it)
 *
 * DIR must be an empty or missing directory (it is created); MODE is
 *   batch    TXNS write transactions of BATCH records each
 *   durable  COMMITS write transactions of one record each
 *
 * Options (defaults in brackets):
 *   txns=N      batch: number of transactions [200]
 *   batch=N     batch: records per transaction [1000]
 *   commits=N   durable: number of transactions [300]
 *   rec=N       bytes of each log record value [280]; append.lua passes the
 *               exact size of the record chronicle stores for its events
 *   sync=full|nometasync|nosync   durability [full]: MDB_NOMETASYNC or
 *               MDB_NOSYNC given to mdb_env_open. (LMDB 0.9.x ignores these
 *               two flags when they are given to mdb_txn_begin: there only
 *               MDB_RDONLY is honoured, so a commit still calls fdatasync.)
 *   index=0|1   0: the log record only; 1: "same bytes" as chronicle [1]
 *   streams=N   the appends rotate over N streams "bench-0".. [10]
 *   map=BYTES   map size, set once (no growth) [4 GiB]
 *
 * What one record writes, with index=0:
 *   log            key = position, u64 big-endian from 1; value = rec bytes
 *                  (a prebuilt buffer with the position stamped in);
 *                  mdb_put(MDB_APPEND)
 * and with index=1, also what chronicle writes per event (csrc/lmdb/logdb.h):
 *   stream_index   key = stream id u64 BE | version u64 BE (16 B),
 *                  value = position u64 BE (8 B); mdb_put(0)
 *   category_index key = category length u8 | "bench" | position u64 BE
 *                  (14 B), value empty; mdb_put(0)
 *   event_ids      key = 16-byte time-ordered id (48-bit ms | counter, like
 *                  chronicle's UUIDv7), value = position u64 BE;
 *                  mdb_put(MDB_NOOVERWRITE)
 * and once per transaction (per stream touched):
 *   streams        key = stream name, value = 48 bytes of stream metadata,
 *                  read with mdb_get then written with mdb_put(0)
 * Positions and versions are kept in memory (no cursor reads the head).
 * All six named databases are opened once, before timing. Only the
 * transaction loop is timed (CLOCK_MONOTONIC), not the environment open.
 *
 * Output: key=value lines, e.g.
 *   raw_mode=batch raw_index=1 raw_sync=nosync
 *   raw_events=200000 raw_txns=200 raw_secs=0.1234
 *   raw_eps=1620745.1    (records per second)
 *   raw_cps=200.0        (commits per second)
 */
#include <lmdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define CHECK(expr)                                                          \
  do {                                                                       \
    int rc_ = (expr);                                                        \
    if (rc_) {                                                               \
      fprintf(stderr, "raw_lmdb: %s: %s (line %d)\n", #expr,                 \
              mdb_strerror(rc_), __LINE__);                                  \
      exit(2);                                                               \
    }                                                                        \
  } while (0)

enum { DB_LOG, DB_STREAMS, DB_STREAM_INDEX, DB_CATEGORY_INDEX, DB_EVENT_IDS, DB_META, NDB };
static const char *const db_names[NDB] = {
  "log", "streams", "stream_index", "category_index", "event_ids", "meta"
};

static MDB_env *env;
static MDB_dbi dbi[NDB];
static int with_index = 1;
static unsigned env_flags = 0;
static uint64_t position = 0;        /* last position written */
static uint64_t id_counter = 0;

typedef struct stream_state {
  char name[32];
  size_t name_len;
  uint64_t id, count, first_position;
} stream_state;

static void put_u64be(unsigned char *p, uint64_t v) {
  for (int i = 7; i >= 0; i--) { p[i] = (unsigned char)(v & 0xff); v >>= 8; }
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void make_id(unsigned char id[16]) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
  unsigned char t[8];
  put_u64be(t, ms);
  memcpy(id, t + 2, 6);
  put_u64be(id + 6, ++id_counter);
  id[14] = 0x80; id[15] = 0x00;
  id[6] = (unsigned char)(0x70 | (id[6] & 0x0f));
}

/* One record: the log entry and, with index=1, its three index entries. */
static void write_record(MDB_txn *txn, stream_state *st, unsigned char *rec, size_t rec_len) {
  unsigned char pk[8];
  uint64_t pos = ++position;
  put_u64be(pk, pos);
  put_u64be(rec + 16, pos);                 /* make each record's bytes distinct */
  MDB_val k = { 8, pk }, d = { rec_len, rec };
  CHECK(mdb_put(txn, dbi[DB_LOG], &k, &d, MDB_APPEND));
  if (!with_index) return;

  unsigned char sk[16];
  put_u64be(sk, st->id);
  put_u64be(sk + 8, st->count);
  MDB_val k2 = { 16, sk }, d2 = { 8, pk };
  CHECK(mdb_put(txn, dbi[DB_STREAM_INDEX], &k2, &d2, 0));

  unsigned char ck[1 + 5 + 8];
  ck[0] = 5;
  memcpy(ck + 1, "bench", 5);
  put_u64be(ck + 6, pos);
  MDB_val k3 = { sizeof ck, ck }, d3 = { 0, "" };
  CHECK(mdb_put(txn, dbi[DB_CATEGORY_INDEX], &k3, &d3, 0));

  unsigned char id[16];
  make_id(id);
  MDB_val k4 = { 16, id }, d4 = { 8, pk };
  CHECK(mdb_put(txn, dbi[DB_EVENT_IDS], &k4, &d4, MDB_NOOVERWRITE));
  st->count++;
}

/* The stream's metadata: read it, then write it back updated (index=1 only). */
static void write_stream_meta(MDB_txn *txn, stream_state *st) {
  if (!with_index) return;
  MDB_val k = { st->name_len, st->name }, d;
  int rc = mdb_get(txn, dbi[DB_STREAMS], &k, &d);
  if (rc && rc != MDB_NOTFOUND) CHECK(rc);
  unsigned char m[48];
  put_u64be(m, st->id);
  put_u64be(m + 8, st->count);
  put_u64be(m + 16, st->first_position);
  put_u64be(m + 24, position);
  put_u64be(m + 32, 0);
  put_u64be(m + 40, 0);
  MDB_val v = { sizeof m, m };
  CHECK(mdb_put(txn, dbi[DB_STREAMS], &k, &v, 0));
}

static const char *opt(int argc, char **argv, const char *name, const char *dflt) {
  size_t n = strlen(name);
  for (int i = 3; i < argc; i++)
    if (strncmp(argv[i], name, n) == 0 && argv[i][n] == '=') return argv[i] + n + 1;
  return dflt;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: raw_lmdb DIR batch|durable [txns= batch= commits= rec= sync= index= streams= map=]\n");
    return 1;
  }
  const char *dir = argv[1], *mode = argv[2];
  long txns = atol(opt(argc, argv, "txns", "200"));
  long batch = atol(opt(argc, argv, "batch", "1000"));
  long commits = atol(opt(argc, argv, "commits", "300"));
  long rec_len = atol(opt(argc, argv, "rec", "280"));
  const char *sync = opt(argc, argv, "sync", "full");
  with_index = atoi(opt(argc, argv, "index", "1"));
  long nstreams = atol(opt(argc, argv, "streams", "10"));
  size_t map = (size_t)atoll(opt(argc, argv, "map", "4294967296"));
  int durable = strcmp(mode, "durable") == 0;
  if (!durable && strcmp(mode, "batch") != 0) { fprintf(stderr, "raw_lmdb: unknown mode %s\n", mode); return 1; }
  if (strcmp(sync, "full") == 0) env_flags = 0;
  else if (strcmp(sync, "nometasync") == 0) env_flags = MDB_NOMETASYNC;
  else if (strcmp(sync, "nosync") == 0) env_flags = MDB_NOSYNC;
  else { fprintf(stderr, "raw_lmdb: unknown sync %s\n", sync); return 1; }
  if (durable) { txns = commits; batch = 1; }
  if (txns < 1 || batch < 1 || rec_len < 24 || nstreams < 1) { fprintf(stderr, "raw_lmdb: bad sizes\n"); return 1; }

  mkdir(dir, 0755);
  CHECK(mdb_env_create(&env));
  CHECK(mdb_env_set_maxdbs(env, 64));
  CHECK(mdb_env_set_mapsize(env, map));
  CHECK(mdb_env_open(env, dir, MDB_NOTLS | env_flags, 0644));   /* MDB_NOTLS as chronicle */
  MDB_txn *txn;
  CHECK(mdb_txn_begin(env, NULL, 0, &txn));
  for (int i = 0; i < NDB; i++) CHECK(mdb_dbi_open(txn, db_names[i], MDB_CREATE, &dbi[i]));
  CHECK(mdb_txn_commit(txn));

  stream_state *streams = calloc((size_t)nstreams, sizeof *streams);
  for (long i = 0; i < nstreams; i++) {
    streams[i].name_len = (size_t)snprintf(streams[i].name, sizeof streams[i].name, "bench-%ld", i);
    streams[i].id = (uint64_t)i + 1;
  }
  unsigned char *rec = malloc((size_t)rec_len);
  for (long i = 0; i < rec_len; i++) rec[i] = (unsigned char)(i * 31 + 7);

  double t0 = now();
  for (long t = 0; t < txns; t++) {
    stream_state *st = &streams[t % nstreams];
    CHECK(mdb_txn_begin(env, NULL, 0, &txn));
    if (st->count == 0) st->first_position = position + 1;
    for (long i = 0; i < batch; i++) write_record(txn, st, rec, (size_t)rec_len);
    write_stream_meta(txn, st);
    CHECK(mdb_txn_commit(txn));
  }
  double secs = now() - t0;

  mdb_env_close(env);
  free(rec);
  free(streams);
  printf("raw_mode=%s raw_index=%d raw_sync=%s raw_rec=%ld\n", mode, with_index, sync, rec_len);
  printf("raw_events=%ld\nraw_txns=%ld\nraw_secs=%.6f\n", txns * batch, txns, secs);
  printf("raw_eps=%.1f\nraw_cps=%.1f\n", (double)(txns * batch) / secs, (double)txns / secs);
  return 0;
}
