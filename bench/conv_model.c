/*
** conv_model.c: W5 and W6 recorded with adtape, their im2col floor, the W5 epoch.
*/
#define _GNU_SOURCE
#include "conv_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_model.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

/* A layer's weight shape: Cout x Cin x k x k for a conv, out x in for a linear one. */
typedef struct layer_shape {
    int ndim;
    int64_t shape[4];
    int64_t fan_in;
} layer_shape;

/* The spatial extent after conv l (and its pooling). */
static int64_t extent_after(const conv_workload *w, int l)
{
    int64_t e = w->image;
    for (int i = 0; i <= l; i++) {
        e = e - w->kernel + 1;
        if (w->pool_after[i])
            e /= 2;
    }
    return e;
}

static layer_shape shape_of(const conv_workload *w, int l)
{
    if (l < BENCH_CONV_LAYERS) {
        int64_t cin = l ? w->channels[l - 1] : w->in_channels, k = w->kernel;
        return (layer_shape){4, {w->channels[l], cin, k, k}, cin * k * k};
    }
    int f = l - BENCH_CONV_LAYERS;
    int64_t last = extent_after(w, BENCH_CONV_LAYERS - 1);
    int64_t in = f ? w->fc[f - 1] : w->channels[BENCH_CONV_LAYERS - 1] * last * last;
    return (layer_shape){2, {w->fc[f], in}, in};
}

ad_status conv_model_init(conv_model *m, const conv_workload *w, int fa, uint64_t seed)
{
    memset(m, 0, sizeof *m);
    m->w = w;
    m->fa = fa;
    ad_rng rng;
    ad_rng_seed(&rng, seed);
    ad_status rc = ad_params_new(&m->ps);
    for (int l = 0; rc == AD_OK && l < CONV_MODEL_PARAMS; l++) {
        layer_shape s = shape_of(w, l);
        double bound = 1.0 / sqrt((double)s.fan_in);
        rc = ad_tensor_new(AD_F32, s.ndim, s.shape, &m->W[l]);
        rc = rc ? rc : ad_init_uniform(m->W[l], &rng, -bound, bound);
        rc = rc ? rc : ad_params_add(m->ps, m->W[l], NULL);
        rc = rc ? rc : ad_tensor_new(AD_F32, 1, s.shape, &m->b[l]);
        rc = rc ? rc : ad_params_add(m->ps, m->b[l], NULL);
        if (rc == AD_OK && fa) {
            rc = ad_tensor_new(AD_F32, s.ndim, s.shape, &m->B[l]);
            rc = rc ? rc : ad_init_uniform(m->B[l], &rng, -bound, bound);
        }
    }
    const int64_t xs[4] = {w->batch, w->in_channels, w->image, w->image};
    rc = rc ? rc : ad_tensor_new(AD_F32, 4, xs, &m->x);
    rc = rc ? rc : ad_init_uniform(m->x, &rng, -1, 1);
    rc = rc ? rc : ad_tensor_new(AD_I32, 1, &w->batch, &m->labels);
    int64_t classes = w->fc[BENCH_FC_LAYERS - 1];
    for (int64_t i = 0; rc == AD_OK && i < w->batch; i++)
        ((int32_t *)m->labels->data)[i] = (int32_t)(ad_rng_u64(&rng) % (uint64_t)classes);
    /* Before gradients and optimiser state: PyTorch makes both inside its steps. */
    m->baseline_rss_mb = bench_rss_baseline_mb();
    ad_optim_config c = ad_optim_defaults(AD_OPT_MOMENTUM);
    c.lr = 0.01;
    c.momentum = 0.9;
    rc = rc ? rc : ad_grads_new(m->ps, &m->gs);
    rc = rc ? rc : ad_optim_new(m->ps, &c, &m->opt);
    rc = rc ? rc : ad_tape_new(&m->tape);
    if (rc == AD_OK)
        ad_tape_set_memory_saving(m->tape, 1); /* nothing is read after the sweep */
    return rc;
}

void conv_model_free(conv_model *m)
{
    for (int l = 0; l < CONV_MODEL_PARAMS; l++) {
        ad_tensor_free(m->W[l]);
        ad_tensor_free(m->b[l]);
        ad_tensor_free(m->B[l]);
    }
    ad_tensor_free(m->x);
    ad_tensor_free(m->labels);
    ad_optim_free(m->opt);
    ad_grads_free(m->gs);
    ad_params_free(m->ps);
    ad_tape_free(m->tape);
}

ad_var conv_model_record(ad_tape *t, void *user)
{
    conv_model *m = user;
    const conv_workload *w = m->w;
    const ad_pool2d_attrs pool = AD_POOL2D_ATTRS(2, 2);
    ad_var h = ad_use(t, m->x);
    for (int l = 0; l < BENCH_CONV_LAYERS; l++) {
        ad_var W = ad_use(t, m->W[l]), b = ad_use(t, m->b[l]);
        h = m->fa ? ad_conv2d_bias_fa(t, h, W, b, ad_use(t, m->B[l]), NULL)
                  : ad_conv2d_bias(t, h, W, b, NULL);
        h = ad_relu(t, h);
        if (w->pool_after[l])
            h = ad_max_pool2d(t, h, &pool);
    }
    h = ad_flatten(t, h);
    for (int l = BENCH_CONV_LAYERS; l < CONV_MODEL_PARAMS; l++) {
        ad_var W = ad_use(t, m->W[l]);
        h = m->fa ? ad_dense_fa(t, W, h, ad_use(t, m->B[l])) : ad_matmul(t, h, W, 0, 1);
        h = ad_bias_add(t, h, ad_use(t, m->b[l]));
    }
    return ad_softmax_cross_entropy(t, h, ad_use(t, m->labels));
}

ad_status conv_model_step(conv_model *m)
{
    double loss;
    ad_status rc = ad_gradient(m->tape, m->ps, conv_model_record, m, m->gs, &loss);
    return rc ? rc : ad_optim_step(m->opt, m->gs);
}

/*
** A conv layer over P = N Ho Wo output positions is, in im2col form, a dense layer of
** batch P, in = Cin k k and out = Cout (../shared/BENCHMARKING.md): forward, dW, and dX
** for every layer but the first. Then the linear layers on the batch.
*/
int conv_model_floor(const conv_workload *w, int threads, int reps, int warmup)
{
    gemm_case cases[3 * CONV_MODEL_PARAMS];
    int n = 0;
    for (int l = 0; l < BENCH_CONV_LAYERS; l++) {
        layer_shape s = shape_of(w, l);
        int64_t in_extent = l ? extent_after(w, l - 1) : w->image;
        int64_t out_extent = in_extent - w->kernel + 1;
        n = bench_floor_dense(cases, n, w->batch * out_extent * out_extent, s.fan_in,
                              s.shape[0], l == 0);
    }
    for (int l = BENCH_CONV_LAYERS; l < CONV_MODEL_PARAMS; l++) {
        layer_shape s = shape_of(w, l);
        n = bench_floor_dense(cases, n, w->batch, s.shape[1], s.shape[0], 0);
    }
    return bench_floor_time(w->name, cases, n, threads, reps, warmup);
}

/* images: count x (side * side) in [0, 1] -> count x 1 x out x out. */
static ad_status resize_bilinear(const ad_tensor *images, int64_t side, int64_t out,
                                 ad_tensor **resized)
{
    int64_t count = images->shape[0];
    ad_tensor small;
    ad_status rc = ad_tensor_init(&small, AD_F32, 4, (int64_t[]){count, 1, side, side},
                                  images->data);
    rc = rc ? rc : ad_tensor_new(AD_F32, 4, (int64_t[]){count, 1, out, out}, resized);
    return rc ? rc : ad_resize_bilinear(&small, *resized);
}

int conv_model_epoch(int threads)
{
    const char *d = "/usr/share/datasets/fashion-mnist/";
    char xi[256], yi[256];
    snprintf(xi, sizeof xi, "%strain-images-idx3-ubyte.gz", d);
    snprintf(yi, sizeof yi, "%strain-labels-idx1-ubyte.gz", d);
    ad_tensor *images, *labels, *resized = NULL;
    conv_model m;
    const conv_workload *w = &bench_conv_workloads[0];
    if (ad_idx_read_pair(xi, yi, 10, &images, &labels) ||
        resize_bilinear(images, 28, w->image, &resized) || conv_model_init(&m, w, 0, 1))
        return fprintf(stderr, "bench_step: %s\n", ad_last_error()), 1;
    int64_t batch = w->batch, steps = resized->shape[0] / batch, dim = w->image * w->image;
    double t0 = now_ms();
    for (int64_t s = 0; s < steps; s++) {
        memcpy(m.x->data, (float *)resized->data + s * batch * dim,
               (size_t)(batch * dim) * sizeof(float));
        memcpy(m.labels->data, (int32_t *)labels->data + s * batch,
               (size_t)batch * sizeof(int32_t));
        ad_tensor_touch(m.x);
        ad_tensor_touch(m.labels);
        if (conv_model_step(&m))
            return fprintf(stderr, "bench_step: %s\n", ad_last_error()), 1;
    }
    double sec = (now_ms() - t0) / 1e3;
    printf("{\"contender\": \"adtape\", \"mode\": \"epoch\", \"workload\": \"W5\", "
           "\"threads\": %d, \"images_per_s\": %.1f, \"seconds\": %.4f}\n", threads,
           (double)(steps * batch) / sec, sec);
    conv_model_free(&m);
    ad_tensor_free(images);
    ad_tensor_free(labels);
    ad_tensor_free(resized);
    return 0;
}
