/*
** test_conv.c: conv2d and conv2d_bias: float64 finite-difference checks of both rules
** (ad_rule_check: writes, beta = 1 adds, linearity, slots alone, bounds, values) over
** small shapes with strides, padding, dilation, non-square kernels, odd sizes, batch
** 1, one channel, two groups and kernels over the whole image; forward values and all three gradients through the
** tape against a naive 7-deep loop written here, in f64 and f32, on shapes that take
** both the one-image and the batched GEMM path; every error with its code and a
** message naming the op; and no heap allocation per step after the first.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

typedef struct conv_case {
    int64_t n, c, h, w, co, kh, kw;
    ad_conv2d_attrs at;
} conv_case;

static ad_conv2d_attrs attrs(int sh, int sw, int ph, int pw, int dh, int dw, int groups)
{
    return (ad_conv2d_attrs){sh, sw, ph, pw, dh, dw, groups};
}

/* Small shapes for finite differences (x at most a few hundred elements). */
static const conv_case *fd_cases(int *count)
{
    static conv_case c[11];
    c[0] = (conv_case){2, 3, 5, 5, 4, 3, 3, AD_CONV2D_ATTRS_DEFAULT};
    c[1] = (conv_case){2, 2, 7, 6, 3, 3, 2, attrs(2, 3, 1, 0, 1, 1, 1)};  /* stride, pad */
    c[2] = (conv_case){1, 1, 7, 7, 2, 2, 3, attrs(1, 1, 2, 1, 2, 2, 1)};  /* dilation */
    c[3] = (conv_case){2, 4, 5, 4, 6, 3, 1, attrs(1, 2, 1, 1, 1, 1, 2)};  /* groups 2 */
    c[4] = (conv_case){3, 1, 3, 5, 1, 1, 1, AD_CONV2D_ATTRS_DEFAULT};     /* 1x1 */
    c[5] = (conv_case){1, 2, 5, 5, 2, 5, 5, attrs(2, 2, 2, 2, 1, 1, 2)};  /* big kernel */
    c[6] = (conv_case){2, 2, 6, 5, 4, 2, 3, attrs(3, 2, 0, 2, 2, 1, 2)};  /* all at once */
    c[7] = (conv_case){1, 1, 2, 2, 1, 3, 3, attrs(1, 1, 1, 1, 1, 1, 1)};  /* pad > image */
    /* More than 16 output channels: the pullback builds its own columns (conv.c) */
    c[8] = (conv_case){2, 2, 4, 5, 18, 2, 3, attrs(1, 2, 1, 1, 1, 1, 2)};
    /* Kernels over the whole image (1x1 output): plain GEMMs on x, no im2col (conv.c) */
    c[9] = (conv_case){2, 3, 3, 3, 4, 3, 3, AD_CONV2D_ATTRS_DEFAULT};
    c[10] = (conv_case){3, 2, 2, 3, 5, 2, 3, attrs(2, 3, 0, 0, 1, 1, 1)}; /* and stride */
    *count = 11;
    return c;
}

static int64_t out_extent(int64_t in, int64_t k, int pad, int dil, int stride)
{
    return (in + 2 * pad - dil * (k - 1) - 1) / stride + 1;
}

/* The tensors of one case, random in [-1, 1). */
typedef struct conv_io { ad_tensor *x, *w, *b; int64_t ho, wo; } conv_io;

static conv_io make_io(ad_dtype dt, const conv_case *c, uint64_t *rng)
{
    conv_io io;
    io.x = ts_tensor(dt, 4, TS_SHAPE(c->n, c->c, c->h, c->w));
    io.w = ts_tensor(dt, 4, TS_SHAPE(c->co, c->c / c->at.groups, c->kh, c->kw));
    io.b = ts_tensor(dt, 1, TS_SHAPE(c->co));
    ts_fill_uniform(io.x, rng, -1, 1);
    ts_fill_uniform(io.w, rng, -1, 1);
    ts_fill_uniform(io.b, rng, -1, 1);
    io.ho = out_extent(c->h, c->kh, c->at.pad_h, c->at.dilation_h, c->at.stride_h);
    io.wo = out_extent(c->w, c->kw, c->at.pad_w, c->at.dilation_w, c->at.stride_w);
    return io;
}

static void free_io(conv_io *io)
{
    ad_tensor_free(io->x);
    ad_tensor_free(io->w);
    ad_tensor_free(io->b);
}

Test(conv, both_rules_pass_the_float64_check_over_strides_padding_dilation_and_groups)
{
    int count;
    const conv_case *cs = fd_cases(&count);
    uint64_t rng = 5;
    for (int k = 0; k < count; k++) {
        conv_io io = make_io(AD_F64, &cs[k], &rng);
        ad_check_options o = ad_check_defaults();
        o.attrs = &cs[k].at, o.attrs_size = sizeof cs[k].at;
        ad_check_report rep = {0};
        cr_assert_eq(ad_rule_check(ad_op_conv2d, ((const ad_tensor *const[]){io.x, io.w}),
                                   2, &o, &rep), AD_OK, "case %d: %s", k, ad_last_error());
        cr_expect_eq(rep.slots_checked, 2, "case %d", k);
        cr_assert_eq(ad_rule_check(ad_op_conv2d_bias,
                                   ((const ad_tensor *const[]){io.x, io.w, io.b}), 3, &o,
                                   &rep), AD_OK, "case %d with bias: %s", k, ad_last_error());
        cr_expect_eq(rep.slots_checked, 3, "case %d with bias", k);
        for (int s = 0; s < 3; s++)
            cr_expect(rep.slot[s].passed & AD_CHECKED_ADDS, "case %d slot %d: beta 1", k, s);
        free_io(&io);
    }
}

Test(conv, the_rule_defaults_are_stride_1_no_padding_no_dilation_one_group)
{
    const ad_rule *r = ad_rule_find(ad_op_conv2d);
    cr_assert_not_null(r);
    cr_assert_eq(r->attrs_size, sizeof(ad_conv2d_attrs));
    ad_conv2d_attrs d = AD_CONV2D_ATTRS_DEFAULT;
    cr_expect_eq(memcmp(r->attrs_default, &d, sizeof d), 0);
    cr_expect_eq(r->unread, AD_OUTPUT);
    cr_expect_eq(ad_rule_find(ad_op_conv2d_bias)->unread, AD_OUTPUT | AD_INPUT(2));
    /* Without attributes the check runs on the defaults. */
    uint64_t rng = 9;
    conv_case c = {2, 2, 4, 4, 3, 3, 3, AD_CONV2D_ATTRS_DEFAULT};
    conv_io io = make_io(AD_F64, &c, &rng);
    cr_expect_eq(ad_rule_check(ad_op_conv2d, ((const ad_tensor *const[]){io.x, io.w}), 2,
                               NULL, NULL), AD_OK, "%s", ad_last_error());
    free_io(&io);
}

/* x's element (n, c, ih, iw), or 0 in the padding. */
static double x_at(const ad_tensor *x, int64_t n, int64_t c, int64_t ih, int64_t iw)
{
    int64_t C = x->shape[1], H = x->shape[2], W = x->shape[3];
    if (ih < 0 || ih >= H || iw < 0 || iw >= W)
        return 0.0;
    return ts_get(x, ((n * C + c) * H + ih) * W + iw);
}

/*
** The naive convolution and, for L = sum(G .* y), its gradients: one 7-deep loop over
** (n, o, p, q, c, i, j) visits every product w[o,c,i,j] x[n, g Cg + c, ih, iw] once.
*/
static void naive(const conv_case *k, const conv_io *io, const ad_tensor *g, double *y,
                  double *dx, double *dw, double *db)
{
    int64_t cg = k->c / k->at.groups, cog = k->co / k->at.groups;
    int64_t H = k->h, W = k->w, Ho = io->ho, Wo = io->wo;
    for (int64_t n = 0; n < k->n; n++)
        for (int64_t o = 0; o < k->co; o++)
            for (int64_t p = 0; p < Ho; p++)
                for (int64_t q = 0; q < Wo; q++) {
                    int64_t yi = ((n * k->co + o) * Ho + p) * Wo + q;
                    double gy = ts_get(g, yi), s = ts_get(io->b, o);
                    db[o] += gy;
                    for (int64_t c = 0; c < cg; c++)
                        for (int64_t i = 0; i < k->kh; i++)
                            for (int64_t j = 0; j < k->kw; j++) {
                                int64_t ci = (o / cog) * cg + c;
                                int64_t ih = p * k->at.stride_h - k->at.pad_h + i * k->at.dilation_h;
                                int64_t iw = q * k->at.stride_w - k->at.pad_w + j * k->at.dilation_w;
                                int64_t wi = ((o * cg + c) * k->kh + i) * k->kw + j;
                                double xv = x_at(io->x, n, ci, ih, iw);
                                s += ts_get(io->w, wi) * xv;
                                dw[wi] += gy * xv;
                                if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                                    dx[((n * k->c + ci) * H + ih) * W + iw] += gy * ts_get(io->w, wi);
                            }
                    y[yi] = s;
                }
}

/* Values and gradients of sum(G .* conv2d_bias(x, w, b)) through the tape. */
static void tape_matches_naive(ad_dtype dt, const conv_case *k, uint64_t *rng)
{
    conv_io io = make_io(dt, k, rng);
    ad_tensor *g = ts_tensor(dt, 4, TS_SHAPE(k->n, k->co, io.ho, io.wo));
    ts_fill_uniform(g, rng, -1, 1);
    ad_params *ps;
    ad_grads *gs;
    ad_tape *t;
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    cr_assert_eq(ad_params_add(ps, io.x, NULL), AD_OK);
    cr_assert_eq(ad_params_add(ps, io.w, NULL), AD_OK);
    cr_assert_eq(ad_params_add(ps, io.b, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(ps, &gs), AD_OK);
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ad_var y = ad_conv2d_bias(t, ad_use(t, io.x), ad_use(t, io.w), ad_use(t, io.b), &k->at);
    cr_assert(ad_var_ok(y), "%s", ad_tape_error(t));
    cr_assert_eq(ad_backward(t, ad_sum(t, ad_mul(t, y, ad_use(t, g))), ps, gs), AD_OK, "%s",
                 ad_last_error());
    double *want = calloc((size_t)g->size, sizeof *want);
    double *dx = calloc((size_t)io.x->size, sizeof *dx);
    double *dw = calloc((size_t)io.w->size, sizeof *dw);
    double *db = calloc((size_t)io.b->size, sizeof *db);
    cr_assert(want && dx && dw && db);
    naive(k, &io, g, want, dx, dw, db);
    double tol = dt == AD_F32 ? 1e-4 : 1e-12;
    char what[80];
    snprintf(what, sizeof what, "%s %lldx%lldx%lldx%lld y", ad_dtype_name(dt),
             (long long)k->n, (long long)k->c, (long long)k->h, (long long)k->w);
    ts_assert_near(ad_value(t, y), want, tol, what);
    ts_assert_near(ad_grads_get(gs, io.x), dx, tol, "dx");
    ts_assert_near(ad_grads_get(gs, io.w), dw, tol, "dw");
    ts_assert_near(ad_grads_get(gs, io.b), db, tol, "db");
    free(want), free(dx), free(dw), free(db);
    ad_tape_free(t);
    ad_grads_free(gs);
    ad_params_free(ps);
    ad_tensor_free(g);
    free_io(&io);
}

Test(conv, values_and_gradients_match_a_naive_loop_in_f64_and_f32)
{
    int count;
    const conv_case *cs = fd_cases(&count);
    /* Positions per image of 1024 and more: one GEMM per image, no transpose; 5 images
    ** of 300 positions: blocks of 4 and 1. */
    const conv_case big[] = {
        {2, 1, 34, 34, 3, 3, 3, AD_CONV2D_ATTRS_DEFAULT},
        {3, 4, 33, 33, 4, 2, 2, attrs(1, 1, 1, 0, 1, 1, 2)},
        {5, 3, 22, 17, 2, 3, 3, attrs(1, 1, 0, 0, 1, 1, 1)},
    };
    uint64_t rng = 11;
    for (int d = 0; d < 2; d++) {
        for (int k = 0; k < count; k++)
            tape_matches_naive(d ? AD_F32 : AD_F64, &cs[k], &rng);
        for (size_t k = 0; k < sizeof big / sizeof big[0]; k++)
            tape_matches_naive(d ? AD_F32 : AD_F64, &big[k], &rng);
    }
}

/* Records conv2d(_bias) on fresh tensors of the given shapes and attributes, and
** expects the tape to fail with code and a message holding needle and the op. */
static void expect_fails(const int64_t *xs, const int64_t *ws, const int64_t *bs, int xnd,
                         ad_conv2d_attrs at, ad_status code, const char *needle)
{
    ad_tensor *x = ts_tensor(AD_F64, xnd, xs), *w = ts_tensor(AD_F64, 4, ws);
    ad_tensor *b = bs ? ts_tensor(AD_F64, 1, bs) : NULL;
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ad_var y = b ? ad_conv2d_bias(t, ad_use(t, x), ad_use(t, w), ad_use(t, b), &at)
                 : ad_conv2d(t, ad_use(t, x), ad_use(t, w), &at);
    ts_assert_tape_failed(t, y, code, b ? "conv2d_bias" : "conv2d", needle);
    ad_tape_free(t);
    ad_tensor_free(x), ad_tensor_free(w), ad_tensor_free(b);
}

Test(conv, zero_or_negative_attributes_are_invalid_and_name_the_field)
{
    const char *names[] = {"stride_h", "stride_w", "pad_h", "pad_w", "dilation_h",
                           "dilation_w", "groups"};
    for (int f = 0; f < 7; f++) {
        ad_conv2d_attrs at = AD_CONV2D_ATTRS_DEFAULT;
        int *fields = &at.stride_h;
        fields[f] = (f == 2 || f == 3) ? -1 : 0;
        expect_fails(TS_SHAPE(1, 2, 5, 5), TS_SHAPE(2, 2, 3, 3), NULL, 4, at, AD_ERR_INVALID,
                     names[f]);
        expect_fails(TS_SHAPE(1, 2, 5, 5), TS_SHAPE(2, 2, 3, 3), TS_SHAPE(2), 4, at,
                     AD_ERR_INVALID, names[f]);
    }
    /* A zeroed struct is not the default. */
    expect_fails(TS_SHAPE(1, 2, 5, 5), TS_SHAPE(2, 2, 3, 3), NULL, 4, (ad_conv2d_attrs){0},
                 AD_ERR_INVALID, "stride_h is 0");
}

Test(conv, bad_shapes_fail_with_a_named_error_naming_the_shapes)
{
    ad_conv2d_attrs d = AD_CONV2D_ATTRS_DEFAULT, g2 = d, g3 = d;
    g2.groups = 2, g3.groups = 3;
    expect_fails(TS_SHAPE(2, 5, 5), TS_SHAPE(2, 2, 3, 3), NULL, 3, d, AD_ERR_RANK, NULL);
    expect_fails(TS_SHAPE(1, 3, 5, 5), TS_SHAPE(2, 2, 3, 3), NULL, 4, d, AD_ERR_SHAPE,
                 "x 1x3x5x5 f64 has 3 channels");
    expect_fails(TS_SHAPE(1, 4, 5, 5), TS_SHAPE(2, 4, 3, 3), NULL, 4, g2, AD_ERR_SHAPE,
                 "groups 2");
    expect_fails(TS_SHAPE(1, 6, 5, 5), TS_SHAPE(4, 2, 3, 3), NULL, 4, g3, AD_ERR_SHAPE,
                 "not divisible by groups 3");
    expect_fails(TS_SHAPE(1, 2, 5, 5), TS_SHAPE(3, 2, 3, 3), TS_SHAPE(2), 4, d, AD_ERR_SHAPE,
                 "one per output channel");
    expect_fails(TS_SHAPE(1, 2, 2, 5), TS_SHAPE(3, 2, 3, 3), NULL, 4, d, AD_ERR_SHAPE,
                 "output extent below 1");
    ad_conv2d_attrs dil = d;
    dil.dilation_w = 3; /* 3 wide, dilated to 7, over 6 columns padded by 0 */
    expect_fails(TS_SHAPE(1, 2, 6, 6), TS_SHAPE(3, 2, 3, 3), NULL, 4, dil, AD_ERR_SHAPE,
                 "dilated to 7");
    dil.pad_w = 1; /* fits once padded */
    ad_tensor *x = ts_tensor(AD_F64, 4, TS_SHAPE(1, 2, 6, 6));
    ad_tensor *w = ts_tensor(AD_F64, 4, TS_SHAPE(3, 2, 3, 3));
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    const ad_tensor *y = ad_value(t, ad_conv2d(t, ad_use(t, x), ad_use(t, w), &dil));
    cr_assert_not_null(y, "%s", ad_tape_error(t));
    cr_expect(y->shape[2] == 4 && y->shape[3] == 2);
    ad_tape_free(t);
    ad_tensor_free(x), ad_tensor_free(w);
}

Test(conv, overflowing_sizes_fail_with_overflow_before_any_work)
{
    ad_conv2d_attrs d = AD_CONV2D_ATTRS_DEFAULT;
    d.dilation_h = 1 << 30;
    /* Empty tensors with huge extents: a dilated kernel of 2^70 rows. */
    expect_fails(TS_SHAPE(0, 1, (int64_t)1 << 40, 1), TS_SHAPE(0, 1, (int64_t)1 << 40, 1),
                 NULL, 4, d, AD_ERR_OVERFLOW, "overflows");
    /* 2^32 output positions per image: beyond BLAS's int. */
    expect_fails(TS_SHAPE(0, 1, (int64_t)1 << 32, 1), TS_SHAPE(1, 1, 1, 1), NULL, 4,
                 AD_CONV2D_ATTRS_DEFAULT, AD_ERR_OVERFLOW, "int range");
}

/* A small conv net's step: conv_bias, tanh, conv, sum of squares. */
static ad_var net_step(ad_tape *t, ad_tensor *const p[4])
{
    ad_conv2d_attrs s2 = AD_CONV2D_ATTRS_DEFAULT;
    s2.stride_h = s2.stride_w = 2, s2.pad_h = s2.pad_w = 1;
    ad_var h = ad_tanh(t, ad_conv2d_bias(t, ad_use(t, p[0]), ad_use(t, p[1]),
                                         ad_use(t, p[2]), NULL));
    ad_var y = ad_conv2d(t, h, ad_use(t, p[3]), &s2);
    return ad_sum(t, ad_mul(t, y, y));
}

Test(conv, steps_after_the_first_make_no_heap_allocation)
{
    uint64_t rng = 3;
    ad_tensor *p[4] = {ts_tensor(AD_F32, 4, TS_SHAPE(3, 2, 9, 9)),
                       ts_tensor(AD_F32, 4, TS_SHAPE(4, 2, 3, 3)),
                       ts_tensor(AD_F32, 1, TS_SHAPE(4)),
                       ts_tensor(AD_F32, 4, TS_SHAPE(2, 4, 3, 3))};
    for (int i = 0; i < 4; i++)
        ts_fill_uniform(p[i], &rng, -0.5, 0.5);
    ad_params *ps;
    ad_grads *gs;
    ad_tape *t;
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    for (int i = 1; i < 4; i++)
        cr_assert_eq(ad_params_add(ps, p[i], NULL), AD_OK);
    cr_assert_eq(ad_grads_new(ps, &gs), AD_OK);
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ts_alloc_install();
    for (int step = 0; step < 6; step++) {
        if (step == 1)
            ts_alloc_fail_at(0); /* restarts the count */
        ad_tape_reset(t);
        cr_assert_eq(ad_backward(t, net_step(t, p), ps, gs), AD_OK, "step %d: %s", step,
                     ad_last_error());
    }
    cr_expect_eq(ts_alloc_count(), 0u, "%llu allocations in 5 steps",
                 (unsigned long long)ts_alloc_count());
    ts_alloc_uninstall();
    ad_tape_free(t);
    ad_grads_free(gs);
    ad_params_free(ps);
    for (int i = 0; i < 4; i++)
        ad_tensor_free(p[i]);
}

Test(conv, an_empty_kernel_is_a_shape_error)
{
    expect_fails(TS_SHAPE(1, 2, 5, 5), TS_SHAPE(2, 2, 0, 3), NULL, 4,
                 AD_CONV2D_ATTRS_DEFAULT, AD_ERR_SHAPE, "empty kernel");
}

/* Zero input channels (weights and input empty, their data NULL as ad_use allows):
** y is the bias (or zeros), db sums dY, and no pointer is offset from NULL. */
Test(conv, zero_input_channels_give_the_bias_and_its_gradient)
{
    ad_tensor x = {.dtype = AD_F64, .ndim = 4, .shape = {2, 0, 3, 4}, .size = 0};
    ad_tensor w = {.dtype = AD_F64, .ndim = 4, .shape = {3, 0, 2, 2}, .size = 0};
    ad_tensor *b;
    cr_assert_eq(ad_tensor_new(AD_F64, 1, TS_SHAPE(3), &b), AD_OK);
    for (int o = 0; o < 3; o++)
        ((double *)b->data)[o] = 0.5 + o;
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        ad_tape_reset(t);
        /* Leave nonzero bytes in the arena, so a y that is never written shows. */
        ad_var junk = ad_scale(t, ad_use(t, b), 7.0);
        ad_var junk2 = ad_add(t, junk, junk);
        (void)junk2;
        ad_tape_reset(t);
        ad_var vx = ad_use(t, &x), vw = ad_use(t, &w), vb = ad_use(t, b);
        ad_var y = with_bias ? ad_conv2d_bias(t, vx, vw, vb, NULL) : ad_conv2d(t, vx, vw, NULL);
        ad_var loss = ad_sum(t, y);
        cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_error(t));
        const ad_tensor *yv = ad_value(t, y);
        cr_assert_eq(yv->size, 2 * 3 * 2 * 3);
        for (int64_t k = 0; k < yv->size; k++) {
            double want = with_bias ? 0.5 + (double)((k / 6) % 3) : 0.0;
            cr_assert_eq(((const double *)yv->data)[k], want, "y[%lld]", (long long)k);
        }
        if (!with_bias)
            continue;
        ad_params *ps;
        ad_grads *gs;
        cr_assert_eq(ad_params_new(&ps), AD_OK);
        cr_assert_eq(ad_params_add(ps, b, NULL), AD_OK);
        cr_assert_eq(ad_grads_new(ps, &gs), AD_OK);
        cr_assert_eq(ad_backward(t, loss, ps, gs), AD_OK, "%s", ad_last_error());
        const ad_tensor *db = ad_grads_get(gs, b);
        for (int o = 0; o < 3; o++) /* two images of 2 x 3 positions */
            cr_expect_eq(((const double *)db->data)[o], 12.0, "db[%d]", o);
        ad_grads_free(gs);
        ad_params_free(ps);
    }
    ad_tape_free(t);
    ad_tensor_free(b);
}
