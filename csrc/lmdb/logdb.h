/* Keys and values of the log's index databases (see README "On disk"):
 *   streams:        stream name -> stream_meta (48 bytes)
 *   stream_index:   stream id u64 | version u64 -> position u64
 *   category_index: category length u8 | category | position u64 -> (empty)
 *   event_ids:      event id (16 bytes) -> position u64 */
#ifndef CHRONICLE_LOGDB_H
#define CHRONICLE_LOGDB_H

#include <string.h>
#include <lmdb.h>
#include "common/bytes.h"
#include "envreg.h"
#include "common/record.h"
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

#define STREAM_META_SIZE 48
#define CATEGORY_KEY_MAX (1 + RECORD_MAX_STREAM + 8)

typedef struct stream_meta {
  uint64_t id;
  uint64_t count;          /* events in the stream: last version + 1 */
  uint64_t first_position;
  uint64_t last_position;
  int64_t created;         /* ns since the epoch */
  int64_t updated;
} stream_meta;

static inline void stream_meta_encode(const stream_meta *m, unsigned char out[STREAM_META_SIZE]) {
  put_u64be(out, m->id);
  put_u64be(out + 8, m->count);
  put_u64be(out + 16, m->first_position);
  put_u64be(out + 24, m->last_position);
  put_u64be(out + 32, (uint64_t)m->created);
  put_u64be(out + 40, (uint64_t)m->updated);
}

static inline void stream_meta_decode(const unsigned char *p, stream_meta *m) {
  m->id = get_u64be(p);
  m->count = get_u64be(p + 8);
  m->first_position = get_u64be(p + 16);
  m->last_position = get_u64be(p + 24);
  m->created = (int64_t)get_u64be(p + 32);
  m->updated = (int64_t)get_u64be(p + 40);
}

/* Returns 0, MDB_NOTFOUND, MDB_CORRUPTED for a short value, or an LMDB error. */
static inline int stream_meta_get(MDB_txn *txn, const envref *e, const void *name, size_t len,
                                  stream_meta *m) {
  MDB_val k = { len, (void *)name }, d;
  int rc = mdb_get(txn, e->dbi[DB_STREAMS], &k, &d);
  if (rc) return rc;
  if (d.mv_size < STREAM_META_SIZE) return MDB_CORRUPTED;
  stream_meta_decode(d.mv_data, m);
  return 0;
}

/* The category of a stream: its name up to the first '-', or all of it. */
static inline size_t category_len(const void *name, size_t len) { return record_category_len(name, len); }

/* Builds a category_index key; returns its length. */
static inline size_t category_key(unsigned char *out, const void *cat, size_t cat_len, uint64_t pos) {
  out[0] = (unsigned char)cat_len;
  memcpy(out + 1, cat, cat_len);
  put_u64be(out + 1 + cat_len, pos);
  return cat_len + 9;
}

static inline void stream_index_key(unsigned char out[16], uint64_t sid, uint64_t version) {
  put_u64be(out, sid);
  put_u64be(out + 8, version);
}

/* The newest global position (0 for an empty log). */
static inline int log_head(MDB_txn *txn, const envref *e, uint64_t *head) {
  MDB_cursor *c;
  int rc = mdb_cursor_open(txn, e->dbi[DB_LOG], &c);
  if (rc) return rc;
  MDB_val k, d;
  *head = 0;
  rc = mdb_cursor_get(c, &k, &d, MDB_LAST);
  if (rc == 0 && k.mv_size == 8) *head = get_u64be(k.mv_data);
  else if (rc == 0) rc = MDB_CORRUPTED;
  if (rc == MDB_NOTFOUND) rc = 0;
  mdb_cursor_close(c);
  return rc;
}

#pragma GCC visibility pop
#endif
