/* faultshim: an LD_PRELOAD library that makes one write-ish call on a store's files fail.
 *
 *   cc -shared -fPIC -O2 scripts/faultshim.c -o faultshim.so -ldl
 *   FAULT_AT=0 FAULT_COUNT_FILE=/tmp/n LD_PRELOAD=./faultshim.so lua5.4 workload.lua
 *   FAULT_AT=17 LD_PRELOAD=./faultshim.so lua5.4 workload.lua
 *
 * Calls watched: write, writev, pwrite, pwrite64, pwritev, pwritev64, fsync, fdatasync, ftruncate,
 * ftruncate64 on a file descriptor whose path ends in "data.mdb" or "lock.mdb", and msync on a
 * range mmap'ed from such a file. They are numbered from 1 in the order the process makes them.
 *
 *   FAULT_AT=N          call N fails with -1/errno and has no effect (0: only count)
 *   FAULT_ERRNO=ENOSPC  the errno (EIO by default; also ENOSPC, EDQUOT, EROFS)
 *   FAULT_STICKY=1      every call from N on fails too (a disk that went away)
 *   FAULT_COUNT_FILE=F  at exit, writes "count N" and one line per call ("I KIND FILE") to F,
 *                       when the process made any watched call
 *   FAULT_VERBOSE=1     says on stderr which call it failed
 *
 * Everything else is passed to the next definition (dlsym(RTLD_NEXT, ...)). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define LOG_MAX 200000
#define MAPS_MAX 64

static long fault_at = -1;          /* -1: not configured yet */
static int fault_errno = EIO, fault_sticky, fault_verbose;
static atomic_long calls;
static unsigned char log_kind[LOG_MAX], log_file[LOG_MAX];
static struct { char *addr; size_t len; int file; } maps[MAPS_MAX];

enum { K_WRITE, K_WRITEV, K_PWRITE, K_PWRITEV, K_FSYNC, K_FDATASYNC, K_FTRUNCATE, K_MSYNC };
static const char *const kind_names[] = { "write", "writev", "pwrite", "pwritev", "fsync", "fdatasync",
                                          "ftruncate", "msync" };
static const char *const file_names[] = { "other", "data.mdb", "lock.mdb" };

#define REAL(name) static __typeof__(name) *real_##name; \
  if (!real_##name) real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

static void configure(void) {
  if (fault_at >= 0) return;
  const char *s = getenv("FAULT_AT");
  long at = s ? strtol(s, NULL, 10) : 0;
  const char *e = getenv("FAULT_ERRNO");
  if (e && strcmp(e, "ENOSPC") == 0) fault_errno = ENOSPC;
  else if (e && strcmp(e, "EDQUOT") == 0) fault_errno = EDQUOT;
  else if (e && strcmp(e, "EROFS") == 0) fault_errno = EROFS;
  s = getenv("FAULT_STICKY");
  fault_sticky = s && s[0] == '1';
  s = getenv("FAULT_VERBOSE");
  fault_verbose = s && s[0] == '1';
  fault_at = at < 0 ? 0 : at;
}

/* 1 for data.mdb, 2 for lock.mdb, 0 for anything else. */
static int fd_file(int fd) {
  char link[64], path[PATH_MAX];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof path - 1);
  if (n < 8) return 0;
  path[n] = '\0';
  if (n >= 8 && strcmp(path + n - 8, "data.mdb") == 0) return 1;
  if (n >= 8 && strcmp(path + n - 8, "lock.mdb") == 0) return 2;
  return 0;
}

/* Numbers a watched call; returns 1 when it must fail (errno is then set). */
static int fault_hit(int kind, int file) {
  if (file == 0) return 0;
  configure();
  long n = atomic_fetch_add(&calls, 1) + 1;
  if (n <= LOG_MAX) { log_kind[n - 1] = (unsigned char)kind; log_file[n - 1] = (unsigned char)file; }
  if (fault_at == 0 || n < fault_at || (n > fault_at && !fault_sticky)) return 0;
  if (fault_verbose) {
    char msg[128];
    int len = snprintf(msg, sizeof msg, "faultshim: call %ld (%s on %s) fails with %s\n", n, kind_names[kind],
                       file_names[file], fault_errno == EIO ? "EIO" : "an injected errno");
    REAL(write);
    if (real_write(2, msg, (size_t)len) < 0) { /* nothing to do */ }
  }
  errno = fault_errno;
  return 1;
}

ssize_t write(int fd, const void *buf, size_t n) {
  REAL(write);
  if (fd > 2 && fault_hit(K_WRITE, fd_file(fd))) return -1;
  return real_write(fd, buf, n);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
  REAL(writev);
  if (fd > 2 && fault_hit(K_WRITEV, fd_file(fd))) return -1;
  return real_writev(fd, iov, cnt);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
  REAL(pwrite);
  if (fault_hit(K_PWRITE, fd_file(fd))) return -1;
  return real_pwrite(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off) {
  REAL(pwrite64);
  if (fault_hit(K_PWRITE, fd_file(fd))) return -1;
  return real_pwrite64(fd, buf, n, off);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
  REAL(pwritev);
  if (fault_hit(K_PWRITEV, fd_file(fd))) return -1;
  return real_pwritev(fd, iov, cnt, off);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off64_t off) {
  REAL(pwritev64);
  if (fault_hit(K_PWRITEV, fd_file(fd))) return -1;
  return real_pwritev64(fd, iov, cnt, off);
}

int fsync(int fd) {
  REAL(fsync);
  if (fault_hit(K_FSYNC, fd_file(fd))) return -1;
  return real_fsync(fd);
}

int fdatasync(int fd) {
  REAL(fdatasync);
  if (fault_hit(K_FDATASYNC, fd_file(fd))) return -1;
  return real_fdatasync(fd);
}

int ftruncate(int fd, off_t len) {
  REAL(ftruncate);
  if (fault_hit(K_FTRUNCATE, fd_file(fd))) return -1;
  return real_ftruncate(fd, len);
}

int ftruncate64(int fd, off64_t len) {
  REAL(ftruncate64);
  if (fault_hit(K_FTRUNCATE, fd_file(fd))) return -1;
  return real_ftruncate64(fd, len);
}

/* mmap is watched only to know which ranges msync flushes to a store file. */
static void remember_map(void *p, size_t len, int fd) {
  int file = fd >= 0 ? fd_file(fd) : 0;
  if (p == MAP_FAILED || file == 0) return;
  for (int i = 0; i < MAPS_MAX; i++)
    if (maps[i].addr == NULL) { maps[i].addr = p; maps[i].len = len; maps[i].file = file; return; }
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  REAL(mmap);
  void *p = real_mmap(addr, len, prot, flags, fd, off);
  remember_map(p, len, fd);
  return p;
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off64_t off) {
  REAL(mmap64);
  void *p = real_mmap64(addr, len, prot, flags, fd, off);
  remember_map(p, len, fd);
  return p;
}

int munmap(void *addr, size_t len) {
  REAL(munmap);
  for (int i = 0; i < MAPS_MAX; i++)
    if (maps[i].addr == addr) maps[i].addr = NULL;
  return real_munmap(addr, len);
}

int msync(void *addr, size_t len, int flags) {
  REAL(msync);
  int file = 0;
  for (int i = 0; i < MAPS_MAX; i++)
    if (maps[i].addr && (char *)addr >= maps[i].addr && (char *)addr < maps[i].addr + maps[i].len)
      file = maps[i].file;
  if (fault_hit(K_MSYNC, file)) return -1;
  return real_msync(addr, len, flags);
}

__attribute__((destructor)) static void fault_report(void) {
  long n = atomic_load(&calls);
  const char *path = getenv("FAULT_COUNT_FILE");
  if (path == NULL || n == 0) return;
  FILE *f = fopen(path, "w");
  if (f == NULL) return;
  fprintf(f, "count %ld\n", n);
  for (long i = 0; i < n && i < LOG_MAX; i++)
    fprintf(f, "%ld %s %s\n", i + 1, kind_names[log_kind[i]], file_names[log_file[i]]);
  fclose(f);
}
