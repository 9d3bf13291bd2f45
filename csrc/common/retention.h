/* Stream lifecycle rules as every backend's read path applies them: what a
 * stream's metadata row (the `stream_metadata` key-value space, a
 * MessagePack map written by lua/chronicle/lifecycle.lua) hides. A row
 * holds, besides the caller's custom keys under `custom`:
 *   version          the metadata's version (0 for the first)
 *   truncate_before  events below this stream version are hidden
 *   max_count        only the newest max_count events are visible
 *   max_age          events older than this many seconds are hidden
 *   deleted_before   set by delete_stream: versions below it are hidden
 *   deleted          "soft" or "hard" (a tombstone: appends are refused)
 * Log-order reads (read_all, category and type reads) still show events of
 * type RETENTION_DELETED_TYPE, so projections and handlers learn of the
 * deletion; stream reads hide them with the rest. */
#ifndef CHRONICLE_RETENTION_H
#define CHRONICLE_RETENTION_H

#include <stddef.h>
#include <stdint.h>
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

#define RETENTION_SPACE "stream_metadata"
#define RETENTION_SPACE_LEN 15
#define RETENTION_DELETED_TYPE "$stream_deleted"
#define RETENTION_DELETED_TYPE_LEN 15

typedef struct stream_rule {
  int present;               /* the stream has a metadata row */
  int hides;                 /* the row hides something (any rule below is set) */
  int hard;                  /* deleted = "hard": a tombstone */
  uint64_t hide_before;      /* max(truncate_before, deleted_before) */
  int64_t max_count;         /* -1: none */
  int64_t max_age_ns;        /* -1: none */
} stream_rule;

/* Reads the rule from a metadata row's bytes. Returns 0, or -1 when the row
 * is not a map of the expected shape (the caller reports it as corrupt). */
int retention_parse(const unsigned char *p, size_t len, stream_rule *rule);

/* The lowest version that is not hidden by truncate_before, deletion or
 * max_count, for a stream of `count` events. */
uint64_t retention_first_version(const stream_rule *rule, uint64_t count);

/* Does the rule hide the event (version, time, type) of a stream of `count`
 * events, read at `now` (ns)? `log_order`: a read_all/category/type read,
 * which still shows deletion events. */
int retention_hides(const stream_rule *rule, uint64_t count, uint64_t version, int64_t time,
                    const unsigned char *type, size_t type_len, int64_t now, int log_order);

/* The clock reads use for max_age: ns since the epoch. */
int64_t retention_now(void);

#pragma GCC visibility pop
#endif
