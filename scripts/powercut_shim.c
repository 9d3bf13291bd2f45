/* powercut_shim: an LD_PRELOAD library that records, in order, every write and sync a process
 * makes to a store's files, so that spec/support/powercut.lua can rebuild the states a power cut
 * could leave on disk (the way ALICE and LazyFS record a workload).
 *
 *   cc -shared -fPIC -O2 scripts/powercut_shim.c -o powercut_shim.so -ldl
 *   POWERCUT_LOG=/tmp/x.log POWERCUT_MARK=.acks LD_PRELOAD=./powercut_shim.so lua5.4 workload.lua
 *
 * Watched: write, writev, pwrite, pwrite64, pwritev, pwritev64, fsync, fdatasync, ftruncate,
 * ftruncate64 and msync on a file whose path ends in "data.mdb" or "lock.mdb" (an msync on a
 * range mmap'ed from one), and the writes to a file whose path ends in POWERCUT_MARK (the
 * workload's acknowledgements: they land in the log between the store's own calls, in the order
 * the process made them). Every call is recorded after it returned, and only when it succeeded
 * (a short write is recorded with the bytes it did write). The log is text lines, each write's
 * bytes following its line:
 *
 *   W FILE OFFSET LENGTH DSYNC\n<LENGTH bytes>\n   a write; DSYNC 1 when the descriptor has
 *                                                  O_DSYNC (or O_SYNC): it was on disk on return
 *   S FILE fdatasync|fsync\n                       a completed sync of FILE
 *   T FILE LENGTH\n                                ftruncate
 *   M FILE OFFSET LENGTH\n                         msync of a mapped range
 *   A LENGTH\n<LENGTH bytes>\n                     a write to the mark file
 *
 * FILE is "data" or "lock". writev and write use the descriptor's offset, read with lseek
 * before the call. The log is written with the real write() and is never watched itself.
 * Calls from several threads are serialised (one lock around the call and its record), so the
 * log order is an order in which the calls happened. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAPS_MAX 64

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int log_fd = -2;   /* -2: not opened yet; -1: no log */
static const char *mark_suffix;
static struct { char *addr; size_t len; int file; } maps[MAPS_MAX];

enum { WF_OTHER, WF_DATA, WF_LOCK, WF_MARK };
static const char *const file_names[] = { "other", "data", "lock", "mark" };

#define REAL(name) static __typeof__(name) *real_##name; \
  if (!real_##name) real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

static int ends_with(const char *s, size_t n, const char *suffix) {
  size_t k = strlen(suffix);
  return k > 0 && n >= k && memcmp(s + n - k, suffix, k) == 0;
}

/* Which watched file a descriptor is (WF_OTHER for anything else). */
static int fd_file(int fd) {
  char link[64], path[PATH_MAX];
  if (fd < 0) return WF_OTHER;
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof path - 1);
  if (n <= 0) return WF_OTHER;
  path[n] = '\0';
  if (ends_with(path, (size_t)n, "/data.mdb")) return WF_DATA;
  if (ends_with(path, (size_t)n, "/lock.mdb")) return WF_LOCK;
  if (mark_suffix && ends_with(path, (size_t)n, mark_suffix)) return WF_MARK;
  return WF_OTHER;
}

__attribute__((constructor)) static void read_mark(void) { mark_suffix = getenv("POWERCUT_MARK"); }

/* Opens the log on first use (with the lock held). */
static int log_open(void) {
  if (log_fd != -2) return log_fd >= 0;
  const char *path = getenv("POWERCUT_LOG");
  log_fd = path ? open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644) : -1;
  return log_fd >= 0;
}

static void log_bytes(const void *p, size_t n) {
  REAL(write);
  const char *c = p;
  while (n > 0) {
    ssize_t w = real_write(log_fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) { log_fd = -1; return; }   /* the log is broken: stop logging, never fail the call */
    c += w;
    n -= (size_t)w;
  }
}

static void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_line(const char *fmt, ...) {
  char line[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (n > 0 && (size_t)n < sizeof line) log_bytes(line, (size_t)n);
}

static int is_dsync(int fd) {
  int fl = fcntl(fd, F_GETFL);
  return fl >= 0 && (fl & O_DSYNC) == O_DSYNC;
}

/* Records a write of `done` bytes (from an iovec list) at `off` to watched file `file`. */
static void log_write(int file, int fd, long long off, const struct iovec *iov, int cnt, ssize_t done) {
  if (done <= 0 || log_fd < 0) return;
  if (file == WF_MARK) log_line("A %zd\n", done);
  else log_line("W %s %lld %zd %d\n", file_names[file], off, done, is_dsync(fd));
  size_t left = (size_t)done;
  for (int i = 0; i < cnt && left > 0 && log_fd >= 0; i++) {
    size_t n = iov[i].iov_len < left ? iov[i].iov_len : left;
    log_bytes(iov[i].iov_base, n);
    left -= n;
  }
  log_bytes("\n", 1);
}

static long long fd_offset(int fd) {
  REAL(lseek);
  return (long long)real_lseek(fd, 0, SEEK_CUR);
}

/* The body of every watched write: the call and its record under the lock. */
#define WATCH_WRITE(fd, off_expr, call, iov, cnt) do {                          \
    int file_ = fd_file(fd);                                                     \
    if (file_ == WF_OTHER) return call;                                           \
    pthread_mutex_lock(&lock);                                                   \
    if (!log_open()) { pthread_mutex_unlock(&lock); return call; }              \
    long long off_ = (off_expr);                                                 \
    __typeof__(call) r_ = call;                                                  \
    int saved_ = errno;                                                          \
    if (r_ > 0) log_write(file_, fd, off_, iov, cnt, (ssize_t)r_);               \
    pthread_mutex_unlock(&lock);                                                 \
    errno = saved_;                                                              \
    return r_;                                                                   \
  } while (0)

ssize_t write(int fd, const void *buf, size_t n) {
  REAL(write);
  struct iovec v = { (void *)buf, n };
  if (fd <= 2) return real_write(fd, buf, n);
  WATCH_WRITE(fd, fd_offset(fd), real_write(fd, buf, n), &v, 1);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
  REAL(writev);
  if (fd <= 2) return real_writev(fd, iov, cnt);
  WATCH_WRITE(fd, fd_offset(fd), real_writev(fd, iov, cnt), iov, cnt);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
  REAL(pwrite);
  struct iovec v = { (void *)buf, n };
  WATCH_WRITE(fd, (long long)off, real_pwrite(fd, buf, n, off), &v, 1);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off) {
  REAL(pwrite64);
  struct iovec v = { (void *)buf, n };
  WATCH_WRITE(fd, (long long)off, real_pwrite64(fd, buf, n, off), &v, 1);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
  REAL(pwritev);
  WATCH_WRITE(fd, (long long)off, real_pwritev(fd, iov, cnt, off), iov, cnt);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off64_t off) {
  REAL(pwritev64);
  WATCH_WRITE(fd, (long long)off, real_pwritev64(fd, iov, cnt, off), iov, cnt);
}

/* Syncs, truncations and msync: the call, then its line, under the lock. */
#define WATCH_OTHER(file_expr, call, ...) do {                                   \
    int file_ = (file_expr);                                                     \
    if (file_ != WF_DATA && file_ != WF_LOCK) return call;                         \
    pthread_mutex_lock(&lock);                                                   \
    int r_ = call;                                                               \
    int saved_ = errno;                                                          \
    if (r_ == 0 && log_open()) log_line(__VA_ARGS__);                            \
    pthread_mutex_unlock(&lock);                                                 \
    errno = saved_;                                                              \
    return r_;                                                                   \
  } while (0)

int fsync(int fd) {
  REAL(fsync);
  WATCH_OTHER(fd_file(fd), real_fsync(fd), "S %s fsync\n", file_names[file_]);
}

int fdatasync(int fd) {
  REAL(fdatasync);
  WATCH_OTHER(fd_file(fd), real_fdatasync(fd), "S %s fdatasync\n", file_names[file_]);
}

int ftruncate(int fd, off_t len) {
  REAL(ftruncate);
  WATCH_OTHER(fd_file(fd), real_ftruncate(fd, len), "T %s %lld\n", file_names[file_], (long long)len);
}

int ftruncate64(int fd, off64_t len) {
  REAL(ftruncate64);
  WATCH_OTHER(fd_file(fd), real_ftruncate64(fd, len), "T %s %lld\n", file_names[file_], (long long)len);
}

/* mmap is watched only to know which ranges msync flushes to a store file. */
static void remember_map(void *p, size_t len, int fd, off_t off) {
  int file = fd_file(fd);
  if (p == MAP_FAILED || (file != WF_DATA && file != WF_LOCK) || off != 0) return;
  pthread_mutex_lock(&lock);
  for (int i = 0; i < MAPS_MAX; i++)
    if (maps[i].addr == NULL) { maps[i].addr = p; maps[i].len = len; maps[i].file = file; break; }
  pthread_mutex_unlock(&lock);
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  REAL(mmap);
  void *p = real_mmap(addr, len, prot, flags, fd, off);
  if (fd >= 0) remember_map(p, len, fd, off);
  return p;
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off64_t off) {
  REAL(mmap64);
  void *p = real_mmap64(addr, len, prot, flags, fd, off);
  if (fd >= 0) remember_map(p, len, fd, (off_t)off);
  return p;
}

int munmap(void *addr, size_t len) {
  REAL(munmap);
  pthread_mutex_lock(&lock);
  for (int i = 0; i < MAPS_MAX; i++)
    if (maps[i].addr == addr) maps[i].addr = NULL;
  pthread_mutex_unlock(&lock);
  return real_munmap(addr, len);
}

static int map_file(void *addr, long long *off) {
  int file = WF_OTHER;
  pthread_mutex_lock(&lock);
  for (int i = 0; i < MAPS_MAX; i++)
    if (maps[i].addr && (char *)addr >= maps[i].addr && (char *)addr < maps[i].addr + maps[i].len) {
      file = maps[i].file;
      *off = (long long)((char *)addr - maps[i].addr);
    }
  pthread_mutex_unlock(&lock);
  return file;
}

int msync(void *addr, size_t len, int flags) {
  REAL(msync);
  long long off = 0;
  WATCH_OTHER(map_file(addr, &off), real_msync(addr, len, flags), "M %s %lld %zu\n", file_names[file_], off, len);
}
