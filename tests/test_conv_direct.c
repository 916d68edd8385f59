/*
** test_conv_direct.c: conv2d's direct path (src/ops/conv_direct.c) and its GEMMs on x
** for kernels over the whole image, against the forced im2col path and against a
** naive loop written here, in float32: forward values (with and without bias) and all
** gradients through the tape, over shapes at its limits (padding 0, 1 and 2,
** non-square kernels, widths that are not a multiple of 8, batch 1, one input channel,
** 1 and 16 output channels, exactly 160 taps); dW under beta 0
** and beta 1 (a weight used twice); the same bits at 1 and 2 threads; and which
** geometries take which path. The paths sum in different orders, so they agree to
** float32 rounding, not bitwise.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/conv_internal.h"
#include "support.h"

typedef struct dcase {
    int64_t n, c, h, w, co, kh, kw;
    int ph, pw;
    int path; /* the path AUTO takes: 0 for ADI_CONV_DIRECT */
} dcase;

static const dcase cases[] = {
    {2, 1, 32, 32, 6, 5, 5, 0, 0, 0},   /* LeNet's first layer, smaller batch */
    {3, 6, 14, 14, 16, 5, 5, 0, 0, 0},  /* LeNet's second layer */
    {2, 3, 9, 7, 4, 3, 5, 1, 2, 0},     /* non-square kernel, width 7, padding 1 and 2 */
    {1, 2, 6, 13, 1, 3, 3, 2, 2, 0},    /* batch 1, one output channel, width 13 */
    {2, 1, 5, 29, 16, 2, 3, 1, 0, 0},   /* one input channel, 16 outputs, width 29 */
    {2, 10, 8, 11, 5, 4, 4, 1, 1, 0},   /* exactly 160 taps */
    {2, 4, 7, 7, 9, 1, 1, 0, 0, 0},     /* 1x1 kernel, 9 outputs */
    {1, 1, 2, 2, 3, 3, 3, 2, 2, 0},     /* padding larger than the image */
    {5, 2, 3, 17, 12, 3, 2, 0, 1, 0},   /* short images, 12 outputs */
    /* Kernels over the whole image: GEMMs on x as it is (LeNet's third layer) */
    {3, 16, 5, 5, 20, 5, 5, 0, 0, ADI_CONV_DENSE},
    {2, 3, 4, 2, 7, 4, 2, 0, 0, ADI_CONV_DENSE},
};
#define N_CASES ((int)(sizeof cases / sizeof cases[0]))

static ad_conv2d_attrs attrs_of(const dcase *k)
{
    ad_conv2d_attrs at = AD_CONV2D_ATTRS_DEFAULT;
    at.pad_h = k->ph, at.pad_w = k->pw;
    return at;
}

static int64_t ho_of(const dcase *k) { return k->h + 2 * k->ph - k->kh + 1; }
static int64_t wo_of(const dcase *k) { return k->w + 2 * k->pw - k->kw + 1; }

/* The tensors of one case: two inputs x1, x2 and two output weights g1, g2, so that
** a second use of w makes its pullback add under beta 1. */
typedef struct dio {
    ad_tensor *x1, *x2, *w, *b, *g1, *g2;
} dio;

static dio make_io(const dcase *k, uint64_t *rng)
{
    dio io;
    const int64_t *ys = TS_SHAPE(k->n, k->co, ho_of(k), wo_of(k));
    io.x1 = ts_tensor(AD_F32, 4, TS_SHAPE(k->n, k->c, k->h, k->w));
    io.x2 = ts_tensor(AD_F32, 4, TS_SHAPE(k->n, k->c, k->h, k->w));
    io.w = ts_tensor(AD_F32, 4, TS_SHAPE(k->co, k->c, k->kh, k->kw));
    io.b = ts_tensor(AD_F32, 1, TS_SHAPE(k->co));
    io.g1 = ts_tensor(AD_F32, 4, ys);
    io.g2 = ts_tensor(AD_F32, 4, ys);
    ad_tensor *all[] = {io.x1, io.x2, io.w, io.b, io.g1, io.g2};
    for (int i = 0; i < 6; i++)
        ts_fill_uniform(all[i], rng, -1, 1);
    return io;
}

static void free_io(dio *io)
{
    ad_tensor *all[] = {io->x1, io->x2, io->w, io->b, io->g1, io->g2};
    for (int i = 0; i < 6; i++)
        ad_tensor_free(all[i]);
}

/* What one run gives: y1, and the gradients of x1, w and b (clones, owned). */
typedef struct dout {
    ad_tensor *y, *dx, *dw, *db;
} dout;

static void free_out(dout *o)
{
    ad_tensor_free(o->y), ad_tensor_free(o->dx), ad_tensor_free(o->dw);
    ad_tensor_free(o->db);
}

/* loss = sum(g1 .* conv(x1, w) [+ b]) (+ sum(g2 .* conv(x2, w) [+ b]) when twice),
** on the given path. */
static dout run(const dcase *k, const dio *io, int path, bool bias, bool twice)
{
    ad_conv2d_attrs at = attrs_of(k);
    ad_params *ps;
    ad_grads *gs;
    ad_tape *t;
    adi_conv_set_path(path);
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    cr_assert_eq(ad_params_add(ps, io->x1, NULL), AD_OK);
    cr_assert_eq(ad_params_add(ps, io->w, NULL), AD_OK);
    cr_assert_eq(ad_params_add(ps, io->b, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(ps, &gs), AD_OK);
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ad_var w = ad_use(t, io->w), b = ad_use(t, io->b);
    ad_var y = bias ? ad_conv2d_bias(t, ad_use(t, io->x1), w, b, &at)
                    : ad_conv2d(t, ad_use(t, io->x1), w, &at);
    ad_var loss = ad_sum(t, ad_mul(t, y, ad_use(t, io->g1)));
    if (twice) {
        ad_var y2 = bias ? ad_conv2d_bias(t, ad_use(t, io->x2), w, b, &at)
                         : ad_conv2d(t, ad_use(t, io->x2), w, &at);
        loss = ad_add(t, loss, ad_sum(t, ad_mul(t, y2, ad_use(t, io->g2))));
    }
    cr_assert_eq(ad_backward(t, loss, ps, gs), AD_OK, "%s", ad_last_error());
    dout o = {ts_clone(ad_value(t, y)), ts_clone(ad_grads_get(gs, io->x1)),
              ts_clone(ad_grads_get(gs, io->w)), NULL};
    if (bias)
        o.db = ts_clone(ad_grads_get(gs, io->b));
    ad_tape_free(t);
    ad_grads_free(gs);
    ad_params_free(ps);
    adi_conv_set_path(ADI_CONV_AUTO);
    return o;
}

/* y (f64, N x co x ho x wo) += conv(x, w), dx += conv'(g, w), dw += g x', by loops. */
static void naive(const dcase *k, const ad_tensor *x, const ad_tensor *w,
                  const ad_tensor *g, double *y, double *dx, double *dw)
{
    int64_t ho = ho_of(k), wo = wo_of(k);
    for (int64_t n = 0; n < k->n; n++)
        for (int64_t o = 0; o < k->co; o++)
            for (int64_t p = 0; p < ho; p++)
                for (int64_t q = 0; q < wo; q++) {
                    int64_t yi = ((n * k->co + o) * ho + p) * wo + q;
                    double gy = ts_get(g, yi);
                    for (int64_t c = 0; c < k->c; c++)
                        for (int64_t i = 0; i < k->kh; i++)
                            for (int64_t j = 0; j < k->kw; j++) {
                                int64_t ih = p - k->ph + i, iw = q - k->pw + j;
                                if (ih < 0 || ih >= k->h || iw < 0 || iw >= k->w)
                                    continue;
                                int64_t wi = ((o * k->c + c) * k->kh + i) * k->kw + j;
                                int64_t xi = ((n * k->c + c) * k->h + ih) * k->w + iw;
                                y[yi] += ts_get(x, xi) * ts_get(w, wi);
                                dx[xi] += gy * ts_get(w, wi);
                                dw[wi] += gy * ts_get(x, xi);
                            }
                }
}

/* Fails unless a and b agree within tol * max(1, |b|) everywhere. */
static void expect_close(const ad_tensor *a, const ad_tensor *b, double tol, const char *what,
                         int ci)
{
    cr_assert_eq(a->size, b->size);
    for (int64_t i = 0; i < a->size; i++) {
        double u = ts_get(a, i), v = ts_get(b, i);
        cr_assert(fabs(u - v) <= tol * fmax(1.0, fabs(v)), "case %d %s: element %lld: "
                  "direct %.9g, im2col %.9g", ci, what, (long long)i, u, v);
    }
}

static void compare_case(int ci, bool bias, bool twice)
{
    const dcase *k = &cases[ci];
    uint64_t rng = 100 + (uint64_t)ci;
    dio io = make_io(k, &rng);
    cr_assert_eq(adi_conv_path(AD_F32, k->co, 1, &(adi_conv_geometry){
                     .n = k->n, .c = k->c, .h = k->h, .w = k->w, .kh = k->kh, .kw = k->kw,
                     .ho = ho_of(k), .wo = wo_of(k), .sh = 1, .sw = 1, .ph = k->ph,
                     .pw = k->pw, .dh = 1, .dw = 1}),
                 k->path ? k->path : ADI_CONV_DIRECT, "case %d takes another path", ci);
    dout d = run(k, &io, ADI_CONV_DIRECT, bias, twice);
    dout m = run(k, &io, ADI_CONV_IM2COL, bias, twice);
    /* Sums of up to 160 * 2 * 29 * 5 products of [-1, 1) values, in float. */
    const double tol = 2e-5;
    expect_close(d.y, m.y, tol, "y", ci);
    expect_close(d.dx, m.dx, tol, "dx", ci);
    expect_close(d.dw, m.dw, tol, "dw", ci);
    if (bias)
        expect_close(d.db, m.db, tol, "db", ci);
    double *y = calloc((size_t)d.y->size, sizeof *y);
    double *dx = calloc((size_t)io.x1->size, sizeof *dx);
    double *dw = calloc((size_t)io.w->size, sizeof *dw);
    double *scratch = calloc((size_t)io.x1->size, sizeof *scratch);
    double *y2 = calloc((size_t)d.y->size, sizeof *y2);
    cr_assert(y && dx && dw && scratch && y2);
    naive(k, io.x1, io.w, io.g1, y, dx, dw);
    if (twice) /* dW adds x2's part under beta 1 */
        naive(k, io.x2, io.w, io.g2, y2, scratch, dw);
    for (int64_t i = 0; bias && i < d.y->size; i++)
        y[i] += ts_get(io.b, i / (ho_of(k) * wo_of(k)) % k->co);
    char what[96];
    snprintf(what, sizeof what, "case %d%s%s: direct y against the naive loop", ci,
             bias ? " bias" : "", twice ? " twice" : "");
    ts_assert_near(d.y, y, 1e-4, what);
    ts_assert_near(d.dx, dx, 1e-4, "direct dx against the naive loop");
    ts_assert_near(d.dw, dw, 1e-4, "direct dw against the naive loop");
    free(y), free(dx), free(dw), free(scratch), free(y2);
    free_out(&d), free_out(&m);
    free_io(&io);
}

Test(conv_direct, forward_and_gradients_match_im2col_and_a_naive_loop)
{
    for (int ci = 0; ci < N_CASES; ci++)
        for (int bias = 0; bias < 2; bias++)
            compare_case(ci, bias, false);
}

Test(conv_direct, dw_adds_under_beta_1_when_a_weight_is_used_twice)
{
    for (int ci = 0; ci < N_CASES; ci++)
        compare_case(ci, ci % 2, true);
}

Test(conv_direct, results_are_the_same_bits_at_one_and_two_threads)
{
    /* Large enough that the op splits over two threads. */
    const dcase big[] = {{16, 6, 14, 14, 16, 5, 5, 0, 0, 0}, {9, 1, 32, 32, 6, 5, 5, 2, 1, 0}};
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
        uint64_t rng = 7;
        dio io = make_io(&big[i], &rng);
        ad_set_num_threads(1);
        dout a = run(&big[i], &io, ADI_CONV_DIRECT, true, true);
        ad_set_num_threads(2);
        dout b = run(&big[i], &io, ADI_CONV_DIRECT, true, true);
        ad_set_num_threads(1);
        ad_tensor *pa[] = {a.y, a.dx, a.dw, a.db}, *pb[] = {b.y, b.dx, b.dw, b.db};
        for (int k = 0; k < 4; k++)
            cr_expect_eq(memcmp(pa[k]->data, pb[k]->data, (size_t)pa[k]->size * 4), 0,
                         "case %zu, output %d differs between 1 and 2 threads", i, k);
        free_out(&a), free_out(&b);
        free_io(&io);
    }
}

static adi_conv_geometry lenet2(void)
{
    return (adi_conv_geometry){.n = 64, .c = 6, .h = 14, .w = 14, .kh = 5, .kw = 5,
                               .ho = 10, .wo = 10, .sh = 1, .sw = 1, .ph = 0, .pw = 0,
                               .dh = 1, .dw = 1};
}

Test(conv_direct, only_small_float32_stride_1_layers_take_the_direct_path)
{
    adi_conv_geometry g = lenet2();
    cr_expect_eq(adi_conv_path(AD_F32, 16, 1, &g), ADI_CONV_DIRECT);
    cr_expect_eq(adi_conv_path(AD_F32, 1, 1, &g), ADI_CONV_DIRECT);
    cr_expect_eq(adi_conv_path(AD_F32, 17, 1, &g), ADI_CONV_IM2COL, "17 outputs");
    cr_expect_eq(adi_conv_path(AD_F64, 16, 1, &g), ADI_CONV_IM2COL, "float64");
    cr_expect_eq(adi_conv_path(AD_F32, 16, 2, &g), ADI_CONV_IM2COL, "two groups");
    adi_conv_geometry s = g;
    s.sw = 2, s.wo = 5;
    cr_expect_eq(adi_conv_path(AD_F32, 16, 1, &s), ADI_CONV_IM2COL, "stride 2");
    s = g;
    s.dh = 2, s.ho = 6;
    cr_expect_eq(adi_conv_path(AD_F32, 16, 1, &s), ADI_CONV_IM2COL, "dilation 2");
    s = g;
    s.c = 7, s.kh = 5, s.kw = 5; /* 175 taps */
    cr_expect_eq(adi_conv_path(AD_F32, 16, 1, &s), ADI_CONV_IM2COL, "175 taps");
    s.c = 10, s.kh = 4, s.kw = 4, s.ho = s.wo = 11; /* 160 taps */
    cr_expect_eq(adi_conv_path(AD_F32, 16, 1, &s), ADI_CONV_DIRECT, "160 taps");
    s = g;
    s.h = s.w = 5, s.ho = s.wo = 1;
    cr_expect_eq(adi_conv_path(AD_F64, 120, 1, &s), ADI_CONV_DENSE, "whole image");
    cr_expect_eq(adi_conv_path(AD_F32, 120, 2, &s), ADI_CONV_IM2COL, "whole, groups 2");
    s.ph = 1, s.h = s.w = 3;
    cr_expect_eq(adi_conv_path(AD_F32, 120, 1, &s), ADI_CONV_IM2COL, "whole, padded");
    adi_conv_set_path(ADI_CONV_IM2COL);
    cr_expect_eq(adi_conv_path(AD_F32, 16, 1, &g), ADI_CONV_IM2COL, "forced im2col");
    adi_conv_set_path(ADI_CONV_DIRECT);
    cr_expect_eq(adi_conv_path(AD_F32, 17, 1, &g), ADI_CONV_IM2COL, "forced, but 17");
    adi_conv_set_path(ADI_CONV_AUTO);
}

Test(conv_direct, layers_outside_the_limits_still_match_the_naive_loop_when_forced)
{
    /* Cout 17 under the DIRECT switch: im2col does it, as in AUTO. */
    const dcase k = {2, 2, 6, 6, 17, 3, 3, 1, 1, 0};
    uint64_t rng = 3;
    dio io = make_io(&k, &rng);
    dout d = run(&k, &io, ADI_CONV_DIRECT, true, false);
    dout m = run(&k, &io, ADI_CONV_IM2COL, true, false);
    ad_tensor *pa[] = {d.y, d.dx, d.dw, d.db}, *pb[] = {m.y, m.dx, m.dw, m.db};
    for (int i = 0; i < 4; i++)
        cr_expect_eq(memcmp(pa[i]->data, pb[i]->data, (size_t)pa[i]->size * 4), 0,
                     "output %d: not the im2col path's bits", i);
    free_out(&d), free_out(&m);
    free_io(&io);
}
