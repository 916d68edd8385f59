/*
** gemm_timer.c: an LD_PRELOAD shim that times every cblas_sgemm call of a process and
** prints, at exit, the mean time of each distinct call shape to stderr. It shows which
** of a step's GEMMs run slower than the floor's (bench_step --mode floor prints each
** GEMM's median alone):
**
**   LD_PRELOAD=build/bench/libgemm_timer.so build/bench/bench_step --workload W3
**
** The table holds the first 32 shapes; later shapes are passed through untimed. Not
** thread-safe across callers: the benchmark calls BLAS from one thread.
*/
#define _GNU_SOURCE /* RTLD_NEXT */
#include <cblas.h>
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

typedef void (*sgemm_fn)(const enum CBLAS_ORDER, const enum CBLAS_TRANSPOSE,
                         const enum CBLAS_TRANSPOSE, const blasint, const blasint,
                         const blasint, const float, const float *, const blasint,
                         const float *, const blasint, const float, float *, const blasint);

typedef struct shape_time {
    int trans_a, trans_b, m, n, k;
    double ms;
    long calls;
} shape_time;

static shape_time shapes[32];
static int n_shapes;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

static shape_time *slot(int ta, int tb, int m, int n, int k)
{
    for (int i = 0; i < n_shapes; i++)
        if (shapes[i].trans_a == ta && shapes[i].trans_b == tb && shapes[i].m == m &&
            shapes[i].n == n && shapes[i].k == k)
            return &shapes[i];
    if (n_shapes == (int)(sizeof shapes / sizeof *shapes))
        return NULL;
    shapes[n_shapes] = (shape_time){ta, tb, m, n, k, 0.0, 0};
    return &shapes[n_shapes++];
}

void cblas_sgemm(const enum CBLAS_ORDER order, const enum CBLAS_TRANSPOSE ta,
                 const enum CBLAS_TRANSPOSE tb, const blasint m, const blasint n,
                 const blasint k, const float alpha, const float *a, const blasint lda,
                 const float *b, const blasint ldb, const float beta, float *c,
                 const blasint ldc)
{
    static sgemm_fn real;
    if (!real) {
        void *sym = dlsym(RTLD_NEXT, "cblas_sgemm");
        memcpy(&real, &sym, sizeof sym);
    }
    double t0 = now_ms();
    real(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    double ms = now_ms() - t0;
    shape_time *s = slot(ta == CblasTrans, tb == CblasTrans, m, n, k);
    if (s) {
        s->ms += ms;
        s->calls++;
    }
}

__attribute__((destructor)) static void report(void)
{
    for (int i = 0; i < n_shapes; i++)
        fprintf(stderr, "sgemm trans_a=%d trans_b=%d M=%d N=%d K=%d: %.4f ms mean over %ld\n",
                shapes[i].trans_a, shapes[i].trans_b, shapes[i].m, shapes[i].n, shapes[i].k,
                shapes[i].ms / (double)shapes[i].calls, shapes[i].calls);
}
