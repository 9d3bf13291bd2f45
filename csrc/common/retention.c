/* Stream lifecycle rules (see retention.h): a small reader for the few
 * top-level keys of a metadata row, shared by the LMDB and PostgreSQL reads. */
#include <string.h>
#include <time.h>
#include "bytes.h"
#include "codec.h"
#include "retention.h"

/* Reads a map header at p[*off]; returns the pair count or -1. */
static long retention_map(const unsigned char *p, size_t len, size_t *off) {
  if (*off >= len) return -1;
  unsigned char b = p[(*off)++];
  if ((b & 0xf0) == 0x80) return b & 0x0f;
  if (b == 0xde && *off + 2 <= len) { long n = get_u16be(p + *off); *off += 2; return n; }
  if (b == 0xdf && *off + 4 <= len) { long n = (long)get_u32be(p + *off); *off += 4; return n; }
  return -1;
}

/* Reads a string at p[*off] into (*s, *n); returns 0, or -1 when it is no string. */
static int retention_str(const unsigned char *p, size_t len, size_t *off, const unsigned char **s, size_t *n) {
  if (*off >= len) return -1;
  unsigned char b = p[*off];
  size_t at = *off + 1, l;
  if ((b & 0xe0) == 0xa0) l = b & 0x1f;
  else if ((b == 0xd9 || b == 0xc4) && at + 1 <= len) { l = p[at]; at += 1; }
  else if ((b == 0xda || b == 0xc5) && at + 2 <= len) { l = get_u16be(p + at); at += 2; }
  else if ((b == 0xdb || b == 0xc6) && at + 4 <= len) { l = get_u32be(p + at); at += 4; }
  else return -1;
  if (l > len - at) return -1;
  *s = p + at;
  *n = l;
  *off = at + l;
  return 0;
}

/* Reads an integer at p[*off]; returns 0, or -1 when it is no integer. */
static int retention_int(const unsigned char *p, size_t len, size_t *off, int64_t *v) {
  if (*off >= len) return -1;
  unsigned char b = p[*off];
  size_t at = *off + 1;
  if (b <= 0x7f) { *v = b; *off = at; return 0; }
  if (b >= 0xe0) { *v = (int8_t)b; *off = at; return 0; }
  static const struct { unsigned char tag; unsigned char size; int sign; } kinds[] = {
    { 0xcc, 1, 0 }, { 0xcd, 2, 0 }, { 0xce, 4, 0 }, { 0xcf, 8, 0 },
    { 0xd0, 1, 1 }, { 0xd1, 2, 1 }, { 0xd2, 4, 1 }, { 0xd3, 8, 1 }
  };
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
    if (kinds[i].tag != b) continue;
    size_t n = kinds[i].size;
    if (at + n > len) return -1;
    uint64_t u = 0;
    for (size_t j = 0; j < n; j++) u = (u << 8) | p[at + j];
    if (kinds[i].sign && n < 8 && (u >> (8 * n - 1)) & 1) u |= ~(uint64_t)0 << (8 * n);
    if (!kinds[i].sign && n == 8 && u > INT64_MAX) return -1;
    *v = (int64_t)u;
    *off = at + n;
    return 0;
  }
  return -1;
}

static int retention_key_is(const unsigned char *k, size_t n, const char *name) {
  return n == strlen(name) && memcmp(k, name, n) == 0;
}

int retention_parse(const unsigned char *p, size_t len, stream_rule *rule) {
  memset(rule, 0, sizeof *rule);
  rule->max_count = rule->max_age_ns = -1;
  rule->present = 1;
  size_t off = 0;
  long pairs = retention_map(p, len, &off);
  if (pairs < 0) return -1;
  for (long i = 0; i < pairs; i++) {
    const unsigned char *k;
    size_t klen;
    if (retention_str(p, len, &off, &k, &klen)) {
      if (codec_skip(p, len, &off) || codec_skip(p, len, &off)) return -1;   /* a key of another kind */
      continue;
    }
    int64_t v;
    if (retention_key_is(k, klen, "deleted")) {
      const unsigned char *s;
      size_t n;
      if (retention_str(p, len, &off, &s, &n) == 0) {
        if (n == 4 && memcmp(s, "hard", 4) == 0) rule->hard = 1;
        continue;
      }
    } else if (retention_key_is(k, klen, "truncate_before") || retention_key_is(k, klen, "deleted_before")) {
      if (retention_int(p, len, &off, &v) == 0) {
        if (v > 0 && (uint64_t)v > rule->hide_before) rule->hide_before = (uint64_t)v;
        continue;
      }
    } else if (retention_key_is(k, klen, "max_count")) {
      if (retention_int(p, len, &off, &v) == 0) { if (v >= 0) rule->max_count = v; continue; }
    } else if (retention_key_is(k, klen, "max_age")) {
      if (retention_int(p, len, &off, &v) == 0) {
        if (v >= 0) rule->max_age_ns = v > INT64_MAX / 1000000000 ? INT64_MAX : v * 1000000000;
        continue;
      }
    }
    if (codec_skip(p, len, &off)) return -1;
  }
  if (off != len) return -1;
  rule->hides = rule->hard || rule->hide_before > 0 || rule->max_count >= 0 || rule->max_age_ns >= 0;
  return 0;
}

uint64_t retention_first_version(const stream_rule *rule, uint64_t count) {
  uint64_t first = rule->hide_before;
  if (rule->max_count >= 0 && count > (uint64_t)rule->max_count && count - (uint64_t)rule->max_count > first)
    first = count - (uint64_t)rule->max_count;
  return first;
}

int retention_hides(const stream_rule *rule, uint64_t count, uint64_t version, int64_t time,
                    const unsigned char *type, size_t type_len, int64_t now, int log_order) {
  if (!rule->hides) return 0;
  if (log_order && type_len == RETENTION_DELETED_TYPE_LEN && memcmp(type, RETENTION_DELETED_TYPE, type_len) == 0)
    return 0;
  if (rule->hard) return 1;
  if (version < retention_first_version(rule, count)) return 1;
  if (rule->max_age_ns >= 0 && time < now - rule->max_age_ns) return 1;
  return 0;
}

int64_t retention_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
