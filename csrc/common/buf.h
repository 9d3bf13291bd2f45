/* A growable byte buffer owned by C code. Growth reports failure instead of
 * raising, so callers can release LMDB resources before telling Lua. */
#ifndef CHRONICLE_BUF_H
#define CHRONICLE_BUF_H

#include <stddef.h>
#include <string.h>
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

typedef struct buf {
  unsigned char *data;
  size_t len;
  size_t cap;
} buf;

void buf_init(buf *b);
void buf_free(buf *b);
/* Makes room for `extra` more bytes; returns 0 on success, -1 when out of memory. */
int buf_reserve(buf *b, size_t extra);

static inline int buf_append(buf *b, const void *p, size_t n) {
  if (b->cap - b->len < n && buf_reserve(b, n) != 0) return -1;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

#pragma GCC visibility pop
#endif
