/* bench_sqlite.c — the keyed-insert limit: how many metric rows per second SQLite itself
 * commits, configured as mapsaged configures it (WAL, synchronous = NORMAL), with one
 * prepared INSERT in transactions of --tx rows.
 *
 * The table has the metrics table's columns and key, WITHOUT ROWID, but no foreign key and
 * no OR REPLACE: the bare cost of keeping (run, name, step) ordered. Rows arrive as a
 * worker's events do: step by step, --values names per step, --runs runs interleaved.
 * --rowid instead uses a plain rowid table without a key (the unindexed figure). Prints
 * one JSON object. A benchmark, never a test. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void check(sqlite3 *db, int rc, const char *what) {
  if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
    fprintf(stderr, "bench_sqlite: %s: %s\n", what, sqlite3_errmsg(db));
    exit(1);
  }
}

int main(int argc, char **argv) {
  const char *path = NULL;
  long long rows = 1000000;
  int tx = 10000, runs = 1, values = 4, rowid = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--db") == 0 && i + 1 < argc) path = argv[++i];
    else if (strcmp(argv[i], "--rows") == 0 && i + 1 < argc) rows = atoll(argv[++i]);
    else if (strcmp(argv[i], "--tx") == 0 && i + 1 < argc) tx = atoi(argv[++i]);
    else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) runs = atoi(argv[++i]);
    else if (strcmp(argv[i], "--values") == 0 && i + 1 < argc) values = atoi(argv[++i]);
    else if (strcmp(argv[i], "--rowid") == 0) rowid = 1;
    else path = NULL, i = argc;
  }
  if (path == NULL || rows < 1 || tx < 1 || runs < 1 || values < 1 || values > 8) {
    fprintf(stderr, "usage: bench_sqlite --db PATH [--rows N] [--tx N] [--runs N] [--values 1-8] [--rowid]\n");
    return 2;
  }
  static const char *const names[8] = {"loss/total", "loss/task", "loss/distill", "loss/feature",
                                       "lr", "grad_norm/total", "agreement", "temperature"};
  char wal[4200], shm[4200];
  snprintf(wal, sizeof wal, "%s-wal", path);
  snprintf(shm, sizeof shm, "%s-shm", path);
  unlink(path);
  unlink(wal);
  unlink(shm);

  sqlite3 *db;
  check(NULL, sqlite3_open(path, &db) == SQLITE_OK ? SQLITE_OK : SQLITE_ERROR, "open");
  check(db, sqlite3_exec(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;", NULL, NULL, NULL), "pragmas");
  check(db, sqlite3_exec(db,
                         rowid ? "CREATE TABLE m (run INTEGER NOT NULL, name TEXT NOT NULL, step INTEGER NOT NULL, "
                                 "epoch INTEGER NOT NULL, stage INTEGER NOT NULL, value REAL NOT NULL)"
                               : "CREATE TABLE m (run INTEGER NOT NULL, name TEXT NOT NULL, step INTEGER NOT NULL, "
                                 "epoch INTEGER NOT NULL, stage INTEGER NOT NULL, value REAL NOT NULL, "
                                 "PRIMARY KEY (run, name, step)) WITHOUT ROWID",
                         NULL, NULL, NULL),
        "create");
  sqlite3_stmt *insert, *begin, *commit;
  check(db, sqlite3_prepare_v2(db, "INSERT INTO m VALUES (?1, ?2, ?3, ?4, ?5, ?6)", -1, &insert, NULL), "prepare");
  check(db, sqlite3_prepare_v2(db, "BEGIN", -1, &begin, NULL), "prepare");
  check(db, sqlite3_prepare_v2(db, "COMMIT", -1, &commit, NULL), "prepare");

  const double start = now();
  long long done = 0, step = 0;
  int in_tx = 0;
  while (done < rows) {
    step++;
    for (int r = 1; r <= runs && done < rows; r++) {
      for (int v = 0; v < values && done < rows; v++) {
        if (in_tx == 0) {
          check(db, sqlite3_step(begin), "begin");
          sqlite3_reset(begin);
        }
        sqlite3_bind_int64(insert, 1, r);
        sqlite3_bind_text(insert, 2, names[v], -1, SQLITE_STATIC);
        sqlite3_bind_int64(insert, 3, step);
        sqlite3_bind_int64(insert, 4, 1 + step / 430);
        sqlite3_bind_int64(insert, 5, 0);
        sqlite3_bind_double(insert, 6, 1.0 / (double)(step + v));
        check(db, sqlite3_step(insert), "insert");
        sqlite3_reset(insert);
        done++;
        if (++in_tx == tx) {
          check(db, sqlite3_step(commit), "commit");
          sqlite3_reset(commit);
          in_tx = 0;
        }
      }
    }
  }
  if (in_tx) {
    check(db, sqlite3_step(commit), "commit");
    sqlite3_reset(commit);
  }
  const double elapsed = now() - start;
  sqlite3_finalize(insert);
  sqlite3_finalize(begin);
  sqlite3_finalize(commit);
  sqlite3_close(db);
  unlink(path);
  unlink(wal);
  unlink(shm);
  printf("{\"rows\": %lld, \"seconds\": %.4f, \"rows_per_s\": %.1f, \"tx\": %d, \"runs\": %d, \"values\": %d, "
         "\"table\": \"%s\", \"sqlite\": \"%s\"}\n",
         rows, elapsed, rows / elapsed, tx, runs, values, rowid ? "rowid, no key" : "WITHOUT ROWID, key (run, name, step)",
         sqlite3_libversion());
  return 0;
}
