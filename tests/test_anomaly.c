/*
** test_anomaly.c: anomaly mode (ad_tape_set_anomaly_mode). No built-in op makes a NaN
** from finite inputs, so user functions make them on purpose: a primal that writes
** NaN or Inf into its output, and a pullback that writes Inf into one cotangent. With
** the mode on each is an AD_ERR_NONFINITE naming op, rule, node and buffer; with it
** off the same models run; a clean model's gradients are bitwise the same either way.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "seed_model.h"
#include "support.h"

/* ---- user functions ---- */

/* y = x, except that element 2 is NaN: a forward that goes wrong on its own. */
static ad_status nan_fn(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    ad_status rc = ad_out(cx, in[0]->dtype, in[0]->ndim, in[0]->shape, out);
    for (int64_t i = 0; rc == AD_OK && i < in[0]->size; i++)
        ts_set(*out, i, i == 2 ? NAN : ts_get(in[0], i));
    return rc;
}

/* y = 1 / x elementwise: Inf wherever x is 0. */
static ad_status reciprocal_fn(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    ad_status rc = ad_out(cx, in[0]->dtype, in[0]->ndim, in[0]->shape, out);
    for (int64_t i = 0; rc == AD_OK && i < in[0]->size; i++)
        ts_set(*out, i, 1.0 / ts_get(in[0], i));
    return rc;
}

/* dx = dy: right for nan_fn where it is the identity. */
static ad_status pass_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                               const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)in, (void)y;
    for (int64_t i = 0; din[0] && i < dy->size; i++)
        ts_set(din[0], i, (beta[0] != 0.0f ? ts_get(din[0], i) : 0.0) + ts_get(dy, i));
    return AD_OK;
}

/* y = a + b, finite; its pullback is right for a and writes +Inf into db[1]. */
static ad_status add_fn(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    ad_status rc = ad_out(cx, in[0]->dtype, in[0]->ndim, in[0]->shape, out);
    for (int64_t i = 0; rc == AD_OK && i < in[0]->size; i++)
        ts_set(*out, i, ts_get(in[0], i) + ts_get(in[1], i));
    return rc;
}

static ad_status inf_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                              const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)in, (void)y;
    for (int s = 0; s < 2; s++)
        for (int64_t i = 0; din[s] && i < dy->size; i++) {
            double v = s == 1 && i == 1 ? INFINITY : ts_get(dy, i);
            ts_set(din[s], i, (beta[s] != 0.0f ? ts_get(din[s], i) : 0.0) + v);
        }
    return AD_OK;
}

/* An int32 output whose bit patterns read as float would be Inf and NaN. */
static ad_status bits_fn(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    ad_status rc = ad_out(cx, AD_I32, in[0]->ndim, in[0]->shape, out);
    for (int64_t i = 0; rc == AD_OK && i < in[0]->size; i++)
        ((int32_t *)(*out)->data)[i] = i % 2 ? 0x7f800000 : 0x7fc00001;
    return rc;
}

static const ad_rule nan_rule = {.name = "makes NaN", .pullback = pass_pullback, .n_inputs = 1};
static const ad_rule reciprocal_rule = {
    .name = "reciprocal", .pullback = pass_pullback, .n_inputs = 1};
static const ad_rule inf_rule = {.name = "add, Inf into db", .pullback = inf_pullback,
                                 .n_inputs = 2};
static const ad_rule bits_rule = {.name = "bits", .pullback = pass_pullback, .n_inputs = 1,
                                  .nondiff = AD_INPUT(0)};

static void register_all(void)
{
    cr_assert_eq(ad_rule_register(nan_fn, &nan_rule), AD_OK, "%s", ad_last_error());
    cr_assert_eq(ad_rule_register(reciprocal_fn, &reciprocal_rule), AD_OK);
    cr_assert_eq(ad_rule_register(add_fn, &inf_rule), AD_OK);
    cr_assert_eq(ad_rule_register(bits_fn, &bits_rule), AD_OK);
}

/* ---- a small rig: parameters a and b (2x3), a tape, a gradient set ---- */

typedef struct rig {
    ad_tape *t;
    ad_tensor *a, *b, *a0, *b0; /* a0, b0: copies, to show the sweep never writes a, b */
    ad_params *ps;
    ad_grads *gs;
} rig;

static rig rig_open(ad_dtype dtype, int anomaly)
{
    rig r = {.a = ts_tensor(dtype, 2, TS_SHAPE(2, 3)), .b = ts_tensor(dtype, 2, TS_SHAPE(2, 3))};
    for (int i = 0; i < 6; i++) {
        ts_set(r.a, i, 0.5 * (i - 2));
        ts_set(r.b, i, 0.25 * i + 1);
    }
    r.a0 = ts_clone(r.a);
    r.b0 = ts_clone(r.b);
    register_all();
    cr_assert_eq(ad_tape_new(&r.t), AD_OK);
    ad_tape_set_anomaly_mode(r.t, anomaly);
    cr_assert_eq(ad_params_new(&r.ps), AD_OK);
    cr_assert_eq(ad_params_add(r.ps, r.a, NULL), AD_OK);
    cr_assert_eq(ad_params_add(r.ps, r.b, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(r.ps, &r.gs), AD_OK);
    return r;
}

static void rig_close(rig *r)
{
    cr_expect_eq(ts_max_abs_diff(r->a, r->a0), 0.0, "a changed");
    cr_expect_eq(ts_max_abs_diff(r->b, r->b0), 0.0, "b changed");
    ad_grads_free(r->gs);
    ad_params_free(r->ps);
    ad_tape_free(r->t);
    ad_tensor_free(r->a);
    ad_tensor_free(r->b);
    ad_tensor_free(r->a0);
    ad_tensor_free(r->b0);
}

/* sum(nan_fn(tanh(a))): nan_fn is node 1. */
static ad_var nan_model(rig *r)
{
    return ad_sum(r->t, ad_call(r->t, nan_fn, ad_tanh(r->t, ad_use(r->t, r->a))));
}

/* sum(add_fn(tanh(a), b)): add_fn is node 1, and its pullback writes Inf into db. */
static ad_var inf_grad_model(rig *r)
{
    ad_var h = ad_tanh(r->t, ad_use(r->t, r->a));
    return ad_sum(r->t, ad_call(r->t, add_fn, h, ad_use(r->t, r->b)));
}

static ad_var inf_grad_loss(ad_tape *t, void *user)
{
    rig *r = user;
    cr_assert_eq(t, r->t);
    return inf_grad_model(r);
}

/* ---- the forward value ---- */

Test(anomaly, nan_from_a_user_primal_poisons_the_tape_naming_op_rule_and_index)
{
    rig r = rig_open(AD_F64, 1);
    ad_var loss = nan_model(&r);
    cr_expect_not(ad_var_ok(loss));
    cr_assert_eq(ad_tape_status(r.t), AD_ERR_NONFINITE, "%s", ad_tape_error(r.t));
    EXPECT_MENTIONS(ad_tape_error(r.t), "anomaly", "nan_fn", "rule \"makes NaN\"", "node 1",
                    "forward value", "[2] = nan", "2x3 f64");
    cr_expect_eq(ad_tape_get_stats(r.t).nodes, 1u, "the offending node was recorded");
    cr_expect_eq(ad_backward(r.t, loss, r.ps, r.gs), AD_ERR_NONFINITE);
    EXPECT_MENTIONS(ad_last_error(), "nan_fn", "node 1", "forward value");
    rig_close(&r);
}

Test(anomaly, inf_in_a_float32_forward_value_is_reported_with_its_element)
{
    rig r = rig_open(AD_F32, 1);
    ad_tensor *x = ts_tensor(AD_F32, 1, TS_SHAPE(4));
    float v[4] = {2.0f, 4.0f, 0.0f, 8.0f};
    memcpy(x->data, v, sizeof v);
    ad_var y = ad_call(r.t, reciprocal_fn, ad_use(r.t, x));
    ts_assert_tape_failed(r.t, y, AD_ERR_NONFINITE, "reciprocal_fn", "[2] = inf");
    EXPECT_MENTIONS(ad_tape_error(r.t), "rule \"reciprocal\"", "node 0", "forward value",
                    "4 f32");
    ad_tensor_free(x);
    rig_close(&r);
}

Test(anomaly, non_finite_leaf_is_reported_at_the_first_op_it_reaches)
{
    rig r = rig_open(AD_F32, 1);
    ad_tensor *x = ts_tensor(AD_F32, 1, TS_SHAPE(6));
    ts_set(x, 4, -INFINITY);
    ad_var h = ad_use(r.t, x);
    cr_expect(ad_var_ok(h), "a leaf is not an op and is not checked");
    ts_assert_tape_failed(r.t, ad_scale(r.t, h, 2.0), AD_ERR_NONFINITE, "ad_scale",
                          "[4] = -inf");
    ad_tensor_free(x);
    rig_close(&r);
}

Test(anomaly, int32_values_are_never_checked)
{
    rig r = rig_open(AD_F32, 1);
    ad_var bits = ad_call(r.t, bits_fn, ad_use(r.t, r.a));
    cr_expect(ad_var_ok(bits), "%s", ad_tape_error(r.t));
    ad_tensor *logits = ts_tensor(AD_F32, 2, TS_SHAPE(2, 3));
    ad_tensor *labels = ts_tensor(AD_I32, 1, TS_SHAPE(2));
    ((int32_t *)labels->data)[1] = 2;
    ad_var loss = ad_softmax_cross_entropy(r.t, ad_use(r.t, logits), ad_use(r.t, labels));
    cr_expect_eq(ad_tape_status(r.t), AD_OK, "%s", ad_tape_error(r.t));
    cr_expect_eq(ad_backward(r.t, loss, r.ps, r.gs), AD_OK, "%s", ad_last_error());
    ad_tensor_free(logits);
    ad_tensor_free(labels);
    rig_close(&r);
}

/* ---- the cotangents ---- */

Test(anomaly, inf_written_by_a_user_pullback_is_reported_naming_op_index_and_input)
{
    rig r = rig_open(AD_F64, 1);
    ad_var loss = inf_grad_model(&r);
    cr_assert(ad_var_ok(loss), "%s", ad_tape_error(r.t));
    cr_expect_eq(ad_backward(r.t, loss, r.ps, r.gs), AD_ERR_NONFINITE, "%s", ad_last_error());
    EXPECT_MENTIONS(ad_last_error(), "anomaly", "pullback of add_fn",
                    "rule \"add, Inf into db\"", "node 1", "cotangent of input 1", "[1] = inf",
                    "2x3 f64");
    cr_expect_null(strstr(ad_last_error(), "input 0"), "%s", ad_last_error());
    cr_expect_eq(ad_tape_status(r.t), AD_OK, "a sweep error poisoned the recording");
    rig_close(&r);
}

Test(anomaly, inf_in_a_float32_cotangent_stops_ad_gradient_too)
{
    rig r = rig_open(AD_F32, 1);
    double loss_value = 42.0;
    cr_expect_eq(ad_gradient(r.t, r.ps, inf_grad_loss, &r, r.gs, &loss_value),
                 AD_ERR_NONFINITE);
    EXPECT_MENTIONS(ad_last_error(), "add_fn", "node 1", "cotangent of input 1", "2x3 f32");
    cr_expect_eq(loss_value, 42.0, "a failed ad_gradient wrote the loss");
    rig_close(&r);
}

/* ---- off, and the setting's life ---- */

Test(anomaly, when_off_the_same_models_run_and_keep_their_non_finite_numbers)
{
    rig r = rig_open(AD_F64, 0);
    ad_var loss = nan_model(&r);
    cr_assert(ad_var_ok(loss), "%s", ad_tape_error(r.t));
    cr_expect(isnan(ts_get(ad_value(r.t, loss), 0)));
    cr_expect_eq(ad_backward(r.t, loss, r.ps, r.gs), AD_OK, "%s", ad_last_error());
    ad_tape_reset(r.t);
    loss = inf_grad_model(&r);
    cr_assert_eq(ad_backward(r.t, loss, r.ps, r.gs), AD_OK, "%s", ad_last_error());
    cr_expect(isinf(ts_get(ad_grads_get(r.gs, r.b), 1)), "the Inf was not passed on");
    cr_expect(isfinite(ts_get(ad_grads_get(r.gs, r.b), 0)));
    rig_close(&r);
}

Test(anomaly, is_off_by_default_survives_resets_and_can_be_turned_off)
{
    rig r = rig_open(AD_F64, 0);
    ad_tape *fresh;
    cr_assert_eq(ad_tape_new(&fresh), AD_OK);
    cr_expect(ad_var_ok(ad_call(fresh, nan_fn, ad_use(fresh, r.a))), "on by default");
    ad_tape_free(fresh);
    ad_tape_set_anomaly_mode(r.t, 1);
    ad_tape_reset(r.t);
    cr_expect_not(ad_var_ok(nan_model(&r)));
    cr_expect_eq(ad_tape_status(r.t), AD_ERR_NONFINITE);
    ad_tape_reset(r.t);
    cr_expect_eq(ad_tape_status(r.t), AD_OK);
    cr_expect_not(ad_var_ok(nan_model(&r)), "the mode did not survive a reset");
    ad_tape_set_anomaly_mode(r.t, 0);
    ad_tape_reset(r.t);
    cr_expect(ad_var_ok(nan_model(&r)), "%s", ad_tape_error(r.t));
    ad_tape_set_anomaly_mode(NULL, 1); /* ignored */
    rig_close(&r);
}

/* ---- a clean model ---- */

/* Trains two copies of the seed model (FA rule, and backprop through the built-ins)
** side by side, one tape in anomaly mode: loss, gradients and weights stay bitwise
** equal at every step. */
static void expect_bitwise_same(ad_dtype dtype, ad_loss_fn loss_fn)
{
    if (!ad_rule_find(my_matmul))
        cr_assert_eq(ad_rule_register(my_matmul, &my_matmul_rule), AD_OK);
    seed_model plain, checked;
    seed_model_make(&plain, dtype, 5);
    seed_model_make(&checked, dtype, 5);
    ad_tape *tp, *tc;
    cr_assert_eq(ad_tape_new(&tp), AD_OK);
    cr_assert_eq(ad_tape_new(&tc), AD_OK);
    ad_tape_set_anomaly_mode(tc, 1);
    size_t esize = ad_dtype_size(dtype);
    for (int step = 0; step < 3; step++) {
        double lp, lc;
        cr_assert_eq(ad_gradient(tp, plain.ps, loss_fn, &plain, plain.gs, &lp), AD_OK);
        cr_assert_eq(ad_gradient(tc, checked.ps, loss_fn, &checked, checked.gs, &lc), AD_OK,
                     "%s", ad_last_error());
        cr_expect_eq(memcmp(&lp, &lc, sizeof lp), 0, "step %d: loss %.17g vs %.17g", step,
                     lp, lc);
        for (int l = 0; l < SEED_LAYERS; l++) {
            const ad_tensor *gp = ad_grads_get(plain.gs, plain.W[l]);
            const ad_tensor *gc = ad_grads_get(checked.gs, checked.W[l]);
            cr_assert(gp && gc);
            cr_expect_eq(memcmp(gp->data, gc->data, (size_t)gp->size * esize), 0,
                         "step %d: layer %d's gradient differs", step, l);
        }
        cr_assert_eq(ad_descent_step(plain.ps, plain.gs, 0.1), AD_OK);
        cr_assert_eq(ad_descent_step(checked.ps, checked.gs, 0.1), AD_OK);
    }
    for (int l = 0; l < SEED_LAYERS; l++)
        cr_expect_eq(memcmp(plain.W[l]->data, checked.W[l]->data,
                            (size_t)plain.W[l]->size * esize), 0, "layer %d's weights", l);
    ad_tape_free(tp);
    ad_tape_free(tc);
    seed_model_free(&plain);
    seed_model_free(&checked);
}

Test(anomaly, clean_model_gives_bitwise_the_same_gradients_with_the_mode_on)
{
    expect_bitwise_same(AD_F32, seed_loss);
    expect_bitwise_same(AD_F64, seed_loss);
}

Test(anomaly, clean_builtin_model_gives_bitwise_the_same_gradients_with_the_mode_on)
{
    expect_bitwise_same(AD_F32, seed_loss_backprop);
}
