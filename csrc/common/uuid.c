/* UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits. A process
 * keeps its ids increasing: an id not above the last one (same millisecond,
 * or a clock that went back) becomes the last one plus one. */
#include <pthread.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include "uuid.h"

static pthread_mutex_t uuid_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t uuid_once = PTHREAD_ONCE_INIT;
static unsigned char uuid_last[16];

/* Random bytes come from getrandom() a pool at a time (one system call per
 * event was measurable); a forked child throws the pool away so it never
 * repeats its parent's ids. All under uuid_lock. */
static unsigned char uuid_pool[4096];
static size_t uuid_pool_left = 0;

static void uuid_forget_pool(void) { uuid_pool_left = 0; }
static void uuid_at_fork(void) { pthread_atfork(NULL, NULL, uuid_forget_pool); }

static int uuid_random(unsigned char *p, size_t n) {
  if (uuid_pool_left < n) {
    size_t filled = 0;
    while (filled < sizeof uuid_pool) {
      ssize_t got = getrandom(uuid_pool + filled, sizeof uuid_pool - filled, 0);
      if (got < 0) return -1;
      filled += (size_t)got;
    }
    uuid_pool_left = sizeof uuid_pool;
  }
  memcpy(p, uuid_pool + sizeof uuid_pool - uuid_pool_left, n);
  memset(uuid_pool + sizeof uuid_pool - uuid_pool_left, 0, n);
  uuid_pool_left -= n;
  return 0;
}

/* Adds one to the 74 random bits (bytes 6..15 minus version/variant bits). */
static void uuid_increment(unsigned char id[16]) {
  for (int i = 15; i >= 9; i--)
    if (++id[i] != 0) return;
  id[8] = (unsigned char)((id[8] & 0xc0) | ((id[8] + 1) & 0x3f));
}

unsigned long long uuid_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (unsigned long long)ts.tv_sec * 1000ull + (unsigned long long)ts.tv_nsec / 1000000ull;
}

int uuid_v7(unsigned char out[16]) { return uuid_v7_at(out, uuid_now_ms()); }

int uuid_v7_at(unsigned char out[16], unsigned long long ms) {
  unsigned char id[16];
  for (int i = 5; i >= 0; i--) { id[i] = (unsigned char)(ms & 0xff); ms >>= 8; }
  pthread_once(&uuid_once, uuid_at_fork);
  pthread_mutex_lock(&uuid_lock);
  if (uuid_random(id + 6, 10) != 0) {
    pthread_mutex_unlock(&uuid_lock);
    return -1;
  }
  id[6] = (unsigned char)(0x70 | (id[6] & 0x0f));
  id[8] = (unsigned char)(0x80 | (id[8] & 0x3f));
  if (memcmp(id, uuid_last, 16) <= 0) {      /* same millisecond, or the clock went back */
    memcpy(id, uuid_last, 16);
    uuid_increment(id);
  }
  memcpy(uuid_last, id, 16);
  pthread_mutex_unlock(&uuid_lock);
  memcpy(out, id, 16);
  return 0;
}

static int uuid_hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int uuid_parse(const char *s, size_t len, unsigned char out[16]) {
  if (len != UUID_TEXT_LEN) return -1;
  int n = 0;
  for (size_t i = 0; i < len; i++) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (s[i] != '-') return -1;
      continue;
    }
    int hi = uuid_hexval(s[i]), lo = uuid_hexval(s[i + 1]);
    if (hi < 0 || lo < 0) return -1;
    out[n++] = (unsigned char)(hi << 4 | lo);
    i++;
  }
  return n == 16 ? 0 : -1;
}

void uuid_format(const unsigned char id[16], char out[UUID_TEXT_LEN]) {
  static const char hex[] = "0123456789abcdef";
  /* Where each byte's two digits go: dashes sit at 8, 13, 18 and 23. */
  static const unsigned char at[16] = { 0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34 };
  for (int i = 0; i < 16; i++) {
    out[at[i]] = hex[id[i] >> 4];
    out[at[i] + 1] = hex[id[i] & 15];
  }
  out[8] = out[13] = out[18] = out[23] = '-';
}
