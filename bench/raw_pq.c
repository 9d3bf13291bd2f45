/*
 * raw_pq.c -- the baseline for chronicle's PostgreSQL benchmarks: libpq used
 * directly, no Lua, no encoding, no checksum, the least SQL the work needs.
 *
 * Build: cc -O2 -Wall -Wextra -I/usr/include/postgresql -o raw_pq bench/raw_pq.c -lpq
 * Run:   raw_pq URL SCHEMA MODE N [M]      (bench/postgres.lua drives it; prints "seconds=S")
 *
 *   setup              creates SCHEMA.ev(position bigserial primary key, stream text, version
 *                      bigint, data bytea, unique (stream, version))
 *   batch   N M        N transactions, each one INSERT of M rows (one stream per transaction)
 *   durable N          N single-row INSERTs in autocommit, each with its expected version
 *                      (the unique index refuses a conflict), rotating over 10 streams
 *   load    N M        N loads of one M-event stream: SELECT data ... ORDER BY version
 *   replay             one SELECT of every row in position order (single-row mode)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <libpq-fe.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void check(PGconn *c, PGresult *r) {
  ExecStatusType st = PQresultStatus(r);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_SINGLE_TUPLE) {
    fprintf(stderr, "raw_pq: %s", PQerrorMessage(c));
    exit(1);
  }
}

static const char payload[] = "\x88\xa7" "account\xa9" "acct-0001\xa6" "amount\xcd\x01\xf4\xa8" "currency\xa3" "EUR"
                              "\xa4" "note\xb0" "a note of bytes\xa3" "seq\x01\xa2" "ok\xc3\xa4" "rate\xcb?\xf0\x00\x00\x00\x00\x00\x00"
                              "\xa3" "ref\xa8" "ref-0001";

int main(int argc, char **argv) {
  if (argc < 4) { fprintf(stderr, "usage: raw_pq URL SCHEMA MODE [N] [M]\n"); return 2; }
  const char *mode = argv[3];
  long n = argc > 4 ? atol(argv[4]) : 0, m = argc > 5 ? atol(argv[5]) : 0;
  PGconn *c = PQconnectdb(argv[1]);
  if (PQstatus(c) != CONNECTION_OK) { fprintf(stderr, "raw_pq: %s", PQerrorMessage(c)); return 1; }
  char sql[512];
  snprintf(sql, sizeof sql, "SET search_path TO %s", argv[2]);
  PQclear(PQexec(c, sql));
  int dlen = (int)sizeof payload - 1;
  double t0 = now();
  if (strcmp(mode, "setup") == 0) {
    snprintf(sql, sizeof sql, "CREATE SCHEMA IF NOT EXISTS %s; SET search_path TO %s;"
             "CREATE TABLE IF NOT EXISTS ev (position bigserial PRIMARY KEY, stream text NOT NULL,"
             " version bigint NOT NULL, data bytea NOT NULL, UNIQUE (stream, version))", argv[2], argv[2]);
    PGresult *r = PQexec(c, sql);
    check(c, r);
    PQclear(r);
  } else if (strcmp(mode, "batch") == 0) {
    char *q = malloc((size_t)m * 64 + 128);
    const char **vals = malloc(sizeof *vals * (size_t)m * 3);
    int *lens = malloc(sizeof *lens * (size_t)m * 3), *fmts = malloc(sizeof *fmts * (size_t)m * 3);
    char (*vers)[24] = malloc(24 * (size_t)m);
    char stream[32];
    for (long t = 0; t < n; t++) {
      snprintf(stream, sizeof stream, "batch-%ld", t);
      size_t off = (size_t)sprintf(q, "INSERT INTO ev (stream, version, data) VALUES ");
      for (long i = 0; i < m; i++) {
        off += (size_t)sprintf(q + off, "%s($%ld,$%ld,$%ld)", i ? "," : "", 3 * i + 1, 3 * i + 2, 3 * i + 3);
        snprintf(vers[i], 24, "%ld", i);
        vals[3 * i] = stream; lens[3 * i] = 0; fmts[3 * i] = 0;
        vals[3 * i + 1] = vers[i]; lens[3 * i + 1] = 0; fmts[3 * i + 1] = 0;
        vals[3 * i + 2] = payload; lens[3 * i + 2] = dlen; fmts[3 * i + 2] = 1;
      }
      PGresult *r = PQexecParams(c, q, (int)(3 * m), NULL, vals, lens, fmts, 0);
      check(c, r);
      PQclear(r);
    }
    free(q); free(vals); free(lens); free(fmts); free(vers);
  } else if (strcmp(mode, "durable") == 0) {
    long version[10] = { 0 };
    for (long i = 0; i < n; i++) {
      char stream[32], ver[24];
      snprintf(stream, sizeof stream, "acct-%ld", i % 10);
      snprintf(ver, sizeof ver, "%ld", version[i % 10]++);
      const char *vals[3] = { stream, ver, payload };
      int lens[3] = { 0, 0, dlen }, fmts[3] = { 0, 0, 1 };
      PGresult *r = PQexecParams(c, "INSERT INTO ev (stream, version, data) VALUES ($1, $2, $3)", 3, NULL,
                                 vals, lens, fmts, 0);
      check(c, r);
      PQclear(r);
    }
  } else if (strcmp(mode, "load") == 0) {
    long total = 0;
    for (long i = 0; i < n; i++) {
      char stream[32];
      snprintf(stream, sizeof stream, "load-%ld", i % (m > 0 ? m : 1));
      const char *vals[1] = { stream };
      PGresult *r = PQexecParams(c, "SELECT data FROM ev WHERE stream = $1 ORDER BY version", 1, NULL, vals,
                                 NULL, NULL, 1);
      check(c, r);
      total += PQntuples(r);
      PQclear(r);
    }
    fprintf(stderr, "rows=%ld\n", total);
  } else if (strcmp(mode, "replay") == 0) {
    if (!PQsendQueryParams(c, "SELECT position, stream, version, data FROM ev ORDER BY position", 0, NULL, NULL,
                           NULL, NULL, 1) || !PQsetSingleRowMode(c)) { fprintf(stderr, "raw_pq: send\n"); return 1; }
    long rows = 0;
    PGresult *r;
    while ((r = PQgetResult(c)) != NULL) {
      check(c, r);
      rows += PQntuples(r);
      PQclear(r);
    }
    fprintf(stderr, "rows=%ld\n", rows);
  } else {
    fprintf(stderr, "raw_pq: unknown mode %s\n", mode);
    return 2;
  }
  printf("seconds=%.6f\n", now() - t0);
  PQfinish(c);
  return 0;
}
