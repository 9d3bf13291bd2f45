/* store:backup(dest, {progress}): a compacted copy of the environment (LMDB's
 * mdb_env_copyfd2) written by a thread into a pipe, while this thread moves the bytes into
 * dest/data.mdb and reports progress. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <lauxlib.h>
#include "common/cerror.h"
#include "common/options.h"
#include "backup.h"
#include "logdb.h"
#include "store.h"

static double backup_clock(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A backup's copy runs in a thread writing into a pipe, so this thread can
 * count the bytes into the destination file and report progress. */
typedef struct backup_job {
  MDB_env *env;
  int fd;        /* the pipe's write end, closed by the thread when it is done */
  int rc;
} backup_job;

static void *backup_thread(void *arg) {
  backup_job *job = arg;
  job->rc = mdb_env_copyfd2(job->env, job->fd, MDB_CP_COMPACT);
  close(job->fd);
  return NULL;
}

/* store:backup(dest [, {progress = fn(bytes_done, bytes_total)}]) -> true | nil, err:
 * a consistent, compacted copy taken under one read transaction while
 * others may keep writing. `progress` may read the store; writing to it or
 * closing it raises, and an error `progress` raises stops the backup (the
 * copy is removed) and is raised to the caller. */
static int backup_copy(lua_State *L) {
  store *s = store_check(L, 1);
  const char *dest = store_check_path(L, 2);
  int fn = opt_backup(L, 3);
  luaL_checkstack(L, 4, "backup");
  char file[4200];
  snprintf(file, sizeof file, "%s/data.mdb", dest);
  if (access(file, F_OK) == 0) return cerr_result(L, "exists", "backup: %s already holds a store", dest);
  if (mkdir(dest, 0755) != 0 && errno != EEXIST) return cerr_mdb_result(L, errno, "backup: cannot create directory");
  MDB_envinfo info;
  MDB_stat st;
  mdb_env_info(s->e->env, &info);
  mdb_env_stat(s->e->env, &st);
  long long total = (long long)(info.me_last_pgno + 1) * st.ms_psize;

  int out = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (out < 0) return cerr_mdb_result(L, errno, "backup: cannot create data.mdb");
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) {
    int e = errno;
    close(out);
    unlink(file);
    return cerr_mdb_result(L, e, "backup");
  }
  backup_job job = { s->e->env, pipefd[1], 0 };
  pthread_t thread;
  /* The copy's read transaction is LMDB's own: no resize while it runs. */
  envreg_pin(s->e);
  if (pthread_create(&thread, NULL, backup_thread, &job) != 0) {
    envreg_unpin(s->e);
    close(pipefd[0]);
    close(pipefd[1]);
    close(out);
    unlink(file);
    return cerr_mdb_result(L, EAGAIN, "backup: cannot start the copy");
  }
  char chunk[1 << 16];
  long long done = 0;
  double last = 0;
  int werr = 0, stopped = 0;     /* stopped: the callback raised, its error is on top of the stack */
  store_busy busy;
  store_busy_begin(s, "backup", &busy);
  for (;;) {
    ssize_t n = read(pipefd[0], chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    /* After a failed write keep draining the pipe: closing it early would
     * kill the process with SIGPIPE in the copy thread. */
    for (ssize_t off = 0; off < n && !werr && !stopped;) {
      ssize_t w = write(out, chunk + off, (size_t)(n - off));
      if (w < 0 && errno != EINTR) werr = errno;
      if (w > 0) off += w;
    }
    if (werr || stopped) continue;
    done += n;
    double t = backup_clock();
    if (t - last >= 0.1) {
      last = t;
      stopped = store_report_progress(L, fn, done, total) != 0;
    }
  }
  pthread_join(thread, NULL);
  envreg_unpin(s->e);
  close(pipefd[0]);
  if (!werr && !stopped && fsync(out) != 0) werr = errno;
  close(out);
  int rc = werr ? werr : job.rc;
  if (!stopped && !rc) stopped = store_report_progress(L, fn, done, done) != 0;
  store_busy_end(s, &busy);
  if (stopped) {
    unlink(file);
    return lua_error(L);          /* the callback's own error */
  }
  if (rc) {
    unlink(file);
    return cerr_mdb_result(L, rc, "backup");
  }
  lua_pushboolean(L, 1);
  return 1;
}

void backup_register(lua_State *L) {
  lua_pushcfunction(L, backup_copy);
  lua_setfield(L, -2, "backup");
}
