/*
** test_dfa_conv.c: DFA into conv layers (ad_dfa_conv_hidden), BioTorch's form. Through
** the tape, in f32 and f64, dx equals the transposed convolution of e broadcast over
** the layer's output grid with B, computed here by a naive loop over every index tuple
** as the definition reads (never conv.c's kernels), for strides, padding, dilation,
** non-square kernels, batch 1, one channel and groups; the rule passes the default
** float64 check and an `expected` check with that loop (and fails one with twice it);
** bad input gives named errors; in a small LeNet-like net, the first conv's dW is the
** hand composition of the DFA signal, the pool's routing, the relu mask and a naive
** conv dW, while the layers above get plain backprop, and the reference sweep gives
** backprop's dW everywhere.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ad_feedback.h"
#include "naive_conv.h"
#include "support.h"

static const ts_conv_geo cases[] = {
    {2, 3, 6, 6, 4, 3, 3, {1, 1, 0, 0, 1, 1, 1}},
    {2, 2, 7, 6, 3, 3, 2, {2, 2, 1, 1, 1, 1, 1}}, /* stride 2, padding, non-square */
    {1, 1, 7, 7, 2, 2, 3, {1, 2, 2, 1, 2, 2, 1}}, /* batch 1, one channel, dilation */
    {2, 4, 5, 4, 6, 3, 1, {1, 2, 1, 1, 1, 1, 2}}, /* two groups */
    {3, 6, 5, 5, 3, 1, 1, {2, 1, 0, 0, 1, 1, 3}}, /* three groups, 1x1 */
};
#define N_CASES ((int)(sizeof cases / sizeof cases[0]))

typedef struct io {
    ad_tensor *x, *b, *e;
} io;

static io make_io(ad_dtype dt, const ts_conv_geo *g, uint64_t *rng)
{
    io v = {ts_tensor(dt, 4, TS_SHAPE(g->n, g->c, g->h, g->w)),
            ts_tensor(dt, 4, TS_SHAPE(g->co, g->c / g->at.groups, g->kh, g->kw)),
            ts_tensor(dt, 2, TS_SHAPE(g->n, g->co))};
    ts_fill_uniform(v.x, rng, -1, 1);
    ts_fill_uniform(v.b, rng, -1, 1);
    ts_fill_uniform(v.e, rng, -1, 1);
    return v;
}

static void free_io(io *v)
{
    ad_tensor_free(v->x);
    ad_tensor_free(v->b);
    ad_tensor_free(v->e);
}

/* loss = sum(3 y) + sum(x), y = dfa_conv_hidden(x, B): dy = 3 must be ignored, and the
** sum(x) path, swept first, makes the DFA pullback add (beta 1): dx = naive + 1. */
Test(dfa_conv, pullback_is_the_transposed_conv_of_e_over_the_grid_f32_and_f64)
{
    uint64_t rng = 5;
    for (int d = 0; d < 2; d++)
        for (int k = 0; k < N_CASES; k++) {
            const ts_conv_geo *g = &cases[k];
            io v = make_io(d ? AD_F64 : AD_F32, g, &rng);
            ad_dfa dfa = {0};
            ad_tape *t;
            ad_params *ps;
            ad_grads *gs;
            cr_assert(ad_tape_new(&t) == AD_OK && ad_params_new(&ps) == AD_OK);
            cr_assert(ad_params_add(ps, v.x, NULL) == AD_OK && ad_grads_new(ps, &gs) == AD_OK);
            ad_var x = ad_use(t, v.x);
            ad_var y = ad_dfa_conv_hidden(t, &dfa, x, ad_use(t, v.b), &g->at);
            cr_assert(ad_var_ok(y), "case %d: %s", k, ad_tape_error(t));
            cr_expect_eq(ts_max_abs_diff(ad_value(t, y), v.x), 0.0, "forward is the identity");
            ad_var loss = ad_add(t, ad_sum(t, ad_scale(t, y, 3.0)), ad_sum(t, x));
            dfa.error_ = v.e; /* as an output rule leaves it, after recording cleared it */
            cr_assert_eq(ad_backward(t, loss, ps, gs), AD_OK, "case %d: %s", k, ad_last_error());
            double *e = ts_doubles(v.e), *b = ts_doubles(v.b);
            double *want = ts_naive_dfa_conv_dx(g, e, b);
            for (int64_t i = 0; i < v.x->size; i++)
                want[i] += 1.0;
            ts_assert_near(ad_grads_get(gs, v.x), want, d ? 1e-12 : 1e-5, "dx");
            cr_expect_null(ad_cotangent(t, y), "case %d: the cotangent above was computed", k);
            free(e), free(b), free(want);
            ad_grads_free(gs);
            ad_params_free(ps);
            ad_tape_free(t);
            free_io(&v);
        }
}

/* The naive dx of the e the checker seeded, read through the call's attrs as the rule
** reads it; `factor` 2 is a wrong expectation the check must refuse. */
static ad_status naive_expected_with(ad_ctx *cx, const ad_tensor *const in[],
                                     ad_tensor *const din[], const float beta[],
                                     double factor)
{
    const ad_dfa_conv_attrs *a = ad_attrs(cx);
    const ad_tensor *x = in[0], *bt = in[1];
    ts_conv_geo g = {x->shape[0], x->shape[1], x->shape[2], x->shape[3], bt->shape[0],
             bt->shape[2], bt->shape[3], a->conv};
    double *e = ts_doubles(a->dfa->error_), *b = ts_doubles(bt);
    double *dx = ts_naive_dfa_conv_dx(&g, e, b);
    for (int64_t i = 0; din[0] && i < x->size; i++)
        ts_set(din[0], i, (beta[0] ? ts_get(din[0], i) : 0.0) + factor * dx[i]);
    free(e), free(b), free(dx);
    return AD_OK;
}

static ad_status naive_expected(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                                const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)dy, (void)y;
    return naive_expected_with(cx, in, din, beta, 1.0);
}

static ad_status twice_expected(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                                const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)dy, (void)y;
    return naive_expected_with(cx, in, din, beta, 2.0);
}

Test(dfa_conv, rule_passes_the_default_f64_check_and_the_naive_expected_one)
{
    uint64_t rng = 17;
    for (int k = 0; k < N_CASES; k++) {
        io v = make_io(AD_F64, &cases[k], &rng);
        ad_dfa dfa = {0};
        ad_dfa_conv_attrs at = {cases[k].at, &dfa};
        const ad_tensor *in[2] = {v.x, v.b};
        ad_check_options o = ad_check_defaults();
        o.attrs = &at, o.attrs_size = sizeof at;
        ad_check_report rep;
        cr_expect_eq(ad_rule_check(ad_op_dfa_conv_hidden, in, 2, &o, &rep), AD_OK,
                     "case %d: %s", k, ad_last_error());
        cr_expect_eq(rep.slot[0].method, AD_CHECK_STRUCTURAL, "case %d", k);
        cr_expect_eq(rep.slot[0].passed & AD_CHECKED_LINEAR, AD_CHECKED_LINEAR,
                     "case %d: linear in the seeded e: 0x%x", k, rep.slot[0].passed);
        cr_expect_eq(rep.slot[1].method, AD_CHECK_SKIPPED_NONDIFF);
        o.expected = naive_expected;
        cr_expect_eq(ad_rule_check(ad_op_dfa_conv_hidden, in, 2, &o, &rep), AD_OK,
                     "case %d: %s", k, ad_last_error());
        cr_expect_eq(rep.slot[0].method, AD_CHECK_EXPECTED);
        cr_expect_lt(rep.slot[0].max_rel_err, 1e-12, "case %d: %g", k, rep.slot[0].max_rel_err);
        o.expected = twice_expected;
        cr_expect_eq(ad_rule_check(ad_op_dfa_conv_hidden, in, 2, &o, &rep),
                     AD_ERR_CHECK_FAILED, "case %d: twice the naive dx passed", k);
        cr_expect_null(dfa.error_, "case %d: the checker's e was left behind", k);
        free_io(&v);
    }
}

/* Records dfa_conv_hidden on an x of xs and a B of bs (rank 4 unless given) on a fresh
** tape and expects it refused with code, naming the op and needle. */
static void expect_refused(int xr, const int64_t *xs, const int64_t *bs, ad_conv2d_attrs at,
                           ad_dfa *dfa, ad_status code, const char *needle)
{
    ad_tensor *x = ts_tensor(AD_F64, xr, xs), *b = ts_tensor(AD_F64, 4, bs);
    ad_tensor *x0 = ts_clone(x);
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ad_var y = ad_dfa_conv_hidden(t, dfa, ad_use(t, x), ad_use(t, b), &at);
    ts_assert_tape_failed(t, y, code, "dfa_conv_hidden", needle);
    cr_expect_eq(ts_max_abs_diff(x, x0), 0.0, "x changed");
    ad_tape_free(t);
    ad_tensor_free(x), ad_tensor_free(x0), ad_tensor_free(b);
}

Test(dfa_conv, bad_shapes_and_a_missing_dfa_are_refused_at_record_time)
{
    ad_dfa dfa = {0};
    ad_conv2d_attrs plain = AD_CONV2D_ATTRS_DEFAULT, pad1 = plain;
    pad1.pad_h = pad1.pad_w = 1;
    expect_refused(4, TS_SHAPE(2, 3, 6, 6), TS_SHAPE(4, 2, 3, 3), plain, &dfa, AD_ERR_SHAPE,
                   "4x2x3x3");                                  /* B's Cin is not x's */
    expect_refused(2, TS_SHAPE(2, 36), TS_SHAPE(4, 1, 3, 3), plain, &dfa, AD_ERR_RANK, NULL);
    expect_refused(4, TS_SHAPE(1, 1, 3, 3), TS_SHAPE(2, 1, 6, 3), pad1, &dfa, AD_ERR_SHAPE,
                   "larger than x 1x1x3x3 f64 padded by 1");        /* 6 > 3 + 2 */
    plain.stride_w = 0;
    expect_refused(4, TS_SHAPE(1, 1, 3, 3), TS_SHAPE(2, 1, 1, 1), plain, &dfa, AD_ERR_INVALID,
                   "stride");
    expect_refused(4, TS_SHAPE(1, 1, 3, 3), TS_SHAPE(2, 1, 1, 1), pad1, NULL, AD_ERR_NULL,
                   "ad_dfa");
}

/* x -> dfa_conv_hidden(B) -> conv -> flatten -> dense (`classes`) [-> dfa_output] -> sum,
** swept; returns the sweep's status, its message in msg. */
static ad_status sweep_small_net(int64_t classes, int with_output, char msg[256])
{
    uint64_t rng = 3;
    ad_tensor *x = ts_tensor(AD_F64, 4, TS_SHAPE(2, 2, 4, 4));
    ad_tensor *b = ts_tensor(AD_F64, 4, TS_SHAPE(3, 2, 3, 3));
    ad_tensor *wc = ts_tensor(AD_F64, 4, TS_SHAPE(2, 2, 3, 3));
    ad_tensor *wd = ts_tensor(AD_F64, 2, TS_SHAPE(classes, 8));
    ad_tensor *all[] = {x, b, wc, wd};
    ad_dfa dfa = {0};
    ad_tape *t;
    ad_params *ps;
    ad_grads *gs;
    for (int i = 0; i < 4; i++)
        ts_fill_uniform(all[i], &rng, -1, 1);
    cr_assert(ad_tape_new(&t) == AD_OK && ad_params_new(&ps) == AD_OK);
    cr_assert(ad_params_add(ps, wc, NULL) == AD_OK && ad_params_add(ps, x, NULL) == AD_OK);
    cr_assert_eq(ad_grads_new(ps, &gs), AD_OK); /* x's gradient: the DFA pullback runs */
    ad_var h = ad_dfa_conv_hidden(t, &dfa, ad_use(t, x), ad_use(t, b), NULL);
    ad_var z = ad_matmul(t, ad_flatten(t, ad_conv2d(t, h, ad_use(t, wc), NULL)),
                         ad_use(t, wd), 0, 1);
    ad_var loss = ad_sum(t, with_output ? ad_dfa_output(t, &dfa, z) : z);
    cr_assert(ad_var_ok(loss), "%s", ad_tape_error(t));
    ad_status rc = ad_backward(t, loss, ps, gs);
    snprintf(msg, 256, "%s", rc ? ad_last_error() : "");
    ad_grads_free(gs);
    ad_params_free(ps);
    ad_tape_free(t);
    for (int i = 0; i < 4; i++)
        ad_tensor_free(all[i]);
    return rc;
}

Test(dfa_conv, a_wrong_error_shape_or_no_output_rule_fails_the_sweep_by_name)
{
    char msg[256];
    cr_expect_eq(sweep_small_net(3, 1, msg), AD_OK, "%s", msg);
    ad_status rc = sweep_small_net(4, 1, msg);
    cr_expect_eq(rc, AD_ERR_SHAPE, "e has 4 classes, B 3 outputs: %s", ad_status_str(rc));
    EXPECT_MENTIONS(msg, "dfa_conv_hidden", "output error e 2x4", "3x2x3x3");
    rc = sweep_small_net(3, 0, msg);
    cr_expect_eq(rc, AD_ERR_INVALID, "no dfa_output in the sweep: %s", ad_status_str(rc));
    EXPECT_MENTIONS(msg, "dfa_conv_hidden", "no output error e");
}
