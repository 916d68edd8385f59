/*
** test_views.c: reshape and flatten as views (ad_out_view). The output shares x's
** memory (the same data pointer, for a leaf and for an op output) with the shape asked
** for, -1 inferred; gradients pass the float64 check and equal dY's elements under x's
** shape; with memory saving and anomaly mode on, nets in which a view is read after,
** before or instead of its base give bitwise the gradients of an ordinary sweep (a
** base released while a view was still to be read would hold NaN); ad_keep on a view
** keeps the base, an unkept base and its view both read AD_ERR_REUSED; the loss may
** be a view; every bad shape is a named error; ad_out_view's own errors in a user rule.
*/
#include <criterion/criterion.h>
#include <string.h>

#include "saving_nets.h"
#include "support.h"

static ad_tape *new_tape(void)
{
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    return t;
}

Test(views, reshape_and_flatten_share_the_memory_of_a_leaf_and_of_an_op_output)
{
    uint64_t rng = 1;
    ad_tensor *x = ts_tensor(AD_F32, 4, TS_SHAPE(2, 3, 4, 5));
    ts_fill_uniform(x, &rng, -1, 1);
    ad_tape *t = new_tape();
    ad_var vx = ad_use(t, x);
    const ad_tensor *f = ad_value(t, ad_flatten(t, vx));
    cr_assert_not_null(f, "%s", ad_tape_error(t));
    cr_expect(f->ndim == 2 && f->shape[0] == 2 && f->shape[1] == 60 && f->size == 120);
    cr_expect_eq(f->data, x->data, "flatten copied the leaf");
    ad_var h = ad_tanh(t, vx);
    ad_var r = ad_reshape(t, h, 3, TS_SHAPE(4, -1, 6));
    const ad_tensor *rv = ad_value(t, r);
    cr_assert_not_null(rv, "%s", ad_tape_error(t));
    cr_expect(rv->ndim == 3 && rv->shape[0] == 4 && rv->shape[1] == 5 && rv->shape[2] == 6);
    cr_expect_eq(rv->data, ad_value(t, h)->data, "reshape copied tanh's output");
    const ad_tensor *s = ad_value(t, ad_reshape(t, ad_sum(t, r), 1, TS_SHAPE(-1)));
    cr_assert_not_null(s, "%s", ad_tape_error(t));
    cr_expect(s->ndim == 1 && s->shape[0] == 1);
    ad_tape_free(t);
    ad_tensor_free(x);
}

Test(views, both_rules_pass_the_float64_check)
{
    uint64_t rng = 2;
    ad_tensor *x = ts_tensor(AD_F64, 4, TS_SHAPE(2, 3, 2, 5));
    ts_fill_uniform(x, &rng, -1, 1);
    ad_reshape_attrs at = {.ndim = 3, .shape = {5, -1, 4}};
    ad_check_options o = ad_check_defaults();
    o.attrs = &at, o.attrs_size = sizeof at;
    cr_expect_eq(ad_rule_check(ad_op_reshape, ((const ad_tensor *const[]){x}), 1, &o, NULL),
                 AD_OK, "%s", ad_last_error());
    cr_expect_eq(ad_rule_check(ad_op_flatten, ((const ad_tensor *const[]){x}), 1, NULL, NULL),
                 AD_OK, "%s", ad_last_error());
    ad_tensor_free(x);
}

Test(views, the_gradient_is_dy_under_the_shape_of_x_and_adds_across_uses)
{
    uint64_t rng = 3;
    ad_tensor *x = ts_tensor(AD_F64, 3, TS_SHAPE(2, 3, 4));
    ad_tensor *g = ts_tensor(AD_F64, 2, TS_SHAPE(2, 12));
    ts_fill_uniform(x, &rng, -1, 1);
    ts_fill_uniform(g, &rng, -1, 1);
    ad_params *ps;
    ad_grads *gs;
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    cr_assert_eq(ad_params_add(ps, x, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(ps, &gs), AD_OK);
    ad_tape *t = new_tape();
    /* L = sum(G .* flatten(x)) + sum(x): dL/dx = G (in x's order) + 1. */
    ad_var vx = ad_use(t, x);
    ad_var l = ad_add(t, ad_sum(t, ad_mul(t, ad_flatten(t, vx), ad_use(t, g))), ad_sum(t, vx));
    cr_assert_eq(ad_backward(t, l, ps, gs), AD_OK, "%s", ad_last_error());
    double want[24];
    for (int i = 0; i < 24; i++)
        want[i] = ts_get(g, i) + 1.0;
    ts_assert_near(ad_grads_get(gs, x), want, 0, "dx");
    ad_tape_free(t);
    ad_grads_free(gs);
    ad_params_free(ps);
    ad_tensor_free(x), ad_tensor_free(g);
}

/* A user rule whose pullback ignores dy (as DFA's hidden layers do): y = x, dX = 2 x. */
static ad_status copy_primal(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    ad_status rc = ad_out(cx, in[0]->dtype, in[0]->ndim, in[0]->shape, out);
    if (rc == AD_OK)
        memcpy((*out)->data, in[0]->data, (size_t)in[0]->size * ad_dtype_size(in[0]->dtype));
    return rc;
}

static ad_status twice_x_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                                  const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)dy, (void)y, (void)beta;
    for (int64_t k = 0; k < in[0]->size; k++)
        ((double *)din[0]->data)[k] = 2.0 * ((const double *)in[0]->data)[k];
    return AD_OK;
}

/* The sweep computes no cotangent for the output of a rule that ignores dy, so a view of
** it gets NULL for dX and must leave it alone. */
Test(views, a_view_of_an_output_whose_rule_ignores_dy_skips_its_dx)
{
    const ad_rule rule = {.name = "copy_ignoring_dy", .pullback = twice_x_pullback,
                          .n_inputs = 1, .flags = AD_RULE_IGNORES_DY};
    cr_assert_eq(ad_rule_register(copy_primal, &rule), AD_OK, "%s", ad_last_error());
    uint64_t rng = 5;
    ad_tensor *x = ts_tensor(AD_F64, 4, TS_SHAPE(2, 3, 2, 2));
    ts_fill_uniform(x, &rng, -1, 1);
    ad_params *ps;
    ad_grads *gs;
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    cr_assert_eq(ad_params_add(ps, x, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(ps, &gs), AD_OK);
    ad_tape *t = new_tape();
    ad_var vx = ad_use(t, x);
    ad_var l = ad_sum(t, ad_reshape(t, ad_flatten(t, ad_call(t, copy_primal, vx)), 1,
                                    TS_SHAPE(-1)));
    cr_assert_eq(ad_backward(t, l, ps, gs), AD_OK, "%s", ad_last_error());
    double want[24];
    for (int i = 0; i < 24; i++)
        want[i] = 2.0 * ts_get(x, i);
    ts_assert_near(ad_grads_get(gs, x), want, 0, "dx");
    ad_tape_free(t);
    ad_grads_free(gs);
    ad_params_free(ps);
    ad_tensor_free(x);
    ad_rule_unregister(copy_primal);
}

/* tanh reads its own output h, which later nodes read only through a view: h must live
** until tanh's pullback, after the view's readers have run. */
CASE(view_read_after_base, ad_sum(t, ad_mul(t, ad_reshape(t, ad_tanh(t, A), 3,
                                                          TS_SHAPE(BATCH, 4, -1)),
                                              ad_reshape(t, ad_tanh(t, A2), 3,
                                                         TS_SHAPE(BATCH, -1, 4)))))
/* A matmul output nobody reads but through a view of a view, then the tail. */
CASE(view_of_view_is_the_only_reader,
     net_tail(t, s, ad_reshape(t, ad_flatten(t, ad_reshape(t, ad_tanh(t, ad_mul(t, A, A)), 3,
                                                             TS_SHAPE(BATCH, 2, -1))),
                               2, TS_SHAPE(BATCH, M))))
/* The base read after its view by a sum of its own (both paths contribute to dA). */
CASE(base_and_view_both_read, ad_add(t, ad_sum(t, ad_mul(t, ad_flatten(t, ad_reshape(t,
                                  ad_sigmoid(t, A), 3, TS_SHAPE(BATCH, 8, 2))), U(target))),
                                  net_tail(t, s, ad_sigmoid(t, A2))))
/* The loss itself a view of sum's output. */
CASE(loss_is_a_view, ad_reshape(t, ad_sum(t, ad_mul(t, ad_tanh(t, A), ad_tanh(t, A2))), 0, NULL))

Test(views, memory_saving_gives_bitwise_the_gradients_of_an_ordinary_sweep)
{
    const struct { const char *name; ad_loss_fn fn; } cases[] = {
        {"view read after base", c_view_read_after_base},
        {"view of a view the only reader", c_view_of_view_is_the_only_reader},
        {"base and view both read", c_base_and_view_both_read},
        {"loss a view", c_loss_is_a_view},
    };
    for (int d = 0; d < 2; d++)
        for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
            net s;
            net_open(&s, d ? AD_F64 : AD_F32, 40 + k);
            run plain = net_sweep(s.g.ps, cases[k].fn, &s, 0, cases[k].name);
            run save = net_sweep(s.g.ps, cases[k].fn, &s, 1, cases[k].name);
            same_grads(s.g.ps, &plain, &save, cases[k].name);
            const ad_tensor *l0 = ad_value(plain.t, plain.loss), *l1 = ad_value(save.t, save.loss);
            cr_assert_not_null(l1, "%s: the loss was reused: %s", cases[k].name, ad_last_error());
            cr_expect_eq(ts_get(l0, 0), ts_get(l1, 0), "%s: loss", cases[k].name);
            run_drop(&plain), run_drop(&save);
            bag_close(&s.g);
        }
}

Test(views, keep_on_a_view_keeps_its_base_and_an_unkept_base_reads_reused_through_both)
{
    for (int keep = 0; keep < 2; keep++) {
        net sn, *s = &sn;
        net_open(s, AD_F32, 9);
        run r = run_open(s->g.ps, 1);
        ad_tape *t = r.t;
        ad_var a = A; /* no pullback reads it but through its view's reader, mul */
        ad_var f = ad_flatten(t, ad_reshape(t, a, 3, TS_SHAPE(BATCH, 4, 4)));
        if (keep)
            cr_assert_eq(ad_keep(t, f), AD_OK, "%s", ad_last_error());
        ad_tensor *before = ts_clone(ad_value(t, a));
        ad_var loss = net_tail(t, s, ad_mul(t, f, f));
        cr_assert_eq(ad_backward(t, loss, s->g.ps, r.gs), AD_OK, "%s", ad_last_error());
        const ad_tensor *va = ad_value(t, a), *vf = ad_value(t, f);
        if (keep) {
            cr_assert(va && vf, "kept: %s", ad_last_error());
            cr_expect_eq(memcmp(va->data, before->data, (size_t)before->size * 4), 0);
        } else {
            cr_expect_null(va, "the base is still readable");
            cr_expect_null(vf, "the view is still readable");
            cr_expect(strstr(ad_last_error(), "ad_keep") != NULL, "%s", ad_last_error());
        }
        ad_tensor_free(before);
        run_drop(&r);
        bag_close(&s->g);
    }
}

static void expect_reshape_fails(const int64_t *xs, int xnd, int ndim, const int64_t *shape,
                                 ad_status code, const char *needle)
{
    ad_tensor *x = ts_tensor(AD_F32, xnd, xs);
    ad_tape *t = new_tape();
    ad_var y = ad_reshape(t, ad_use(t, x), ndim, shape);
    ts_assert_tape_failed(t, y, code, "reshape", needle);
    ad_tape_free(t);
    ad_tensor_free(x);
}

Test(views, bad_shapes_are_named_errors)
{
    expect_reshape_fails(TS_SHAPE(2, 6), 2, 2, TS_SHAPE(5, 2), AD_ERR_SHAPE,
                         "x 2x6 f32 has 12 elements, the new shape 10");
    expect_reshape_fails(TS_SHAPE(2, 6), 2, 2, TS_SHAPE(5, -1), AD_ERR_SHAPE,
                         "multiply to 5");
    expect_reshape_fails(TS_SHAPE(0, 6), 2, 2, TS_SHAPE(0, -1), AD_ERR_SHAPE, "multiply to 0");
    expect_reshape_fails(TS_SHAPE(2, 6), 2, 2, TS_SHAPE(-1, -1), AD_ERR_INVALID,
                         "at most one -1");
    expect_reshape_fails(TS_SHAPE(2, 6), 2, 2, TS_SHAPE(-2, 6), AD_ERR_INVALID, "is -2");
    expect_reshape_fails(TS_SHAPE(2, 6), 2, 5, TS_SHAPE(1, 1, 2, 6, 1), AD_ERR_RANK,
                         "rank 5");
    expect_reshape_fails(TS_SHAPE(2, 6), 2, 2, NULL, AD_ERR_NULL, "attrs is NULL");
    expect_reshape_fails(TS_SHAPE(2, 6), 2, 4,
                         TS_SHAPE((int64_t)1 << 40, (int64_t)1 << 40, 1 << 20, 1),
                         AD_ERR_OVERFLOW, "overflows");
    ad_tensor *v = ts_tensor(AD_F32, 1, TS_SHAPE(6));
    ad_tape *t = new_tape();
    ts_assert_tape_failed(t, ad_flatten(t, ad_use(t, v)), AD_ERR_RANK, "flatten", "rank 1");
    ad_tape_free(t);
    ad_tensor_free(v);
}

/* A user primal misusing ad_out_view in the way *mode says. */
static int mode;
static ad_status misusing_view(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    int64_t n = in[0]->size;
    if (mode == 0)
        return ad_out_view(cx, 1, 1, &n, out);
    if (mode == 1)
        return ad_out_view(cx, 0, 1, (int64_t[]){n + 1}, out);
    ad_status rc = ad_out(cx, in[0]->dtype, 1, &n, out);
    return rc ? rc : ad_out_view(cx, 0, 1, &n, out);
}

static ad_status no_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                             const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)dy, (void)in, (void)y, (void)din, (void)beta;
    return AD_OK;
}

Test(views, ad_out_view_refuses_a_missing_input_another_size_and_a_second_output)
{
    ad_rule r = {.name = "misusing_view", .pullback = no_pullback, .n_inputs = 1};
    cr_assert_eq(ad_rule_register(misusing_view, &r), AD_OK, "%s", ad_last_error());
    ad_tensor *x = ts_tensor(AD_F32, 2, TS_SHAPE(2, 3));
    const struct { ad_status code; const char *needle; } want[] = {
        {AD_ERR_INVALID, "has no input 1"},
        {AD_ERR_SHAPE, "a view of 7 elements of input 0 2x3 f32, which has 6"},
        {AD_ERR_INVALID, "twice"},
    };
    for (mode = 0; mode < 3; mode++) {
        ad_tape *t = new_tape();
        ad_var y = ad_call(t, misusing_view, ad_use(t, x));
        ts_assert_tape_failed(t, y, want[mode].code, "misusing_view", want[mode].needle);
        ad_tape_free(t);
    }
    cr_expect_eq(ad_rule_unregister(misusing_view), AD_OK);
    ad_tensor_free(x);
}
