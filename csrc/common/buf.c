/* Growable byte buffer (see buf.h). */
#include <stdlib.h>
#include "buf.h"

void buf_init(buf *b) {
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
}

void buf_free(buf *b) {
  free(b->data);
  buf_init(b);
}

int buf_reserve(buf *b, size_t extra) {
  if (b->cap - b->len >= extra) return 0;
  if (extra > ((size_t)-1) / 2 - b->len) return -1;
  size_t want = b->len + extra;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < want) cap *= 2;
  unsigned char *p = realloc(b->data, cap);
  if (p == NULL) return -1;
  b->data = p;
  b->cap = cap;
  return 0;
}
