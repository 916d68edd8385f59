/*
** parallel.c: the threads of adtape's own loops (ad_set_num_threads).
**
** Why plain pthreads: OpenBLAS keeps its own pthread pool for the GEMMs, and an OpenMP
** pool beside it would spin on the cores OpenBLAS's workers need (BENCHMARKING.md).
** These workers sleep on a condition variable between regions, so they cost nothing
** while the GEMMs run. The loops handed to them are coarse (a layer's im2col, a
** pooling pass): a wake-up costs microseconds, so regions below a grain of work run
** on the calling thread.
**
** One region at a time: a second thread that asks while the pool is busy runs its
** region alone rather than wait, so tapes trained in several threads never block on
** one another here. Workers are started on first use and stopped and joined when the
** process exits (so leak checkers see nothing left); a child of fork() has none of
** them and starts its own.
*/
#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>

#include "ad.h"
#include "parallel.h"

enum { MAX_THREADS = 16 };

static _Atomic int requested = 1; /* ad_set_num_threads; 0: OpenBLAS's count */

static pthread_mutex_t region = PTHREAD_MUTEX_INITIALIZER; /* held by the caller */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;   /* guards what follows */
static pthread_cond_t go = PTHREAD_COND_INITIALIZER, done = PTHREAD_COND_INITIALIZER;
static int n_workers, stopping;
static pthread_t workers[MAX_THREADS];
static uint64_t generation;           /* bumped for each region */
static uint64_t born_at[MAX_THREADS]; /* the generation a worker starts after */
static struct {
    adi_part_fn fn;
    void *ctx;
    int64_t n;
    int parts, pending;
} job;

void ad_set_num_threads(int n)
{
    atomic_store(&requested, n < 0 ? 0 : n > MAX_THREADS ? MAX_THREADS : n);
}

int ad_get_num_threads(void)
{
    int n = atomic_load(&requested);
    if (n == 0)
        n = openblas_get_num_threads();
    return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : n;
}

static void part_bounds(int64_t n, int parts, int k, int64_t *lo, int64_t *hi)
{
    *lo = n * k / parts;
    *hi = n * (k + 1) / parts;
}

static void *worker_main(void *arg)
{
    int id = (int)(intptr_t)arg; /* 1 .. n_workers: its part of each region */
    pthread_mutex_lock(&lock);
    uint64_t seen = born_at[id]; /* created before its first region's bump */
    for (;;) {
        while (generation == seen && !stopping)
            pthread_cond_wait(&go, &lock);
        if (stopping)
            break;
        seen = generation;
        if (id >= job.parts)
            continue; /* a region with fewer parts than workers */
        adi_part_fn fn = job.fn;
        void *ctx = job.ctx;
        int64_t lo, hi;
        part_bounds(job.n, job.parts, id, &lo, &hi);
        pthread_mutex_unlock(&lock);
        fn(ctx, lo, hi);
        pthread_mutex_lock(&lock);
        if (--job.pending == 0)
            pthread_cond_signal(&done);
    }
    pthread_mutex_unlock(&lock);
    return NULL;
}

/* At exit: wake every worker to stop, and join them. */
__attribute__((destructor)) static void stop_workers(void)
{
    pthread_mutex_lock(&lock);
    stopping = 1;
    int n = n_workers;
    pthread_cond_broadcast(&go);
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < n; i++)
        pthread_join(workers[i], NULL);
}

/* In a child of fork() the workers are gone (only the forking thread is copied). */
static void forget_workers(void)
{
    pthread_mutex_init(&lock, NULL);
    pthread_mutex_init(&region, NULL);
    pthread_cond_init(&go, NULL);
    pthread_cond_init(&done, NULL);
    n_workers = 0;
}

/* Workers up to want - 1 (under lock); the parts available, at least 1. */
static int ensure_workers(int want)
{
    static int fork_handled;
    if (!fork_handled && n_workers < want - 1)
        fork_handled = pthread_atfork(NULL, NULL, forget_workers) == 0;
    while (fork_handled && n_workers < want - 1) {
        born_at[n_workers + 1] = generation;
        if (pthread_create(&workers[n_workers], NULL, worker_main,
                           (void *)(intptr_t)(n_workers + 1)))
            break; /* fewer threads, not an error */
        n_workers++;
    }
    return n_workers + 1 < want ? n_workers + 1 : want;
}

/* fn over [0, n) in `threads` parts (fewer when workers cannot be started). */
static void run_region(int64_t n, int threads, adi_part_fn fn, void *ctx)
{
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    if (threads < 2 || pthread_mutex_trylock(&region) != 0) {
        fn(ctx, 0, n);
        return;
    }
    pthread_mutex_lock(&lock);
    int parts = ensure_workers(threads);
    if (parts > 1) {
        job.fn = fn, job.ctx = ctx, job.n = n, job.parts = parts, job.pending = parts - 1;
        generation++;
        pthread_cond_broadcast(&go);
    }
    pthread_mutex_unlock(&lock);
    int64_t lo, hi;
    part_bounds(n, parts, 0, &lo, &hi);
    fn(ctx, lo, hi);
    pthread_mutex_lock(&lock);
    while (parts > 1 && job.pending > 0)
        pthread_cond_wait(&done, &lock);
    pthread_mutex_unlock(&lock);
    pthread_mutex_unlock(&region);
}

void adi_parallel_for(int64_t n, int64_t grain, adi_part_fn fn, void *ctx)
{
    int threads = ad_get_num_threads();
    if (grain < 1)
        grain = 1;
    if (n / grain < threads)
        threads = (int)(n / grain);
    run_region(n, threads, fn, ctx);
}

void adi_parallel_parts(int parts, adi_part_fn fn, void *ctx)
{
    run_region(parts, parts, fn, ctx);
}
