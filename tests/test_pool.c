/*
** test_pool.c: max_pool2d, avg_pool2d and global_avg_pool2d: float64 finite-difference
** checks of the three rules (ad_rule_check) over overlapping windows, padding,
** non-square kernels, odd sizes, batch 1 and one channel, max pool on inputs without
** ties; forward values and gradients through the tape against naive loops written
** here (padding as -inf or 0, never clipped windows), in f64 and f32; PyTorch's tie
** and NaN rules; and no heap allocation per step after the first, with memory saving
** off and on. What the rules declare, their errors and forward-only mode are in
** test_pool_errors.c.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

typedef struct pool_case {
    int64_t n, c, h, w;
    ad_pool2d_attrs at;
} pool_case;

static ad_pool2d_attrs pa(int kh, int kw, int sh, int sw, int ph, int pw)
{
    return (ad_pool2d_attrs){kh, kw, sh, sw, ph, pw};
}

/* Small shapes for finite differences (x at most a few hundred elements). */
static const pool_case *fd_cases(int *count)
{
    static pool_case c[9];
    c[0] = (pool_case){2, 3, 6, 6, AD_POOL2D_ATTRS(2, 2)};  /* the 2x2 stride-2 path */
    c[1] = (pool_case){2, 2, 7, 5, AD_POOL2D_ATTRS(2, 2)};  /* odd: last row, column left */
    c[2] = (pool_case){1, 1, 7, 5, pa(3, 3, 1, 1, 1, 1)};   /* stride 1, overlapping, pad */
    c[3] = (pool_case){2, 2, 7, 6, pa(3, 2, 2, 1, 1, 1)};   /* non-square, stride != kernel */
    c[4] = (pool_case){1, 2, 5, 7, pa(2, 3, 3, 2, 1, 0)};   /* odd, stride > kernel */
    c[5] = (pool_case){3, 1, 5, 5, pa(1, 1, 2, 2, 0, 0)};   /* 1x1 kernel */
    c[6] = (pool_case){1, 1, 3, 3, pa(3, 3, 1, 1, 1, 1)};   /* kernel of the whole image */
    c[7] = (pool_case){2, 1, 5, 5, pa(2, 2, 2, 2, 1, 1)};   /* 2x2 stride 2 padded */
    c[8] = (pool_case){1, 3, 4, 9, pa(4, 5, 1, 3, 2, 2)};   /* the largest padding */
    *count = 9;
    return c;
}

static int64_t out_extent(int64_t in, int k, int pad, int stride)
{
    return (in + 2 * pad - k) / stride + 1;
}

/* Distinct values, shuffled: 0.01 apart, so no window ties and finite differences of
** step 1e-5 never change a window's argmax. */
static void fill_distinct(ad_tensor *x, uint64_t *rng)
{
    int64_t n = x->size;
    for (int64_t i = 0; i < n; i++)
        ts_set(x, i, (double)(i - n / 2) * 0.01);
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(ts_next(rng) % (uint64_t)(i + 1));
        double a = ts_get(x, i);
        ts_set(x, i, ts_get(x, j));
        ts_set(x, j, a);
    }
    ad_tensor_touch(x);
}

static ad_tensor *case_input(ad_dtype dt, const pool_case *c, uint64_t *rng)
{
    ad_tensor *x = ts_tensor(dt, 4, TS_SHAPE(c->n, c->c, c->h, c->w));
    fill_distinct(x, rng);
    return x;
}

Test(pool, the_three_rules_pass_the_float64_check)
{
    int count;
    const pool_case *cs = fd_cases(&count);
    uint64_t rng = 5;
    ad_primal_fn fns[2] = {ad_op_max_pool2d, ad_op_avg_pool2d};
    const char *names[2] = {"ad_op_max_pool2d", "ad_op_avg_pool2d"};
    for (int k = 0; k < count; k++) {
        ad_tensor *x = case_input(AD_F64, &cs[k], &rng);
        for (int f = 0; f < 2; f++) {
            ad_check_options o = ad_check_defaults();
            o.attrs = &cs[k].at, o.attrs_size = sizeof cs[k].at;
            ad_check_report rep = {0};
            cr_assert_eq(ad_rule_check_as(fns[f], names[f], (const ad_tensor *const[]){x},
                                          1, &o, &rep), AD_OK, "case %d %s: %s", k,
                         names[f], ad_last_error());
            cr_expect_eq(rep.slots_checked, 1, "case %d %s", k, names[f]);
            cr_expect(rep.slot[0].passed & AD_CHECKED_ADDS, "case %d %s: beta 1", k,
                      names[f]);
            cr_expect(rep.slot[0].passed & AD_CHECKED_VALUES, "case %d %s", k, names[f]);
        }
        ad_check_report rep = {0};
        cr_assert_eq(ad_rule_check(ad_op_global_avg_pool2d,
                                   ((const ad_tensor *const[]){x}), 1, NULL, &rep), AD_OK,
                     "case %d global: %s", k, ad_last_error());
        cr_expect_eq(rep.slots_checked, 1, "case %d global", k);
        ad_tensor_free(x);
    }
}

/* x's element (pl, ih, iw) of plane pl, or `pad` outside the plane. */
static double x_at(const ad_tensor *x, int64_t pl, int64_t ih, int64_t iw, double pad)
{
    int64_t H = x->shape[2], W = x->shape[3];
    if (ih < 0 || ih >= H || iw < 0 || iw >= W)
        return pad;
    return ts_get(x, (pl * H + ih) * W + iw);
}

/*
** The naive pools and, for L = sum(G .* y), their gradients: every window position
** (i, j) visited, padding read as -inf (max) or 0 (avg); max takes the first maximum
** in row-major order (strictly greater) or a NaN.
*/
static void naive(int max, const pool_case *k, const ad_tensor *x, const ad_tensor *g,
                  double *y, double *dx)
{
    int64_t H = k->h, W = k->w, Ho = g->shape[2], Wo = g->shape[3];
    const ad_pool2d_attrs *a = &k->at;
    for (int64_t pl = 0; pl < k->n * k->c; pl++)
        for (int64_t p = 0; p < Ho; p++)
            for (int64_t q = 0; q < Wo; q++) {
                int64_t yi = (pl * Ho + p) * Wo + q, best = -1;
                double gy = ts_get(g, yi), m = -INFINITY, s = 0;
                for (int64_t i = 0; i < a->kernel_h; i++)
                    for (int64_t j = 0; j < a->kernel_w; j++) {
                        int64_t ih = p * a->stride_h - a->pad_h + i;
                        int64_t iw = q * a->stride_w - a->pad_w + j;
                        double v = x_at(x, pl, ih, iw, max ? -INFINITY : 0.0);
                        bool inside = ih >= 0 && ih < H && iw >= 0 && iw < W;
                        s += v;
                        if (inside && (best < 0 || v > m || isnan(v)))
                            m = v, best = (pl * H + ih) * W + iw;
                        if (!max && inside)
                            dx[(pl * H + ih) * W + iw] += gy / (a->kernel_h * a->kernel_w);
                    }
                if (max)
                    y[yi] = m, dx[best] += gy;
                else
                    y[yi] = s / (a->kernel_h * a->kernel_w);
            }
}

/* Values and the gradient of sum(G .* pool(x)) through the tape, against naive. */
static void tape_matches_naive(int max, ad_dtype dt, const pool_case *k, uint64_t *rng)
{
    ad_tensor *x = case_input(dt, k, rng);
    int64_t ho = out_extent(k->h, k->at.kernel_h, k->at.pad_h, k->at.stride_h);
    int64_t wo = out_extent(k->w, k->at.kernel_w, k->at.pad_w, k->at.stride_w);
    ad_tensor *g = ts_tensor(dt, 4, TS_SHAPE(k->n, k->c, ho, wo));
    ts_fill_uniform(g, rng, -1, 1);
    ad_params *ps;
    ad_grads *gs;
    ad_tape *t;
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    cr_assert_eq(ad_params_add(ps, x, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(ps, &gs), AD_OK);
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ad_var y = max ? ad_max_pool2d(t, ad_use(t, x), &k->at)
                   : ad_avg_pool2d(t, ad_use(t, x), &k->at);
    cr_assert(ad_var_ok(y), "%s", ad_tape_error(t));
    cr_assert_eq(ad_backward(t, ad_sum(t, ad_mul(t, y, ad_use(t, g))), ps, gs), AD_OK, "%s",
                 ad_last_error());
    double *want = calloc((size_t)g->size, sizeof *want);
    double *dx = calloc((size_t)x->size, sizeof *dx);
    cr_assert(want && dx);
    naive(max, k, x, g, want, dx);
    double tol = dt == AD_F32 ? 1e-6 : 1e-14;
    char what[96];
    snprintf(what, sizeof what, "%s %s %lldx%lldx%lldx%lld y", max ? "max" : "avg",
             ad_dtype_name(dt), (long long)k->n, (long long)k->c, (long long)k->h,
             (long long)k->w);
    ts_assert_near(ad_value(t, y), want, tol, what);
    ts_assert_near(ad_grads_get(gs, x), dx, tol, "dx");
    free(want), free(dx);
    ad_tape_free(t);
    ad_grads_free(gs);
    ad_params_free(ps);
    ad_tensor_free(g);
    ad_tensor_free(x);
}

Test(pool, max_and_avg_values_and_gradients_match_a_naive_loop_in_f64_and_f32)
{
    int count;
    const pool_case *cs = fd_cases(&count);
    const pool_case big[] = {
        {4, 6, 28, 28, AD_POOL2D_ATTRS(2, 2)}, /* LeNet's first pool */
        {3, 4, 13, 11, pa(3, 3, 2, 2, 1, 1)},
        {2, 3, 9, 9, pa(3, 3, 1, 1, 1, 1)},
    };
    uint64_t rng = 11;
    for (int d = 0; d < 2; d++)
        for (int max = 0; max < 2; max++) {
            for (int k = 0; k < count; k++)
                tape_matches_naive(max, d ? AD_F32 : AD_F64, &cs[k], &rng);
            for (size_t k = 0; k < sizeof big / sizeof big[0]; k++)
                tape_matches_naive(max, d ? AD_F32 : AD_F64, &big[k], &rng);
        }
}

Test(pool, global_average_is_the_plane_mean_and_spreads_dy_evenly)
{
    uint64_t rng = 17;
    for (int d = 0; d < 2; d++) {
        ad_dtype dt = d ? AD_F32 : AD_F64;
        ad_tensor *x = ts_tensor(dt, 4, TS_SHAPE(3, 5, 7, 6));
        ad_tensor *g = ts_tensor(dt, 4, TS_SHAPE(3, 5, 1, 1));
        ts_fill_uniform(x, &rng, -1, 1);
        ts_fill_uniform(g, &rng, -1, 1);
        ad_params *ps;
        ad_grads *gs;
        ad_tape *t;
        cr_assert_eq(ad_params_new(&ps), AD_OK);
        cr_assert_eq(ad_params_add(ps, x, NULL), AD_OK);
        cr_assert_eq(ad_grads_new(ps, &gs), AD_OK);
        cr_assert_eq(ad_tape_new(&t), AD_OK);
        ad_var y = ad_global_avg_pool2d(t, ad_use(t, x));
        cr_assert(ad_var_ok(y), "%s", ad_tape_error(t));
        cr_assert_eq(ad_backward(t, ad_sum(t, ad_mul(t, y, ad_use(t, g))), ps, gs), AD_OK);
        double want[15], dx[3 * 5 * 42];
        for (int pl = 0; pl < 15; pl++) {
            double s = 0;
            for (int i = 0; i < 42; i++) {
                s += ts_get(x, pl * 42 + i);
                dx[pl * 42 + i] = ts_get(g, pl) / 42;
            }
            want[pl] = s / 42;
        }
        cr_expect_eq(ad_value(t, y)->ndim, 4);
        ts_assert_near(ad_value(t, y), want, d ? 1e-6 : 1e-14, "global y");
        ts_assert_near(ad_grads_get(gs, x), dx, d ? 1e-6 : 1e-14, "global dx");
        ad_tape_free(t);
        ad_grads_free(gs);
        ad_params_free(ps);
        ad_tensor_free(g);
        ad_tensor_free(x);
    }
}

/* max_pool2d of x (one plane) under at, with dy = 1: y and dx through the tape. */
static void max_pool_ones(ad_tensor *x, ad_pool2d_attrs at, double *y, double *dx)
{
    ad_params *ps;
    ad_grads *gs;
    ad_tape *t;
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    cr_assert_eq(ad_params_add(ps, x, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(ps, &gs), AD_OK);
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ad_var v = ad_max_pool2d(t, ad_use(t, x), &at);
    cr_assert_eq(ad_backward(t, ad_sum(t, v), ps, gs), AD_OK, "%s", ad_last_error());
    const ad_tensor *yt = ad_value(t, v), *g = ad_grads_get(gs, x);
    for (int64_t i = 0; i < yt->size; i++)
        y[i] = ts_get(yt, i);
    for (int64_t i = 0; i < x->size; i++)
        dx[i] = ts_get(g, i);
    ad_tape_free(t);
    ad_grads_free(gs);
    ad_params_free(ps);
}

Test(pool, a_tie_sends_the_whole_gradient_to_the_first_maximum_in_row_major_order)
{
    for (int d = 0; d < 2; d++) {
        ad_tensor *x = ts_tensor(d ? AD_F32 : AD_F64, 4, TS_SHAPE(1, 1, 4, 4));
        /* Windows of 2x2: all equal; a tie at (0,3) and (1,2); a tie across rows. */
        const double v[16] = {1, 1, 0, 3, 1, 1, 3, 3, 2, 5, -1, -1, 5, 5, -1, -1};
        for (int i = 0; i < 16; i++)
            ts_set(x, i, v[i]);
        ad_tensor_touch(x);
        double y[16], dx[16];
        max_pool_ones(x, AD_POOL2D_ATTRS(2, 2), y, dx);
        const double wy[4] = {1, 3, 5, -1};
        const double wdx[16] = {1, 0, 0, 1, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0};
        for (int i = 0; i < 4; i++)
            cr_expect_eq(y[i], wy[i], "y[%d] = %g", i, y[i]);
        for (int i = 0; i < 16; i++)
            cr_expect_eq(dx[i], wdx[i], "2x2 dx[%d] = %g", i, dx[i]);
        /* All equal under overlapping padded windows (the general path): each window's
        ** first position inside the image; 3x3 stride 1 pad 1 over 4x4. */
        ad_tensor_fill(x, 2.0);
        max_pool_ones(x, pa(3, 3, 1, 1, 1, 1), y, dx);
        double want[16] = {0};
        for (int p = 0; p < 4; p++)
            for (int q = 0; q < 4; q++)
                want[(p > 0 ? p - 1 : 0) * 4 + (q > 0 ? q - 1 : 0)] += 1;
        for (int i = 0; i < 16; i++)
            cr_expect_eq(dx[i], want[i], "3x3 dx[%d] = %g, want %g", i, dx[i], want[i]);
        ad_tensor_free(x);
    }
}

Test(pool, a_nan_in_a_window_propagates_and_takes_the_gradient)
{
    for (int d = 0; d < 2; d++) {
        for (int general = 0; general < 2; general++) {
            ad_tensor *x = ts_tensor(d ? AD_F32 : AD_F64, 4, TS_SHAPE(1, 1, 2, 4));
            const double v[8] = {1, 7, 3, 4, NAN, 2, 9, NAN};
            for (int i = 0; i < 8; i++)
                ts_set(x, i, v[i]);
            ad_tensor_touch(x);
            double y[8], dx[8];
            /* Windows over a NaN: 2x2 stride 2 (its own loops) or 2 x 3 stride 1
            ** (the general ones); the window's last NaN takes the gradient. */
            if (!general) {
                max_pool_ones(x, AD_POOL2D_ATTRS(2, 2), y, dx);
                cr_expect(isnan(y[0]), "window with NaN: %g", y[0]);
                cr_expect(isnan(y[1]), "the last element NaN: %g", y[1]);
                const double w[8] = {0, 0, 0, 0, 1, 0, 0, 1};
                for (int i = 0; i < 8; i++)
                    cr_expect_eq(dx[i], w[i], "dx[%d] = %g", i, dx[i]);
            } else {
                /* Columns 0-2 and 1-3: the first window's NaN is at 4, the second's
                ** last at 7. */
                max_pool_ones(x, pa(2, 3, 1, 1, 0, 0), y, dx);
                cr_expect(isnan(y[0]) && isnan(y[1]), "%g %g", y[0], y[1]);
                const double w[8] = {0, 0, 0, 0, 1, 0, 0, 1};
                for (int i = 0; i < 8; i++)
                    cr_expect_eq(dx[i], w[i], "general dx[%d] = %g", i, dx[i]);
            }
            ad_tensor_free(x);
        }
    }
}

/* A small conv net's step: conv_bias, relu, 2x2 max pool, conv, padded overlapping
** avg pool, global average, sum of squares. */
static ad_var net_step(ad_tape *t, ad_tensor *const p[4])
{
    ad_pool2d_attrs k2 = AD_POOL2D_ATTRS(2, 2), k3 = pa(3, 3, 1, 1, 1, 1);
    ad_var h = ad_relu(t, ad_conv2d_bias(t, ad_use(t, p[0]), ad_use(t, p[1]),
                                         ad_use(t, p[2]), NULL));
    ad_var m = ad_max_pool2d(t, h, &k2);
    ad_var a = ad_avg_pool2d(t, ad_conv2d(t, m, ad_use(t, p[3]), NULL), &k3);
    ad_var g = ad_global_avg_pool2d(t, ad_max_pool2d(t, a, &k3));
    return ad_sum(t, ad_mul(t, g, g));
}

Test(pool, steps_after_the_first_make_no_heap_allocation_with_memory_saving_off_and_on)
{
    uint64_t rng = 3;
    ad_tensor *p[4] = {ts_tensor(AD_F32, 4, TS_SHAPE(3, 2, 12, 12)),
                       ts_tensor(AD_F32, 4, TS_SHAPE(4, 2, 3, 3)),
                       ts_tensor(AD_F32, 1, TS_SHAPE(4)),
                       ts_tensor(AD_F32, 4, TS_SHAPE(3, 4, 2, 2))};
    for (int i = 0; i < 4; i++)
        ts_fill_uniform(p[i], &rng, -0.5, 0.5);
    ad_tensor *first[3] = {0};
    for (int saving = 0; saving < 2; saving++) {
        ad_params *ps;
        ad_grads *gs;
        ad_tape *t;
        cr_assert_eq(ad_params_new(&ps), AD_OK);
        for (int i = 1; i < 4; i++)
            cr_assert_eq(ad_params_add(ps, p[i], NULL), AD_OK);
        cr_assert_eq(ad_grads_new(ps, &gs), AD_OK);
        cr_assert_eq(ad_tape_new(&t), AD_OK);
        /* Anomaly mode fills released buffers with NaN: a pullback reading what its
        ** rule declared unread would show. */
        ad_tape_set_memory_saving(t, saving);
        ad_tape_set_anomaly_mode(t, saving);
        ts_alloc_install();
        for (int step = 0; step < 6; step++) {
            ad_tape_reset(t);
            if (step == 1)
                ts_alloc_fail_at(0); /* restarts the count */
            cr_assert_eq(ad_backward(t, net_step(t, p), ps, gs), AD_OK, "saving %d step "
                         "%d: %s", saving, step, ad_last_error());
        }
        cr_expect_eq(ts_alloc_count(), 0u, "saving %d: %llu allocations in 5 steps", saving,
                     (unsigned long long)ts_alloc_count());
        ts_alloc_uninstall();
        for (int i = 0; i < 3; i++) {
            const ad_tensor *gi = ad_grads_get(gs, p[i + 1]);
            cr_assert_not_null(gi);
            if (!saving)
                first[i] = ts_clone(gi);
            else
                cr_expect_eq(ts_max_abs_diff(gi, first[i]), 0.0, "gradient %d differs "
                             "with memory saving", i);
        }
        ad_tape_free(t);
        ad_grads_free(gs);
        ad_params_free(ps);
    }
    for (int i = 0; i < 3; i++)
        ad_tensor_free(first[i]);
    for (int i = 0; i < 4; i++)
        ad_tensor_free(p[i]);
}
