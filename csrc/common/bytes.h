/* Big-endian integer helpers: keys are big-endian so LMDB's default byte
 * comparator sorts them numerically and MDB_APPEND sees increasing keys. */
#ifndef CHRONICLE_BYTES_H
#define CHRONICLE_BYTES_H

#include <stdint.h>
#include <string.h>
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

/* memcpy and a byte swap compile to one load or store and one bswap (a loop over the
 * bytes did not: record_layout, which reads four of these per event, took 150 instructions). */
static inline void put_u64be(unsigned char *p, uint64_t v) {
#if defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  v = __builtin_bswap64(v);
  memcpy(p, &v, 8);
#else
  for (int i = 7; i >= 0; i--) { p[i] = (unsigned char)(v & 0xff); v >>= 8; }
#endif
}

static inline uint64_t get_u64be(const unsigned char *p) {
#if defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  uint64_t v;
  memcpy(&v, p, 8);
  return __builtin_bswap64(v);
#else
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
#endif
}

static inline void put_u32be(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);  p[3] = (unsigned char)v;
}

static inline uint32_t get_u32be(const unsigned char *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline void put_u16be(unsigned char *p, uint16_t v) {
  p[0] = (unsigned char)(v >> 8); p[1] = (unsigned char)v;
}

static inline uint16_t get_u16be(const unsigned char *p) {
  return (uint16_t)(((unsigned)p[0] << 8) | p[1]);
}

#pragma GCC visibility pop
#endif
