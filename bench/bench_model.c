/*
** bench_model.c: the workloads recorded with adtape, the GEMM floor, the epoch run.
*/
#define _GNU_SOURCE
#include "bench_model.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

/* A field of /proc/self/status in MB ("VmRSS", "VmHWM"), or -1 if it cannot be read. */
static double status_mb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kib = -1;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, field, n) && line[n] == ':')
            kib = strtod(line + n + 1, NULL);
    if (f)
        fclose(f);
    return kib < 0 ? -1 : kib / 1024.0;
}

/*
** The baseline of peak memory: resident memory now, after resetting the kernel's peak
** (VmHWM) to it by writing 5 to /proc/self/clear_refs. Without the reset a peak above
** the baseline would be measured against the highest RSS since exec, which hides the
** step's memory under whatever loading the library or importing torch once touched.
** torch_step.py measures the same way.
*/
double bench_rss_baseline_mb(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    int written = f && fputs("5", f) >= 0;
    if (f && fclose(f) != 0)
        written = 0;
    if (!written)
        fprintf(stderr, "bench_step: cannot reset the peak RSS (/proc/self/clear_refs); "
                        "peak_rss_mb is measured against the peak since start\n");
    return status_mb("VmRSS");
}

double bench_rss_peak_mb(void)
{
    return status_mb("VmHWM");
}

ad_status bench_model_init(bench_model *m, const workload *w, int fa, uint64_t seed)
{
    memset(m, 0, sizeof *m);
    m->w = w;
    m->fa = fa;
    m->lr = 0.01;
    ad_rng rng;
    ad_rng_seed(&rng, seed);
    ad_status rc = ad_params_new(&m->ps);
    for (int l = 0; rc == AD_OK && l < w->n_layers; l++) {
        const int64_t shape[2] = {w->widths[l + 1], w->widths[l]};
        rc = ad_tensor_new(AD_F32, 2, shape, &m->W[l]);
        rc = rc ? rc : ad_init_glorot_uniform(m->W[l], &rng);
        rc = rc ? rc : ad_params_add(m->ps, m->W[l], NULL);
        if (rc == AD_OK && fa) {
            rc = ad_tensor_new(AD_F32, 2, shape, &m->B[l]);
            rc = rc ? rc : ad_init_glorot_uniform(m->B[l], &rng);
        }
        if (rc == AD_OK && w->bias) {
            rc = ad_tensor_new(AD_F32, 1, shape, &m->b[l]);
            rc = rc ? rc : ad_params_add(m->ps, m->b[l], NULL);
        }
    }
    int64_t n_out = w->widths[w->n_layers];
    rc = rc ? rc : ad_tensor_new(AD_F32, 2, (int64_t[]){w->batch, w->widths[0]}, &m->x);
    rc = rc ? rc : ad_init_uniform(m->x, &rng, -1, 1);
    if (rc == AD_OK && w->loss == LOSS_MSE) {
        rc = ad_tensor_new(AD_F32, 2, (int64_t[]){w->batch, n_out}, &m->target);
        rc = rc ? rc : ad_init_uniform(m->target, &rng, -1, 1);
    } else if (rc == AD_OK) {
        rc = ad_tensor_new(AD_I32, 1, &w->batch, &m->target);
        for (int64_t i = 0; rc == AD_OK && i < w->batch; i++)
            ((int32_t *)m->target->data)[i] = (int32_t)(ad_rng_u64(&rng) % (uint64_t)n_out);
    }
    /* Before the gradient storage: PyTorch allocates its .grad tensors in the step. */
    m->baseline_rss_mb = bench_rss_baseline_mb();
    rc = rc ? rc : ad_grads_new(m->ps, &m->gs);
    rc = rc ? rc : ad_tape_new(&m->tape);
    /* The step reads no intermediate after the sweep, so it can let the sweep reuse
    ** their memory (bench_step --no-memory-saving turns it off again). */
    if (rc == AD_OK)
        ad_tape_set_memory_saving(m->tape, 1);
    return rc;
}

void bench_model_free(bench_model *m)
{
    for (int l = 0; l < BENCH_MAX_LAYERS; l++) {
        ad_tensor_free(m->W[l]);
        ad_tensor_free(m->b[l]);
        ad_tensor_free(m->B[l]);
    }
    ad_tensor_free(m->x);
    ad_tensor_free(m->target);
    ad_grads_free(m->gs);
    ad_params_free(m->ps);
    ad_tape_free(m->tape);
}

ad_var bench_model_record(ad_tape *t, void *user)
{
    bench_model *m = user;
    const workload *w = m->w;
    ad_var h = ad_use(t, m->x);
    for (int l = 0; l < w->n_layers; l++) {
        ad_var W = ad_use(t, m->W[l]);
        h = m->fa ? ad_dense_fa(t, W, h, ad_use(t, m->B[l])) : ad_matmul(t, h, W, 0, 1);
        bench_act act = l + 1 < w->n_layers ? w->act : ACT_NONE;
        /* Bias and activation as one op where both are there (bitwise the same step
        ** as ad_bias_add then ad_relu or ad_tanh; tests/test_bias_act.c). */
        if (w->bias && act == ACT_RELU)
            h = ad_bias_relu(t, h, ad_use(t, m->b[l]));
        else if (w->bias && act == ACT_TANH)
            h = ad_bias_tanh(t, h, ad_use(t, m->b[l]));
        else {
            if (w->bias)
                h = ad_bias_add(t, h, ad_use(t, m->b[l]));
            if (act == ACT_TANH)
                h = ad_tanh(t, h);
            else if (act == ACT_RELU)
                h = ad_relu(t, h);
        }
    }
    ad_var y = ad_use(t, m->target);
    return w->loss == LOSS_MSE ? ad_mse(t, h, y) : ad_softmax_cross_entropy(t, h, y);
}

/* p -= lr g for one parameter, as ad_descent_step computes it (saxpy). The sweep has
** run every pullback that reads p by the time its gradient is final, so p may change. */
static int update_when_ready(int index, const ad_tensor *param, const ad_tensor *grad,
                             void *user)
{
    const bench_model *m = user;
    ad_tensor *p = ad_params_at(m->ps, index);
    (void)param;
    cblas_saxpy((int)p->size, -(float)m->lr, grad->data, 1, p->data, 1);
    ad_tensor_touch(p);
    return 0;
}

void bench_model_fuse_update(bench_model *m)
{
    m->fused_update = 1;
    ad_grads_on_ready(m->gs, update_when_ready, m);
}

ad_status bench_model_step(bench_model *m)
{
    double loss;
    ad_status rc = ad_gradient(m->tape, m->ps, bench_model_record, m, m->gs, &loss);
    if (rc || m->fused_update)
        return rc;
    return ad_descent_step(m->ps, m->gs, m->lr);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median over reps of one sgemm with fresh-but-reused operands, in ms. */
static double time_gemm(const gemm_case *g, int reps, int warmup, float *a, float *b, float *c)
{
    double *ms = calloc((size_t)reps, sizeof *ms);
    int lda = g->ta ? g->M : g->K, ldb = g->tb ? g->K : g->N;
    for (int i = 0; i < warmup + reps; i++) {
        double t0 = now_ms();
        cblas_sgemm(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans,
                    g->tb ? CblasTrans : CblasNoTrans, g->M, g->N, g->K, 1.0f, a, lda, b, ldb,
                    0.0f, c, g->N);
        if (i >= warmup)
            ms[i - warmup] = now_ms() - t0;
    }
    qsort(ms, (size_t)reps, sizeof *ms, cmp_double);
    double med = ms[reps / 2];
    free(ms);
    return med;
}

/*
** The floor: forward Y = X W' (NoTrans, Trans) per layer, dW = dY' X (Trans, NoTrans)
** per layer, dX = dY W (NoTrans, NoTrans) for every layer but the first.
*/
int bench_floor_dense(gemm_case *cases, int n, int64_t batch, int64_t in, int64_t out,
                      int first)
{
    int B = (int)batch, i = (int)in, o = (int)out;
    cases[n++] = (gemm_case){"forward", 0, 1, B, o, i};
    cases[n++] = (gemm_case){"dW", 1, 0, o, i, B};
    if (!first)
        cases[n++] = (gemm_case){"dX", 0, 0, B, i, o};
    return n;
}

int bench_floor(const workload *w, int threads, int reps, int warmup)
{
    gemm_case cases[3 * BENCH_MAX_LAYERS];
    int n = 0;
    for (int l = 0; l < w->n_layers; l++)
        n = bench_floor_dense(cases, n, w->batch, w->widths[l], w->widths[l + 1], l == 0);
    return bench_floor_time(w->name, cases, n, threads, reps, warmup);
}

int bench_floor_time(const char *name, const gemm_case *cases, int n, int threads, int reps,
                     int warmup)
{
    size_t big = 0;
    for (int i = 0; i < n; i++) {
        size_t s[3] = {(size_t)cases[i].M * cases[i].K, (size_t)cases[i].K * cases[i].N,
                       (size_t)cases[i].M * cases[i].N};
        for (int k = 0; k < 3; k++)
            big = s[k] > big ? s[k] : big;
    }
    float *a = calloc(big, sizeof(float)), *b = calloc(big, sizeof(float));
    float *c = calloc(big, sizeof(float));
    if (!a || !b || !c)
        return fprintf(stderr, "bench_step: out of memory for the floor\n"), 1;
    for (size_t i = 0; i < big; i++)
        a[i] = b[i] = (float)((i % 17) * 0.01);
    double total = 0;
    printf("{\"contender\": \"floor\", \"workload\": \"%s\", \"threads\": %d, \"gemms\": [",
           name, threads);
    for (int i = 0; i < n; i++) {
        double ms = time_gemm(&cases[i], reps, warmup, a, b, c);
        total += ms;
        printf("%s{\"what\": \"%s\", \"M\": %d, \"N\": %d, \"K\": %d, \"ms\": %.6f}", i ? ", " : "",
               cases[i].what, cases[i].M, cases[i].N, cases[i].K, ms);
    }
    printf("], \"ms\": [%.6f], \"blas_core\": \"%s\"}\n", total, openblas_get_corename());
    free(a);
    free(b);
    free(c);
    return 0;
}

int bench_epoch(int threads)
{
    const char *d = "/usr/share/datasets/fashion-mnist/";
    char xi[256], yi[256];
    snprintf(xi, sizeof xi, "%strain-images-idx3-ubyte.gz", d);
    snprintf(yi, sizeof yi, "%strain-labels-idx1-ubyte.gz", d);
    ad_tensor *images, *labels;
    bench_model m;
    if (ad_idx_read_pair(xi, yi, 10, &images, &labels) ||
        bench_model_init(&m, &bench_workloads[1], 0, 1))
        return fprintf(stderr, "bench_step: %s\n", ad_last_error()), 1;
    int64_t batch = m.w->batch, steps = images->shape[0] / batch, dim = images->shape[1];
    double t0 = now_ms();
    for (int64_t s = 0; s < steps; s++) {
        memcpy(m.x->data, (float *)images->data + s * batch * dim,
               (size_t)(batch * dim) * sizeof(float));
        memcpy(m.target->data, (int32_t *)labels->data + s * batch,
               (size_t)batch * sizeof(int32_t));
        ad_tensor_touch(m.x);
        ad_tensor_touch(m.target);
        if (bench_model_step(&m))
            return fprintf(stderr, "bench_step: %s\n", ad_last_error()), 1;
    }
    double sec = (now_ms() - t0) / 1e3;
    printf("{\"contender\": \"adtape\", \"mode\": \"epoch\", \"threads\": %d, "
           "\"images_per_s\": %.1f, \"seconds\": %.4f}\n", threads,
           (double)(steps * batch) / sec, sec);
    bench_model_free(&m);
    ad_tensor_free(images);
    ad_tensor_free(labels);
    return 0;
}
