/* thread_pool.h — a small persistent pool of threads for the training step's per-example
 * loops (worker/nn.c's convolutions). Created with a model (nn_model_set_threads), it starts
 * its threads once; a step hands them work with thread_pool_run, which neither creates a
 * thread nor allocates. The caller's thread takes part as thread 0, so a pool of one thread
 * is no thread at all: thread_pool_run just calls the task. */
#ifndef MAPSAGE_THREAD_POOL_H
#define MAPSAGE_THREAD_POOL_H

#include <stddef.h>

/* One share of a task: thread is in [0, threads). */
typedef void (*thread_pool_task_t)(void *context, int thread, int threads);

/* Thread t of T takes items [n·t/T, n·(t+1)/T) of n: contiguous, as even as they come, and
 * the same split every time, so which thread handles which item never changes at a fixed
 * thread count (what keeps a threaded step bit-identical run to run). */
static inline void thread_pool_share(int n, int thread, int threads, int *first, int *end) {
  *first = (int)((long long)n * thread / threads);
  *end = (int)((long long)n * (thread + 1) / threads);
}

typedef struct thread_pool thread_pool_t;

/* Starts threads − 1 threads (threads in 1..THREAD_POOL_MAX): 0, -EINVAL (with the reason
 * in error), or -ENOMEM / -errno from pthread_create. On failure *pool is NULL. */
#define THREAD_POOL_MAX 256
int thread_pool_create(thread_pool_t **pool, int threads, char *error, size_t error_size);
/* Runs task(context, t, threads) once on each thread t and returns when every share is done.
 * Not reentrant: one run at a time per pool (the model's step is single-threaded above it). */
void thread_pool_run(thread_pool_t *pool, thread_pool_task_t task, void *context);
int thread_pool_threads(const thread_pool_t *pool);
/* Stops and joins the threads; NULL does nothing. */
void thread_pool_free(thread_pool_t *pool);

#endif
