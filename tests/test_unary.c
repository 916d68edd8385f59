/*
** test_unary.c: exp, log, softplus, leaky relu and stop_gradient: finite-difference
** checks in float64 over ranks 0..4, forward values against math.h, softplus at the
** extremes, log's NaN with and without anomaly mode, leaky relu's attributes, and
** stop_gradient's gradients through the tape against hand-derived values. PyTorch's
** values for the same ops are compared in test_ops_torch.c.
*/
#include <criterion/criterion.h>
#include <math.h>

#include "support.h"

static const struct {
    int ndim;
    int64_t shape[4];
} shapes[] = {{0, {0}}, {1, {5}}, {2, {1, 7}}, {3, {2, 3, 1}}, {4, {1, 3, 1, 2}}};
#define N_SHAPES ((int)(sizeof shapes / sizeof shapes[0]))

/* Uniform in [lo, hi), the sign random when `signed_` (leaky relu: |x| away from 0). */
static ad_tensor *random_tensor(int s, uint64_t *rng, double lo, double hi, int signed_)
{
    ad_tensor *t = ts_tensor(AD_F64, shapes[s].ndim, shapes[s].shape);
    for (int64_t i = 0; i < t->size; i++) {
        double v = ts_uniform(rng, lo, hi);
        ts_set(t, i, signed_ && (ts_next(rng) & 1) ? -v : v);
    }
    ad_tensor_touch(t);
    return t;
}

static void check_rule(ad_primal_fn fn, const char *name, const ad_tensor *x,
                       const void *attrs, size_t attrs_size, int want_slots)
{
    ad_check_options o = ad_check_defaults();
    o.rtol = 1e-6;
    o.attrs = attrs;
    o.attrs_size = attrs_size;
    ad_check_report r = {0};
    ad_status rc = ad_rule_check_as(fn, name, (const ad_tensor *const[]){x}, 1, &o, &r);
    cr_assert_eq(rc, AD_OK, "%s: %s", name, ad_last_error());
    cr_assert_eq(r.slots_checked, want_slots, "%s: %d slots checked", name, r.slots_checked);
}

Test(unary, exp_log_softplus_pass_finite_difference_check_in_f64)
{
    uint64_t rng = 11;
    for (int s = 0; s < N_SHAPES; s++) {
        ad_tensor *x = random_tensor(s, &rng, -3, 3, 0);
        ad_tensor *pos = random_tensor(s, &rng, 0.2, 4, 0);
        ad_tensor *wide = random_tensor(s, &rng, 5, 30, 1); /* both sides of 20, tails */
        check_rule(ad_op_exp, "ad_op_exp", x, NULL, 0, 1);
        check_rule(ad_op_log, "ad_op_log", pos, NULL, 0, 1);
        check_rule(ad_op_softplus, "ad_op_softplus", x, NULL, 0, 1);
        check_rule(ad_op_softplus, "ad_op_softplus", wide, NULL, 0, 1);
        ad_tensor_free(x);
        ad_tensor_free(pos);
        ad_tensor_free(wide);
    }
}

Test(unary, leaky_relu_passes_finite_difference_check_with_default_and_given_slopes)
{
    uint64_t rng = 12;
    const ad_leaky_relu_attrs slopes[] = {{0.2}, {-0.5}, {1.5}};
    for (int s = 0; s < N_SHAPES; s++) {
        ad_tensor *x = random_tensor(s, &rng, 0.1, 2, 1);
        check_rule(ad_op_leaky_relu, "ad_op_leaky_relu", x, NULL, 0, 1);
        for (int k = 0; k < 3; k++)
            check_rule(ad_op_leaky_relu, "ad_op_leaky_relu", x, &slopes[k], sizeof slopes[k],
                       1);
        ad_tensor_free(x);
    }
}

Test(unary, stop_gradient_rule_check_skips_its_nondiff_input)
{
    uint64_t rng = 13;
    ad_tensor *x = random_tensor(3, &rng, -1, 1, 0);
    ad_check_report r = {0};
    cr_assert_eq(ad_rule_check(ad_op_stop_gradient, (const ad_tensor *const[]){x}, 1, NULL,
                               &r), AD_OK, "%s", ad_last_error());
    cr_assert_eq(r.slots_checked, 0);
    cr_assert_eq(r.slot[0].method, AD_CHECK_SKIPPED_NONDIFF);
    ad_tensor_free(x);
}

static const ad_tensor *record(ad_tape *t, ad_var y)
{
    const ad_tensor *v = ad_value(t, y);
    cr_assert_not_null(v, "%s", ad_tape_error(t));
    return v;
}

Test(unary, forward_values_match_math_h_in_f32_and_f64)
{
    const double v[] = {-3.5, -1.0, -0.25, 0.0, 0.5, 2.0, 7.0};
    for (int d = 0; d < 2; d++) {
        ad_dtype dt = d ? AD_F64 : AD_F32;
        double tol = d ? 1e-15 : 1e-6;
        ad_tensor *x = ts_tensor(dt, 1, TS_SHAPE(7)), *p = ts_tensor(dt, 1, TS_SHAPE(7));
        double we[7], wl[7], ws[7], wr[7], wr3[7];
        for (int i = 0; i < 7; i++) {
            ts_set(x, i, v[i]);
            ts_set(p, i, fabs(v[i]) + 0.125);
            we[i] = exp(v[i]);
            wl[i] = log(fabs(v[i]) + 0.125);
            ws[i] = log1p(exp(v[i]));
            wr[i] = v[i] > 0 ? v[i] : 0.01 * v[i];
            wr3[i] = v[i] > 0 ? v[i] : 0.3 * v[i];
        }
        ad_tape *t;
        cr_assert_eq(ad_tape_new(&t), AD_OK);
        ad_var xv = ad_use(t, x);
        ts_assert_near(record(t, ad_exp(t, xv)), we, tol, "exp");
        ts_assert_near(record(t, ad_log(t, ad_use(t, p))), wl, tol, "log");
        ts_assert_near(record(t, ad_softplus(t, xv)), ws, tol, "softplus");
        ts_assert_near(record(t, ad_leaky_relu(t, xv, NULL)), wr, tol, "leaky_relu");
        ts_assert_near(record(t, ad_leaky_relu(t, xv, &(ad_leaky_relu_attrs){0.3})), wr3, tol,
                       "leaky_relu 0.3");
        ts_assert_near(record(t, ad_stop_gradient(t, xv)), v, 0, "stop_gradient");
        ad_tape_free(t);
        ad_tensor_free(x);
        ad_tensor_free(p);
    }
}

Test(unary, softplus_is_finite_and_exact_at_the_extremes_and_the_threshold)
{
    const double v[] = {-1000.0, -100.0, -30.0, 19.5, 20.0, 20.5, 1000.0};
    for (int d = 0; d < 2; d++) {
        ad_dtype dt = d ? AD_F64 : AD_F32;
        ad_tensor *x = ts_tensor(dt, 1, TS_SHAPE(7));
        for (int i = 0; i < 7; i++)
            ts_set(x, i, v[i]);
        ad_tape *t;
        cr_assert_eq(ad_tape_new(&t), AD_OK);
        const ad_tensor *y = record(t, ad_softplus(t, ad_use(t, x)));
        cr_assert_eq(ts_get(y, 0), 0.0, "softplus(-1000) is %g", ts_get(y, 0));
        double e100 = d ? exp(-100.0) : (double)expf(-100.0f); /* denormal or 0 in f32 */
        cr_assert_eq(ts_get(y, 1), e100, "softplus(-100) is %g, want %g", ts_get(y, 1), e100);
        cr_assert_gt(ts_get(y, 2), 0.0, "softplus(-30) underflowed");
        cr_assert_eq(ts_get(y, 5), 20.5, "above the threshold softplus is x");
        cr_assert_eq(ts_get(y, 6), 1000.0, "softplus(1000) is %g", ts_get(y, 6));
        for (int i = 0; i < 7; i++)
            cr_assert(isfinite(ts_get(y, i)), "softplus(%g) is %g", v[i], ts_get(y, i));
        ad_tape_free(t);
        ad_tensor_free(x);
    }
}

/* The loss sum(op(x)), swept to x; x's gradient, copied. */
static double grad_of_sum(ad_var (*op)(ad_tape *, ad_var), double x0, ad_dtype dt)
{
    ad_tensor *x = ts_tensor(dt, 0, NULL);
    ts_set(x, 0, x0);
    ad_params *ps;
    ad_grads *gs;
    ad_tape *t;
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    cr_assert_eq(ad_params_add(ps, x, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(ps, &gs), AD_OK);
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    cr_assert_eq(ad_backward(t, ad_sum(t, op(t, ad_use(t, x))), ps, gs), AD_OK, "%s",
                 ad_last_error());
    double g = ts_get(ad_grads_get(gs, x), 0);
    ad_tape_free(t);
    ad_grads_free(gs);
    ad_params_free(ps);
    ad_tensor_free(x);
    return g;
}

Test(unary, softplus_gradient_is_finite_at_the_extremes_and_one_above_the_threshold)
{
    for (int d = 0; d < 2; d++) {
        ad_dtype dt = d ? AD_F64 : AD_F32;
        cr_assert_eq(grad_of_sum(ad_softplus, 1000.0, dt), 1.0);
        cr_assert_eq(grad_of_sum(ad_softplus, 20.5, dt), 1.0);
        cr_assert_eq(grad_of_sum(ad_softplus, -1000.0, dt), 0.0);
        cr_assert_eq(grad_of_sum(ad_softplus, 0.0, dt), 0.5);
        double g = grad_of_sum(ad_softplus, 19.0, dt);
        cr_assert(fabs(g - 1.0 / (1.0 + exp(-19.0))) < (d ? 1e-15 : 1e-7), "%.17g", g);
    }
}

Test(unary, log_of_a_negative_is_nan_and_in_anomaly_mode_a_named_error)
{
    ad_tensor *x = ts_tensor(AD_F64, 1, TS_SHAPE(3));
    ts_set(x, 0, 2.0);
    ts_set(x, 1, -1.0);
    ts_set(x, 2, 0.0);
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    const ad_tensor *y = record(t, ad_log(t, ad_use(t, x)));
    cr_assert(isnan(ts_get(y, 1)), "log(-1) is %g", ts_get(y, 1));
    cr_assert(isinf(ts_get(y, 2)) && ts_get(y, 2) < 0, "log(0) is %g", ts_get(y, 2));
    ad_tape_reset(t);
    ad_tape_set_anomaly_mode(t, 1);
    ad_tensor *before = ts_clone(x);
    ad_var v = ad_log(t, ad_use(t, x));
    ts_assert_tape_failed(t, v, AD_ERR_NONFINITE, "ad_log", "non-finite element: [1] =");
    cr_assert_eq(ts_max_abs_diff(x, before), 0.0, "x changed");
    ad_tape_free(t);
    ad_tensor_free(x);
    ad_tensor_free(before);
}

Test(unary, leaky_relu_refuses_attributes_of_another_size)
{
    ad_tensor *x = ts_tensor(AD_F32, 1, TS_SHAPE(2));
    ts_set(x, 0, 1.0);
    ts_set(x, 1, -1.0);
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    float slope = 0.5f;
    ad_var y = ad_call_attrs(t, ad_op_leaky_relu, &slope, ad_use(t, x));
    ts_assert_tape_failed(t, y, AD_ERR_ATTRS, "ad_op_leaky_relu", "leaky_relu");
    ad_tape_free(t);
    ad_tensor_free(x);
}

/* w and u: leaves of 3 elements, both parameters, filled with 1, 2, 3 and 4, 5, 6. */
typedef struct sg_fixture {
    ad_tensor *w, *u;
    ad_params *ps;
    ad_grads *gs;
    ad_tape *t;
} sg_fixture;

static void sg_open(sg_fixture *f, ad_dtype dt)
{
    f->w = ts_tensor(dt, 1, TS_SHAPE(3));
    f->u = ts_tensor(dt, 1, TS_SHAPE(3));
    for (int i = 0; i < 3; i++) {
        ts_set(f->w, i, i + 1);
        ts_set(f->u, i, i + 4);
    }
    cr_assert_eq(ad_params_new(&f->ps), AD_OK);
    cr_assert_eq(ad_params_add(f->ps, f->w, NULL), AD_OK);
    cr_assert_eq(ad_params_add(f->ps, f->u, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(f->ps, &f->gs), AD_OK);
    cr_assert_eq(ad_tape_new(&f->t), AD_OK);
}

static void sg_close(sg_fixture *f)
{
    ad_tape_free(f->t);
    ad_grads_free(f->gs);
    ad_params_free(f->ps);
    ad_tensor_free(f->w);
    ad_tensor_free(f->u);
}

Test(unary, stop_gradient_blocks_the_gradient_like_detach)
{
    for (int d = 0; d < 2; d++) {
        sg_fixture f;
        sg_open(&f, d ? AD_F64 : AD_F32);
        ad_tape *t = f.t;
        ad_var w = ad_use(t, f.w), u = ad_use(t, f.u);
        /* L = sum(w * sg(w)) + sum(sg(u) * sg(u)): dL/dw = sg(w) = w; u gets nothing */
        ad_var su = ad_stop_gradient(t, u);
        ad_var loss = ad_add(t, ad_sum(t, ad_mul(t, w, ad_stop_gradient(t, w))),
                             ad_sum(t, ad_mul(t, su, su)));
        cr_assert_eq(ad_backward(t, loss, f.ps, f.gs), AD_OK, "%s", ad_last_error());
        cr_assert_eq(ts_get(record(t, loss), 0), 14.0 + 77.0);
        ts_assert_near(ad_grads_get(f.gs, f.w), (const double[]){1, 2, 3}, 0, "dL/dw");
        cr_assert_null(ad_grads_get(f.gs, f.u), "u is reached only through stop_gradient");
        cr_assert_eq(ad_tape_pullback_count(t, ad_op_stop_gradient), 0u);
        sg_close(&f);
    }
}

Test(unary, a_loss_behind_stop_gradient_alone_gives_no_gradient_and_no_error)
{
    sg_fixture f;
    sg_open(&f, AD_F64);
    ad_tape *t = f.t;
    ad_var loss = ad_sum(t, ad_exp(t, ad_stop_gradient(t, ad_use(t, f.w))));
    cr_assert_eq(ad_backward(t, loss, f.ps, f.gs), AD_OK, "%s", ad_last_error());
    cr_assert_null(ad_grads_get(f.gs, f.w));
    cr_assert_eq(ad_tape_pullback_count(t, ad_op_exp), 0u, "a pullback ran behind the stop");
    sg_close(&f);
}

static ad_var leaky_03(ad_tape *t, ad_var x)
{
    return ad_leaky_relu(t, x, &(ad_leaky_relu_attrs){0.3});
}

static ad_var leaky_default(ad_tape *t, ad_var x)
{
    return ad_leaky_relu(t, x, NULL);
}

Test(unary, gradients_through_the_tape_match_hand_derived_values)
{
    for (int d = 0; d < 2; d++) {
        ad_dtype dt = d ? AD_F64 : AD_F32;
        double tol = d ? 1e-15 : 1e-6;
        cr_assert(fabs(grad_of_sum(ad_exp, 0.5, dt) - exp(0.5)) < tol * exp(0.5));
        cr_assert(fabs(grad_of_sum(ad_log, 0.25, dt) - 4.0) < tol * 4);
        double a = grad_of_sum(ad_exp, -1.25, dt);
        cr_assert(fabs(a - exp(-1.25)) < tol, "%.17g", a);
        cr_assert_eq(grad_of_sum(leaky_03, 2.0, dt), 1.0);
        cr_assert_eq(grad_of_sum(leaky_03, -2.0, dt), (double)(d ? 0.3 : 0.3f));
        cr_assert_eq(grad_of_sum(leaky_03, 0.0, dt), (double)(d ? 0.3 : 0.3f), "slope at 0");
        cr_assert_eq(grad_of_sum(leaky_default, -1.0, dt), (double)(d ? 0.01 : 0.01f));
    }
}
