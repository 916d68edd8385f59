/*
** test_activations.c: tanh, relu and sigmoid: finite-difference checks, forward values
** against math.h in double, saturation without overflow, the dtype error, and
** gradients through the tape against hand-derived values.
*/
#include <criterion/criterion.h>
#include <math.h>

#include "support.h"

static const ad_dtype dtypes[] = {AD_F32, AD_F64};

static double tol_for(ad_dtype dt)
{
    return dt == AD_F32 ? 1e-6 : 1e-14;
}

/* Uniform in [lo, hi), with a random sign when `signed_` (relu needs |x| away from 0). */
static ad_tensor *random_tensor(ad_dtype dt, int ndim, const int64_t *shape, uint64_t *rng,
                                double lo, double hi, int signed_)
{
    ad_tensor *t = ts_tensor(dt, ndim, shape);
    for (int64_t i = 0; i < t->size; i++) {
        double v = ts_uniform(rng, lo, hi);
        ts_set(t, i, signed_ && (ts_next(rng) & 1) ? -v : v);
    }
    ad_tensor_touch(t);
    return t;
}

static const struct {
    int ndim;
    int64_t shape[4];
} shapes[] = {{2, {2, 3}}, {2, {1, 7}}, {4, {2, 1, 3, 2}}, {0, {0}}, {2, {17, 16}}};
#define N_SHAPES ((int)(sizeof shapes / sizeof shapes[0]))

static void check_rule(ad_primal_fn fn, const char *name, const ad_tensor *x)
{
    ad_check_options o = ad_check_defaults();
    o.rtol = 1e-6;
    ad_check_report r = {0};
    ad_status rc = ad_rule_check_as(fn, name, (const ad_tensor *const[]){x}, 1, &o, &r);
    cr_assert_eq(rc, AD_OK, "%s: %s", name, ad_last_error());
    cr_assert_eq(r.slots_checked, 1, "%s: %d slots checked", name, r.slots_checked);
}

Test(activations, tanh_and_sigmoid_pass_finite_difference_check_in_f64)
{
    uint64_t rng = 1;
    for (int s = 0; s < N_SHAPES; s++) {
        ad_tensor *x = random_tensor(AD_F64, shapes[s].ndim, shapes[s].shape, &rng, -2, 2, 0);
        check_rule(ad_op_tanh, "ad_op_tanh", x);
        check_rule(ad_op_sigmoid, "ad_op_sigmoid", x);
        ad_tensor_free(x);
    }
}

Test(activations, relu_passes_finite_difference_check_in_f64_away_from_zero)
{
    uint64_t rng = 2;
    for (int s = 0; s < N_SHAPES; s++) {
        ad_tensor *x = random_tensor(AD_F64, shapes[s].ndim, shapes[s].shape, &rng, 0.1, 1, 1);
        check_rule(ad_op_relu, "ad_op_relu", x);
        ad_tensor_free(x);
    }
}

/* Records op(x) through the wrapper; the value, or a test failure. */
static const ad_tensor *apply(ad_tape *t, ad_var (*wrapper)(ad_tape *, ad_var),
                              const ad_tensor *x)
{
    ad_var y = wrapper(t, ad_use(t, x));
    const ad_tensor *v = ad_value(t, y);
    cr_assert_not_null(v, "%s", ad_tape_error(t));
    cr_assert_eq(v->dtype, x->dtype);
    cr_assert_eq(v->ndim, x->ndim);
    cr_assert_eq(v->size, x->size);
    return v;
}

Test(activations, forward_values_match_math_h_in_f32_and_f64)
{
    uint64_t rng = 3;
    for (int d = 0; d < 2; d++) {
        ad_tensor *x = random_tensor(dtypes[d], 2, TS_SHAPE(4, 5), &rng, -4, 4, 0);
        ad_tape *t;
        cr_assert_eq(ad_tape_new(&t), AD_OK);
        double wt[20], wr[20], ws[20];
        for (int i = 0; i < 20; i++) {
            double v = ts_get(x, i);
            wt[i] = tanh(v);
            wr[i] = v > 0 ? v : 0.0;
            ws[i] = 1.0 / (1.0 + exp(-v));
        }
        ts_assert_near(apply(t, ad_tanh, x), wt, tol_for(dtypes[d]), "tanh");
        ts_assert_near(apply(t, ad_relu, x), wr, tol_for(dtypes[d]), "relu");
        ts_assert_near(apply(t, ad_sigmoid, x), ws, tol_for(dtypes[d]), "sigmoid");
        ad_tape_free(t);
        ad_tensor_free(x);
    }
}

Test(activations, sigmoid_saturates_without_overflow_at_extreme_inputs)
{
    for (int d = 0; d < 2; d++) {
        ad_tensor *x = ts_tensor(dtypes[d], 1, TS_SHAPE(4));
        const double v[] = {-1000.0, -80.0, 80.0, 1000.0};
        for (int i = 0; i < 4; i++)
            ts_set(x, i, v[i]);
        ad_tape *t;
        cr_assert_eq(ad_tape_new(&t), AD_OK);
        const ad_tensor *y = apply(t, ad_sigmoid, x);
        double want[4];
        for (int i = 0; i < 4; i++)
            want[i] = v[i] < 0 ? exp(v[i]) : 1.0; /* exp(-80) < 1e-34 rounds 1 - it to 1 */
        for (int i = 0; i < 4; i++)
            cr_assert(isfinite(ts_get(y, i)), "sigmoid(%g) is %g", v[i], ts_get(y, i));
        ts_assert_near(y, want, 1e-12, "sigmoid at extremes");
        cr_assert_gt(ts_get(y, 1), 0.0, "sigmoid(-80) underflowed to 0");
        ad_tape_free(t);
        ad_tensor_free(x);
    }
}

Test(activations, relu_keeps_nan_and_maps_zero_to_zero)
{
    ad_tensor *x = ts_tensor(AD_F32, 1, TS_SHAPE(3));
    ts_set(x, 0, NAN);
    ts_set(x, 1, 0.0);
    ts_set(x, 2, -2.0);
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    const ad_tensor *y = apply(t, ad_relu, x);
    cr_assert(isnan(ts_get(y, 0)), "relu(NaN) is %g", ts_get(y, 0));
    cr_assert_eq(ts_get(y, 1), 0.0);
    cr_assert_eq(ts_get(y, 2), 0.0);
    ad_tape_free(t);
    ad_tensor_free(x);
}

/* The activations have no errors of their own: their rules refuse non-float inputs. */
Test(activations, int32_input_is_refused_and_left_unchanged)
{
    ad_var (*const wrappers[])(ad_tape *, ad_var) = {ad_tanh, ad_relu, ad_sigmoid};
    for (int k = 0; k < 3; k++) {
        ad_tensor *x = ts_tensor(AD_I32, 1, TS_SHAPE(3));
        for (int i = 0; i < 3; i++)
            ts_set(x, i, i - 1);
        ad_tensor *x0 = ts_clone(x);
        ad_tape *t;
        cr_assert_eq(ad_tape_new(&t), AD_OK);
        ad_var y = wrappers[k](t, ad_use(t, x));
        ts_assert_tape_failed(t, y, AD_ERR_DTYPE, "input 0 has dtype i32", NULL);
        cr_assert_eq(ts_max_abs_diff(x, x0), 0.0);
        ad_tape_free(t);
        ad_tensor_free(x);
        ad_tensor_free(x0);
    }
}

/* ---- gradients through the tape ---- */

/* d/dx sum(wrapper(x)) through ad_backward must equal want. */
static void check_gradient(ad_var (*wrapper)(ad_tape *, ad_var), ad_tensor *x,
                           const double *want, double tol, const char *what)
{
    ad_tape *t;
    ad_params *ps;
    ad_grads *gs;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    cr_assert_eq(ad_params_add(ps, x, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(ps, &gs), AD_OK);
    ad_var loss = ad_sum(t, wrapper(t, ad_use(t, x)));
    cr_assert_eq(ad_backward(t, loss, ps, gs), AD_OK, "%s: %s", what, ad_last_error());
    const ad_tensor *g = ad_grads_get(gs, x);
    cr_assert_not_null(g);
    ts_assert_near(g, want, tol, what);
    ad_grads_free(gs);
    ad_params_free(ps);
    ad_tape_free(t);
}

Test(activations, gradients_through_the_tape_match_hand_derived_formulas)
{
    uint64_t rng = 4;
    for (int d = 0; d < 2; d++) {
        ad_tensor *x = random_tensor(dtypes[d], 2, TS_SHAPE(2, 3), &rng, 0.1, 2, 1);
        double wt[6], wr[6], ws[6];
        for (int i = 0; i < 6; i++) {
            double v = ts_get(x, i), th = tanh(v), sg = 1.0 / (1.0 + exp(-v));
            wt[i] = 1.0 - th * th;
            wr[i] = v > 0 ? 1.0 : 0.0;
            ws[i] = sg * (1.0 - sg);
        }
        double tol = dtypes[d] == AD_F32 ? 1e-6 : 1e-13;
        check_gradient(ad_tanh, x, wt, tol, "d/dx sum(tanh x) = 1 - tanh^2");
        check_gradient(ad_relu, x, wr, tol, "d/dx sum(relu x) = [x > 0]");
        check_gradient(ad_sigmoid, x, ws, tol, "d/dx sum(sigmoid x) = s (1 - s)");
        ad_tensor_free(x);
    }
}
