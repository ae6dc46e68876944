/* bench_emit.c — a synthetic mapsage-worker for the ingestion, latency and soak benchmarks.
 *
 * mapsaged spawns it as its --worker-bin like a real worker (config on stdin, arguments
 * ignored) and it speaks the worker protocol (common/event.h): a `started` event, metric
 * events with steps 1, 2, …, then `finished` (succeeded) with the number of steps in its
 * summary, so the benchmark can check that every emitted step was stored and streamed. It
 * trains nothing. Settings come from the environment mapsaged passes on:
 *
 *   BENCH_EMIT_STEPS    stop after this many steps (0: no limit; default 0)
 *   BENCH_EMIT_SECONDS  stop after this long (0: no limit; default 10)
 *   BENCH_EMIT_RATE     metric events per second (0: as fast as the pipe takes them)
 *   BENCH_EMIT_VALUES   values per metric event, 1–8 (default 4): points = steps × values
 *   BENCH_EMIT_STAMP    1: the first value is "bench/t_ms", the CLOCK_MONOTONIC time the
 *                       event was written, in milliseconds since BENCH_T0 (seconds on the
 *                       same clock; relative, so that the 9 digits the daemon's streams
 *                       keep still resolve microseconds). Clients on this machine compare
 *                       it to their own clock: the worker → client latency
 *   BENCH_EMIT_GO       wait until this file exists before the first step (so that every
 *                       client is connected before anything is emitted)
 *
 * Paced (a rate), every event is flushed as written; flat out, stdio writes 64 KiB blocks,
 * as a worker that emits faster than the pipe drains would. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EMIT_MAX_VALUES 8

static const char *const emit_names[EMIT_MAX_VALUES] = {
    "loss/total", "loss/task", "loss/distill", "loss/feature", "lr", "grad_norm/total", "agreement", "temperature"};

static double emit_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double emit_env(const char *name, double fallback) {
  const char *text = getenv(name);
  return text && text[0] ? atof(text) : fallback;
}

int main(void) {
  /* The config: read to the end (mapsaged closes the pipe after writing it). */
  char discard[65536];
  while (fread(discard, 1, sizeof discard, stdin) > 0) {
  }

  const long long max_steps = (long long)emit_env("BENCH_EMIT_STEPS", 0);
  const double max_seconds = emit_env("BENCH_EMIT_SECONDS", 10);
  const double rate = emit_env("BENCH_EMIT_RATE", 0);
  int n_values = (int)emit_env("BENCH_EMIT_VALUES", 4);
  const int stamp = (int)emit_env("BENCH_EMIT_STAMP", 0);
  const double t0 = emit_env("BENCH_T0", 0);
  const char *go = getenv("BENCH_EMIT_GO");
  if (n_values < 1) n_values = 1;
  if (n_values > EMIT_MAX_VALUES) n_values = EMIT_MAX_VALUES;

  static char out_buffer[65536];
  setvbuf(stdout, out_buffer, _IOFBF, sizeof out_buffer);
  printf("{\"event\":\"started\",\"pid\":%d,\"host\":\"bench\",\"threads\":1,\"version\":\"bench_emit\","
         "\"params\":{\"total\":0},\"dataset\":{\"train\":0,\"val\":0,\"test\":0}}\n",
         (int)getpid());
  fflush(stdout);

  if (go && go[0]) {
    const double deadline = emit_now() + 120;
    while (access(go, F_OK) != 0 && emit_now() < deadline) usleep(1000);
  }

  const double start = emit_now();
  long long step = 0;
  for (;;) {
    double now = emit_now();
    if (max_steps > 0 && step >= max_steps) break;
    if (max_seconds > 0 && now - start >= max_seconds) break;
    if (rate > 0) { /* paced: step k is due at start + k / rate */
      double due = start + (double)step / rate;
      if (due > now) {
        struct timespec pause = {.tv_sec = (time_t)(due - now), .tv_nsec = (long)((due - now - (time_t)(due - now)) * 1e9)};
        nanosleep(&pause, NULL);
      }
    }
    step++;
    printf("{\"event\":\"metric\",\"step\":%lld,\"epoch\":1,\"stage\":0,\"values\":{", step);
    for (int v = 0; v < n_values; v++) {
      if (v == 0 && stamp)
        printf("\"bench/t_ms\":%.3f", (emit_now() - t0) * 1e3);
      else
        printf("%s\"%s\":%.6g", v ? "," : "", emit_names[v], 1.0 / (double)(step + v));
    }
    fputs("}}\n", stdout);
    if (rate > 0) fflush(stdout);
  }
  printf("{\"event\":\"finished\",\"status\":\"succeeded\",\"summary\":{\"steps\":%lld,\"points\":%lld,"
         "\"seconds\":%.3f}}\n",
         step, step * n_values, emit_now() - start);
  fflush(stdout);
  return 0;
}
