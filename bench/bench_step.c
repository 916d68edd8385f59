/*
** bench_step.c: one contender of bench/run in its own process: adtape's full training
** step (forward, loss, backward, SGD update through the ordinary gradient set), or the
** GEMM floor (each GEMM the step needs, timed alone). Prints one JSON line.
**
**   bench_step --workload W2 --rule fa --threads 1 --mode adtape --reps 50 --warmup 10
**   bench_step --mode floor --workload W2 --rule bp --threads 2
**   bench_step --epoch --threads 1      (one epoch of W2 on Fashion-MNIST, images/s)
**   bench_step --epoch --workload W5    (one epoch of LeNet on it resized to 32 x 32)
**   bench_step --workload W3 --no-memory-saving   (the sweep reuses no memory)
**   bench_step --workload W6 --threads 2 --own-threads 1   (adtape's loops on one thread)
**
** Heap allocations are counted by bench/malloc_count.c when the process runs with it
** in LD_PRELOAD; peak RSS is reported above the baseline taken before the gradient storage and the
** first step (bench_rss_baseline_mb).
*/
#define _GNU_SOURCE /* dlsym(RTLD_DEFAULT), clock_gettime */
#include <cblas.h>
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ad.h"
#include "bench_model.h"
#include "conv_model.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

static uint64_t (*malloc_count)(void);

static uint64_t allocs_now(void)
{
    return malloc_count ? malloc_count() : 0;
}

typedef struct args {
    const workload *w;
    const conv_workload *cw; /* W5, W6: set instead of w */
    int fa, fused, threads, reps, warmup, floor, epoch, no_saving;
    int own_threads; /* ad_set_num_threads: -1 leaves the default (OpenBLAS's count) */
} args;

static void usage(void)
{
    fprintf(stderr, "usage: bench_step [--workload W1..W6] [--rule bp|fa|bp-fused|fa-fused] "
                    "[--threads N] [--reps N] [--warmup N] [--mode adtape|floor] [--epoch] "
                    "[--no-memory-saving] [--own-threads N]\n");
    exit(2);
}

static args parse(int argc, char **argv)
{
    args a = {.w = &bench_workloads[0], .threads = 1, .reps = 30, .warmup = 5,
              .own_threads = -1};
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(k, "--epoch") || !strcmp(k, "--no-memory-saving")) {
            a.epoch |= !strcmp(k, "--epoch");
            a.no_saving |= !strcmp(k, "--no-memory-saving");
            continue;
        }
        if (!v)
            usage();
        i++;
        if (!strcmp(k, "--workload")) {
            a.w = NULL;
            for (size_t j = 0; j < sizeof bench_workloads / sizeof *bench_workloads; j++)
                if (!strcmp(v, bench_workloads[j].name))
                    a.w = &bench_workloads[j];
            for (size_t j = 0; j < sizeof bench_conv_workloads / sizeof *bench_conv_workloads;
                 j++)
                if (!strcmp(v, bench_conv_workloads[j].name))
                    a.cw = &bench_conv_workloads[j];
            if (!a.w && !a.cw)
                usage();
        } else if (!strcmp(k, "--rule")) {
            /* bp, fa, or either with "-fused": SGD from the gradient-ready callback */
            a.fa = !strncmp(v, "fa", 2);
            a.fused = strstr(v, "-fused") != NULL;
        } else if (!strcmp(k, "--threads")) {
            a.threads = atoi(v);
        } else if (!strcmp(k, "--own-threads")) {
            a.own_threads = atoi(v);
        } else if (!strcmp(k, "--reps")) {
            a.reps = atoi(v);
        } else if (!strcmp(k, "--warmup")) {
            a.warmup = atoi(v);
        } else if (!strcmp(k, "--mode")) {
            a.floor = !strcmp(v, "floor");
        } else {
            usage();
        }
    }
    if (a.threads < 1 || a.reps < 1 || a.warmup < 0 || (a.cw && a.fused))
        usage();
    return a;
}

static void print_ms(const double *ms, int n)
{
    printf("\"ms\": [");
    for (int i = 0; i < n; i++)
        printf("%s%.6f", i ? ", " : "", ms[i]);
    printf("]");
}

/* A model behind one step function, so the MLP and conv workloads share the timing. */
typedef struct stepper {
    void *model;
    ad_status (*step)(void *model);
    double baseline_rss_mb;
} stepper;

static ad_status mlp_step(void *m)
{
    return bench_model_step(m);
}

static ad_status conv_step(void *m)
{
    return conv_model_step(m);
}

static int time_steps(const args *a, const stepper *s)
{
    double *ms = calloc((size_t)a->reps, sizeof *ms);
    if (!ms)
        return fprintf(stderr, "bench_step: out of memory\n"), 1;
    for (int i = 0; i < a->warmup; i++)
        if (s->step(s->model) != AD_OK)
            return fprintf(stderr, "bench_step: %s\n", ad_last_error()), 1;
    uint64_t base_allocs = allocs_now();
    for (int i = 0; i < a->reps; i++) {
        double t0 = now_ms();
        if (s->step(s->model) != AD_OK)
            return fprintf(stderr, "bench_step: %s\n", ad_last_error()), 1;
        ms[i] = now_ms() - t0;
    }
    uint64_t allocs = allocs_now() - base_allocs;
    printf("{\"contender\": \"adtape\", \"workload\": \"%s\", \"rule\": \"%s\", "
           "\"threads\": %d, ", a->cw ? a->cw->name : a->w->name,
           a->fa ? (a->fused ? "fa-fused" : "fa") : (a->fused ? "bp-fused" : "bp"), a->threads);
    print_ms(ms, a->reps);
    char count[32] = "null";
    if (malloc_count)
        snprintf(count, sizeof count, "%.3f", (double)allocs / a->reps);
    printf(", \"allocs_per_step\": %s, \"peak_rss_mb\": %.3f, \"blas_core\": \"%s\", "
           "\"blas_config\": \"%s\"}\n", count, bench_rss_peak_mb() - s->baseline_rss_mb,
           openblas_get_corename(), openblas_get_config());
    free(ms);
    return 0;
}

static int run_adtape(const args *a)
{
    bench_model m;
    if (bench_model_init(&m, a->w, a->fa, 1) != AD_OK)
        return fprintf(stderr, "bench_step: %s\n", ad_last_error()), 1;
    if (a->fused)
        bench_model_fuse_update(&m);
    if (a->no_saving)
        ad_tape_set_memory_saving(m.tape, 0);
    int rc = time_steps(a, &(stepper){&m, mlp_step, m.baseline_rss_mb});
    bench_model_free(&m);
    return rc;
}

static int run_conv(const args *a)
{
    conv_model m;
    if (conv_model_init(&m, a->cw, a->fa, 1) != AD_OK)
        return fprintf(stderr, "bench_step: %s\n", ad_last_error()), 1;
    if (a->no_saving)
        ad_tape_set_memory_saving(m.tape, 0);
    int rc = time_steps(a, &(stepper){&m, conv_step, m.baseline_rss_mb});
    conv_model_free(&m);
    return rc;
}

int main(int argc, char **argv)
{
    args a = parse(argc, argv);
    openblas_set_num_threads(a.threads);
    if (a.own_threads >= 0)
        ad_set_num_threads(a.own_threads);
    void *sym = dlsym(RTLD_DEFAULT, "malloc_count_get");
    memcpy(&malloc_count, &sym, sizeof sym);
    if (a.epoch)
        return a.cw ? conv_model_epoch(a.threads) : bench_epoch(a.threads);
    if (a.cw)
        return a.floor ? conv_model_floor(a.cw, a.threads, a.reps, a.warmup) : run_conv(&a);
    return a.floor ? bench_floor(a.w, a.threads, a.reps, a.warmup) : run_adtape(&a);
}
