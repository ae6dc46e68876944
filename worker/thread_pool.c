/* thread_pool.c — see thread_pool.h. A generation counter under one mutex: the caller bumps
 * it and broadcasts, each helper thread runs its share and counts itself done, and the caller
 * waits for the count. Both wait on condition variables after a bounded spin: the machines
 * this runs on are shared (2 cores with other work), where a thread spinning for long takes
 * time a working one needs, but a step hands out dozens of runs (each layer's forward and
 * backward, the linear layers' packing and products), with serial work of tens to hundreds
 * of microseconds between them, and a futex wake-up under KVM costs about as much. Spinning
 * up to 2,000 pauses (49 µs on AMD family 26) before sleeping made the CNN step on 2 threads
 * 2.6% faster (alternated repetitions); 20,000 (0.49 ms) gave 6–7%, but keeps both cores
 * busy between a worker's runs, and with it an SQL query of test_sql, beside such a worker
 * under the suite's load, passed its 500 ms limit (once; alone it passed). */
#include "thread_pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  thread_pool_t *pool;
  int index;
  pthread_t thread;
} thread_pool_member_t;

struct thread_pool {
  int threads;
  int started; /* helper threads running (threads − 1 once created) */
  pthread_mutex_t mutex;
  pthread_cond_t work, done;
  unsigned long generation; /* bumped per run */
  unsigned long remaining;  /* helpers still on the current run */
  int stopping;
  thread_pool_task_t task;
  void *context;
  thread_pool_member_t *members; /* threads − 1 of them */
};

/* Waits a little (THREAD_POOL_SPIN pauses) while *word is `value` (or, with `until`, until
 * it is) before the caller sleeps on its condition; the fields the spins read are written
 * atomically, under the mutex as before. */
#define THREAD_POOL_SPIN 2000
static void thread_pool__spin(const unsigned long *word, unsigned long value, int until) {
  for (int i = 0; i < THREAD_POOL_SPIN && (__atomic_load_n(word, __ATOMIC_ACQUIRE) == value) != until; i++) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
}

static void *thread_pool__main(void *argument) {
  thread_pool_member_t *self = argument;
  thread_pool_t *pool = self->pool;
  unsigned long seen = 0;
  pthread_mutex_lock(&pool->mutex);
  for (;;) {
    if (pool->generation == seen && !pool->stopping) {
      pthread_mutex_unlock(&pool->mutex);
      thread_pool__spin(&pool->generation, seen, 0);
      pthread_mutex_lock(&pool->mutex);
    }
    while (!pool->stopping && pool->generation == seen) pthread_cond_wait(&pool->work, &pool->mutex);
    if (pool->stopping) break;
    seen = pool->generation;
    thread_pool_task_t task = pool->task;
    void *context = pool->context;
    pthread_mutex_unlock(&pool->mutex);
    task(context, self->index, pool->threads);
    pthread_mutex_lock(&pool->mutex);
    if (__atomic_sub_fetch(&pool->remaining, 1, __ATOMIC_RELEASE) == 0) pthread_cond_signal(&pool->done);
  }
  pthread_mutex_unlock(&pool->mutex);
  return NULL;
}

int thread_pool_create(thread_pool_t **out, int threads, char *error, size_t error_size) {
  *out = NULL;
  if (threads < 1 || threads > THREAD_POOL_MAX) {
    snprintf(error, error_size, "threads: expected 1–%d, not %d", THREAD_POOL_MAX, threads);
    return -EINVAL;
  }
  thread_pool_t *pool = calloc(1, sizeof *pool);
  if (!pool) goto no_memory;
  pool->threads = threads;
  pool->members = calloc((size_t)threads, sizeof *pool->members);
  if (!pool->members) {
    free(pool);
    goto no_memory;
  }
  pthread_mutex_init(&pool->mutex, NULL);
  pthread_cond_init(&pool->work, NULL);
  pthread_cond_init(&pool->done, NULL);
  for (int t = 1; t < threads; t++) {
    thread_pool_member_t *member = &pool->members[t - 1];
    member->pool = pool;
    member->index = t;
    int rc = pthread_create(&member->thread, NULL, thread_pool__main, member);
    if (rc != 0) {
      snprintf(error, error_size, "threads: cannot start thread %d of %d: %s", t + 1, threads,
               strerror(rc));
      thread_pool_free(pool);
      return -rc;
    }
    pool->started++;
  }
  *out = pool;
  return 0;

no_memory:
  snprintf(error, error_size, "threads: out of memory for a pool of %d", threads);
  return -ENOMEM;
}

void thread_pool_run(thread_pool_t *pool, thread_pool_task_t task, void *context) {
  if (!pool || pool->threads == 1) {
    task(context, 0, 1);
    return;
  }
  pthread_mutex_lock(&pool->mutex);
  pool->task = task;
  pool->context = context;
  __atomic_store_n(&pool->remaining, (unsigned long)pool->threads - 1, __ATOMIC_RELEASE);
  __atomic_store_n(&pool->generation, pool->generation + 1, __ATOMIC_RELEASE);
  pthread_cond_broadcast(&pool->work);
  pthread_mutex_unlock(&pool->mutex);
  task(context, 0, pool->threads);
  thread_pool__spin(&pool->remaining, 0, 1);
  pthread_mutex_lock(&pool->mutex);
  while (pool->remaining > 0) pthread_cond_wait(&pool->done, &pool->mutex);
  pthread_mutex_unlock(&pool->mutex);
}

int thread_pool_threads(const thread_pool_t *pool) { return pool ? pool->threads : 1; }

void thread_pool_free(thread_pool_t *pool) {
  if (!pool) return;
  pthread_mutex_lock(&pool->mutex);
  pool->stopping = 1;
  pthread_cond_broadcast(&pool->work);
  pthread_mutex_unlock(&pool->mutex);
  for (int t = 0; t < pool->started; t++) pthread_join(pool->members[t].thread, NULL);
  pthread_cond_destroy(&pool->work);
  pthread_cond_destroy(&pool->done);
  pthread_mutex_destroy(&pool->mutex);
  free(pool->members);
  free(pool);
}
