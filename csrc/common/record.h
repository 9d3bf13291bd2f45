/* The event record stored in the `log` database, keyed by global position.
 *
 *   0  u64  XXH3-64 checksum of bytes 8..end (LMDB does not checksum data)
 *   8  u8   record format (1)
 *   9  u8   reserved (0)
 *  10  u16  stream name length S
 *  12  u16  type length T
 *  14  u16  schema version of the data
 *  16  u64  stream version (0-based)
 *  24  i64  time, ns since the Unix epoch
 *  32  16B  event id (UUID)
 *  48  u32  meta length M
 *  52  stream[S] type[T] meta[M] data[rest]   (meta and data are MessagePack)
 *
 * All integers big-endian. */
#ifndef CHRONICLE_RECORD_H
#define CHRONICLE_RECORD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "bytes.h"
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

#define RECORD_HEADER 52
#define RECORD_FORMAT 1
#define RECORD_MAX_STREAM 200
#define RECORD_MAX_TYPE 200
#define RECORD_VERSION_AT 16   /* the offset of the stream version (above) */

/* The stream version of a record already checked (record_parse or record_layout). */
static inline uint64_t record_version(const unsigned char *rec) { return get_u64be(rec + RECORD_VERSION_AT); }

/* A stream's category: its name up to the first '-', all of it when there is none. The one
 * place this rule is written; both backends and every index use it. */
static inline size_t record_category_len(const void *name, size_t len) {
  const char *dash = memchr(name, '-', len);
  return dash ? (size_t)(dash - (const char *)name) : len;
}

typedef struct record_view {
  const unsigned char *stream; size_t stream_len;
  const unsigned char *type;   size_t type_len;
  const unsigned char *meta;   size_t meta_len;
  const unsigned char *data;   size_t data_len;
  const unsigned char *id;     /* 16 bytes */
  uint64_t version;
  int64_t time;
  unsigned schema;
} record_view;

/* Writes the header fields and checksum of a record whose body pieces are
 * already in place at rec[RECORD_HEADER..len). */
void record_seal(unsigned char *rec, size_t len, const record_view *v);

/* Checks the checksum and the layout; fills *v pointing into rec. Returns 0,
 * or -1 with *why set when the record is damaged. */
int record_parse(const unsigned char *rec, size_t len, record_view *v, const char **why);

/* record_parse without the checksum, for a record already checked. */
int record_layout(const unsigned char *rec, size_t len, record_view *v, const char **why);

/* The checksum alone, for verification that wants no parse. */
uint64_t record_checksum(const unsigned char *rec, size_t len);

#pragma GCC visibility pop
#endif
