/* The per-process registry of open LMDB environments (see envreg.h). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "common/bytes.h"
#include "envreg.h"
#include "common/uuid.h"

#define ENVREG_DEFAULT_MAP (64u << 20)
#define ENVREG_MAX_GROW_STEP ((size_t)1 << 30)

static const char *const envreg_db_names[DB_COUNT] = {
  "meta", "log", "streams", "stream_index", "category_index", "event_ids", "kv"
};
static const unsigned envreg_db_flags[DB_COUNT] = { 0, 0, 0, 0, 0, 0, 0 };

static pthread_mutex_t envreg_lock = PTHREAD_MUTEX_INITIALIZER;
static envref *envreg_head = NULL;

/* mkdir -p */
static int envreg_mkdirs(const char *dir) {
  char path[4096];
  size_t n = strlen(dir);
  if (n == 0 || n >= sizeof path) return ENAMETOOLONG;
  memcpy(path, dir, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (path[i] == '/' || path[i] == '\0') {
      char c = path[i];
      path[i] = '\0';
      if (mkdir(path, 0755) != 0 && errno != EEXIST) return errno;
      path[i] = c;
    }
  }
  return 0;
}

/* A directory holding anything but LMDB's two files and no data.mdb is someone else's. */
static int envreg_dir_state(const char *dir, int *has_data, int *has_other) {
  DIR *d = opendir(dir);
  if (d == NULL) return errno;
  *has_data = *has_other = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    const char *n = de->d_name;
    if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0) continue;
    if (strcmp(n, "data.mdb") == 0) *has_data = 1;
    else if (strcmp(n, "lock.mdb") != 0) *has_other = 1;
  }
  closedir(d);
  return 0;
}

static int envreg_put_meta(MDB_txn *txn, MDB_dbi dbi, const char *key, const void *v, size_t n) {
  MDB_val k = { strlen(key), (void *)key }, d = { n, (void *)v };
  return mdb_put(txn, dbi, &k, &d, 0);
}

/* First open of an empty environment: write the format, a store id and the creation time. */
static int envreg_init_meta(envref *e, MDB_txn *txn) {
  unsigned char fmt[4], created[8], seq[8];
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  put_u32be(fmt, CHRONICLE_FORMAT);
  put_u64be(created, (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec);
  put_u64be(seq, 0);
  if (uuid_v7(e->store_id) != 0) return EIO;
  int rc = envreg_put_meta(txn, e->dbi[DB_META], "format", fmt, 4);
  if (!rc) rc = envreg_put_meta(txn, e->dbi[DB_META], "store_id", e->store_id, 16);
  if (!rc) rc = envreg_put_meta(txn, e->dbi[DB_META], "created", created, 8);
  if (!rc) rc = envreg_put_meta(txn, e->dbi[DB_META], "stream_seq", seq, 8);
  return rc;
}

static int envreg_check_meta(envref *e, MDB_txn *txn, char why[256]) {
  MDB_val k = { 6, "format" }, d;
  int rc = mdb_get(txn, e->dbi[DB_META], &k, &d);
  if (rc == MDB_NOTFOUND || (rc == 0 && d.mv_size != 4)) {
    snprintf(why, 256, "%s is an LMDB environment but not a chronicle store (no format)", e->path);
    return ENVREG_NOT_A_STORE;
  }
  if (rc) return rc;
  uint32_t fmt = get_u32be(d.mv_data);
  if (fmt > CHRONICLE_FORMAT) {
    snprintf(why, 256, "%s has store format %u, newer than this chronicle (format %d)",
             e->path, (unsigned)fmt, CHRONICLE_FORMAT);
    return ENVREG_NEWER_FORMAT;
  }
  MDB_val ik = { 8, "store_id" }, id;
  rc = mdb_get(txn, e->dbi[DB_META], &ik, &id);
  if (rc == 0 && id.mv_size == 16) memcpy(e->store_id, id.mv_data, 16);
  return rc;
}

/* Opens every named database once, in one transaction, and creates them for a new store. */
static int envreg_open_dbs(envref *e, char why[256]) {
  MDB_txn *txn;
  int rc = mdb_txn_begin(e->env, NULL, e->readonly ? MDB_RDONLY : 0, &txn);
  if (rc) return rc;
  MDB_dbi meta;
  rc = mdb_dbi_open(txn, "meta", 0, &meta);
  int fresh = 0;
  if (rc == MDB_NOTFOUND) {
    /* No chronicle databases: only a brand-new, empty environment may become a store. */
    MDB_dbi main_db;
    MDB_stat st;
    rc = mdb_dbi_open(txn, NULL, 0, &main_db);
    if (!rc) rc = mdb_stat(txn, main_db, &st);
    if (!rc && (st.ms_entries != 0 || e->readonly)) {
      snprintf(why, 256, "%s holds an LMDB environment that is not a chronicle store", e->path);
      rc = ENVREG_NOT_A_STORE;
    }
    fresh = 1;
  }
  for (int i = 0; rc == 0 && i < DB_COUNT; i++) {
    rc = mdb_dbi_open(txn, envreg_db_names[i], envreg_db_flags[i] | (fresh ? MDB_CREATE : 0), &e->dbi[i]);
    if (rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE) {
      snprintf(why, 256, "%s is missing chronicle's '%s' database", e->path, envreg_db_names[i]);
      rc = ENVREG_NOT_A_STORE;
    }
  }
  if (!rc) rc = fresh ? envreg_init_meta(e, txn) : envreg_check_meta(e, txn, why);
  if (rc) {
    mdb_txn_abort(txn);
    return rc;
  }
  return mdb_txn_commit(txn);
}

static envref *envreg_find(dev_t dev, ino_t ino, pid_t pid) {
  for (envref *e = envreg_head; e; e = e->next)
    if (e->dev == dev && e->ino == ino && e->pid == pid) return e;
  return NULL;
}

/* Reliability fix (spec/reliability/damage_spec.lua): LMDB trusts data.mdb's meta page, so a
 * data.mdb cut short after its meta pages (a truncated copy, a full disk while copying) made
 * LMDB touch mapped pages past the end of the file: SIGBUS at open or at the first read.
 * Refuse the environment when the file is shorter than the pages its meta says are in use.
 * The meta is read before the size, so a writer growing the file meanwhile cannot trip it. */
static int envreg_check_size(envref *e, char why[256]) {
  MDB_envinfo info;
  MDB_stat ms;
  mdb_filehandle_t fd;
  struct stat fs;
  if (mdb_env_info(e->env, &info) || mdb_env_stat(e->env, &ms) || mdb_env_get_fd(e->env, &fd) ||
      fstat(fd, &fs) != 0)
    return 0;   /* cannot tell: leave it to LMDB */
  unsigned long long need = ((unsigned long long)info.me_last_pgno + 1) * ms.ms_psize;
  if ((unsigned long long)fs.st_size < need) {
    snprintf(why, 256, "%s/data.mdb is truncated: %llu bytes where its pages need %llu", e->path,
             (unsigned long long)fs.st_size, need);
    return MDB_CORRUPTED;
  }
  return 0;
}

static int envreg_create(const char *dir, const envopts *opts, const struct stat *st, envref **out,
                         char why[256]) {
  size_t n = strlen(dir);
  envref *e = calloc(1, sizeof *e + n + 1);
  if (e == NULL) return ENOMEM;
  memcpy(e->path, dir, n + 1);
  e->dev = st->st_dev;
  e->ino = st->st_ino;
  e->pid = getpid();
  e->refs = 1;
  e->readonly = opts->readonly;
  int rc = mdb_env_create(&e->env);
  if (rc) { free(e); return rc; }
  mdb_env_set_maxdbs(e->env, 16);
  mdb_env_set_mapsize(e->env, opts->map_size ? opts->map_size : ENVREG_DEFAULT_MAP);
  /* MDB_NOTLS: Lua code may hold several read transactions in one thread. */
  rc = mdb_env_open(e->env, dir, MDB_NOTLS | (opts->readonly ? MDB_RDONLY : 0), 0644);
  if (!rc) rc = envreg_check_size(e, why);   /* a data.mdb cut short: see envreg_check_size */
  if (!rc) {
    int dead = 0;
    mdb_reader_check(e->env, &dead);
    rc = envreg_open_dbs(e, why);
  }
  if (rc) {
    mdb_env_close(e->env);   /* even after a failed mdb_env_open */
    free(e);
    return rc;
  }
  pthread_rwlock_init(&e->map_lock, NULL);
  pthread_mutex_init(&e->write_lock, NULL);
  *out = e;
  return 0;
}

int envreg_open(const char *dir, const envopts *opts, envref **out, char why[256]) {
  why[0] = '\0';
  struct stat st;
  if (stat(dir, &st) != 0) {
    if (errno != ENOENT) return errno;
    if (opts->readonly) {
      snprintf(why, 256, "no store at %s", dir);
      return ENVREG_NOT_FOUND;
    }
    int rc = envreg_mkdirs(dir);
    if (rc) return rc;
    if (stat(dir, &st) != 0) return errno;
  }
  if (!S_ISDIR(st.st_mode)) {
    snprintf(why, 256, "%s is not a directory", dir);
    return ENVREG_NOT_A_STORE;
  }
  pthread_mutex_lock(&envreg_lock);
  envref *e = envreg_find(st.st_dev, st.st_ino, getpid());
  if (e != NULL) {
    int rc = 0;
    if (e->readonly && !opts->readonly) {
      snprintf(why, 256, "%s is already open read-only in this process", dir);
      rc = ENVREG_READONLY_SHARED;
    } else if (e->broken) {
      snprintf(why, 256, "a handle of %s in this process lost its memory map (%s): close it first", dir,
               mdb_strerror(e->broken));
      rc = ENVREG_BROKEN;
    } else {
      e->refs++;
      *out = e;
    }
    pthread_mutex_unlock(&envreg_lock);
    return rc;
  }
  int has_data = 0, has_other = 0;
  int rc = envreg_dir_state(dir, &has_data, &has_other);
  if (!rc && !has_data && has_other) {
    snprintf(why, 256, "%s is not empty and holds no chronicle store", dir);
    rc = ENVREG_NOT_A_STORE;
  } else if (!rc && !has_data && opts->readonly) {
    snprintf(why, 256, "no store at %s", dir);
    rc = ENVREG_NOT_FOUND;
  }
  if (!rc) rc = envreg_create(dir, opts, &st, &e, why);
  if (!rc) {
    e->next = envreg_head;
    envreg_head = e;
    *out = e;
  }
  pthread_mutex_unlock(&envreg_lock);
  return rc;
}

void envreg_release(envref *e) {
  pthread_mutex_lock(&envreg_lock);
  int last = --e->refs == 0;
  if (last) {
    for (envref **p = &envreg_head; *p; p = &(*p)->next)
      if (*p == e) { *p = e->next; break; }
  }
  pthread_mutex_unlock(&envreg_lock);
  if (!last) return;
  /* In a forked child the environment belongs to the parent: closing it here
   * would clear the parent's reader slots, so it is left alone (and leaked). */
  if (e->pid != getpid()) return;
  mdb_env_close(e->env);
  pthread_rwlock_destroy(&e->map_lock);
  pthread_mutex_destroy(&e->write_lock);
  free(e);
}

/* mdb_env_set_mapsize with the map lock held exclusively. A failure after
 * LMDB unmapped the old map (its mmap of the new size failed) leaves the
 * environment without a map: it is marked broken, so that no transaction
 * ever begins on it again (which would crash). */
static int envreg_set_mapsize(envref *e, size_t size) {
  int rc = mdb_env_set_mapsize(e->env, size);
  /* Its only other failure, EINVAL for an active transaction, cannot happen
   * under the exclusive lock; nothing may look at the environment now
   * (even mdb_env_info reads the meta pages through the map). */
  if (rc) e->broken = rc;
  return rc;
}

/* Durability is an environment flag that LMDB copies into a write
 * transaction when it begins (0.9.24 ignores it as a mdb_txn_begin flag), so
 * it is set just before each write transaction begins, under a lock that
 * keeps two threads of this process from mixing theirs. */
static int envreg_write_begin(envref *e, unsigned flags, MDB_txn **txn) {
  const unsigned sync_flags = MDB_NOSYNC | MDB_NOMETASYNC;
  pthread_mutex_lock(&e->write_lock);
  int rc = mdb_env_set_flags(e->env, sync_flags, 0);
  if (!rc && (flags & sync_flags)) rc = mdb_env_set_flags(e->env, flags & sync_flags, 1);
  if (!rc) rc = mdb_txn_begin(e->env, NULL, 0, txn);
  pthread_mutex_unlock(&e->write_lock);
  return rc;
}

/* One attempt: a write transaction, a renewed *spare, or a new read transaction. */
static int envreg_begin_once(envref *e, unsigned flags, MDB_txn **spare, MDB_txn **txn) {
  if (e->broken) return e->broken;
  if (!(flags & MDB_RDONLY)) return envreg_write_begin(e, flags, txn);
  if (spare && *spare) {
    int rc = mdb_txn_renew(*spare);     /* on failure the handle stays reset, renewable */
    if (rc == 0) {
      *txn = *spare;
      *spare = NULL;
    }
    return rc;
  }
  return mdb_txn_begin(e->env, NULL, MDB_RDONLY, txn);
}

/* Map locks this thread holds: while it holds one (a verify's transaction,
 * a backup's copy) it must not wait for the exclusive lock, which would
 * wait for itself. */
static _Thread_local int envreg_held;

static int envreg_begin(envref *e, unsigned flags, MDB_txn **spare, MDB_txn **txn) {
  for (int tries = 0;; tries++) {
    pthread_rwlock_rdlock(&e->map_lock);
    int rc = envreg_begin_once(e, flags, spare, txn);
    if (rc == 0) {
      envreg_held++;
      return 0;
    }
    pthread_rwlock_unlock(&e->map_lock);
    if (rc != MDB_MAP_RESIZED || tries > 8 || envreg_held > 0) return rc;
    /* Another process grew the map: adopt its size, with nothing of ours active. */
    pthread_rwlock_wrlock(&e->map_lock);
    rc = e->broken ? e->broken : envreg_set_mapsize(e, 0);
    pthread_rwlock_unlock(&e->map_lock);
    if (rc) return rc;
  }
}

void envreg_pin(envref *e) {
  pthread_rwlock_rdlock(&e->map_lock);
  envreg_held++;
}

void envreg_unpin(envref *e) {
  envreg_held--;
  pthread_rwlock_unlock(&e->map_lock);
}

int envreg_txn_begin(envref *e, unsigned flags, MDB_txn **txn) { return envreg_begin(e, flags, NULL, txn); }

int envreg_read_begin(envref *e, MDB_txn **spare, MDB_txn **txn) { return envreg_begin(e, MDB_RDONLY, spare, txn); }

void envreg_read_end(envref *e, MDB_txn **spare, MDB_txn *txn) {
  if (*spare == NULL) {
    mdb_txn_reset(txn);                 /* releases the snapshot, keeps the handle and its slot */
    *spare = txn;
  } else {
    mdb_txn_abort(txn);
  }
  envreg_held--;
  pthread_rwlock_unlock(&e->map_lock);
}

int envreg_txn_finish(envref *e, MDB_txn *txn, int commit) {
  int rc = 0;
  if (commit) rc = mdb_txn_commit(txn);   /* frees txn whatever it returns */
  else mdb_txn_abort(txn);
  envreg_held--;
  pthread_rwlock_unlock(&e->map_lock);
  return rc;
}

int envreg_grow(envref *e) {
  if (envreg_held > 0) return MDB_MAP_FULL;     /* this thread holds the map: it cannot wait for itself */
  pthread_rwlock_wrlock(&e->map_lock);
  MDB_envinfo info;
  int rc = e->broken ? e->broken : mdb_env_info(e->env, &info);
  if (!rc) {
    size_t cur = info.me_mapsize;
    size_t step = cur < ENVREG_MAX_GROW_STEP ? cur : ENVREG_MAX_GROW_STEP;
    /* LMDB unmaps the old map before it maps the new one, and a failure
     * there leaves it with no map at all: try the larger mapping first. */
    int fd;
    rc = mdb_env_get_fd(e->env, &fd);
    if (!rc) {
      void *p = mmap(NULL, cur + step, PROT_READ, MAP_SHARED, fd, 0);
      if (p == MAP_FAILED) rc = errno ? errno : ENOMEM;
      else munmap(p, cur + step);
    }
    if (!rc) rc = envreg_set_mapsize(e, cur + step);
  }
  pthread_rwlock_unlock(&e->map_lock);
  return rc;
}
