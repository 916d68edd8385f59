/*
** test_bce.c: binary cross-entropy from logits: finite-difference checks in float64
** for the three reductions over ranks 0..4, values at logits +-1000 against the
** hand-derived formula, and the named errors.
*/
#include <criterion/criterion.h>
#include <math.h>

#include "support.h"

static const struct {
    int ndim;
    int64_t shape[4];
} shapes[] = {{0, {0}}, {1, {5}}, {2, {1, 7}}, {3, {2, 3, 1}}, {4, {1, 3, 1, 2}}};

Test(bce, passes_finite_difference_check_in_f64_for_every_reduction)
{
    uint64_t rng = 21;
    const ad_reduction reds[] = {AD_REDUCTION_NONE, AD_REDUCTION_MEAN, AD_REDUCTION_SUM};
    for (int s = 0; s < 5; s++) {
        ad_tensor *x = ts_tensor(AD_F64, shapes[s].ndim, shapes[s].shape);
        ad_tensor *z = ts_tensor(AD_F64, shapes[s].ndim, shapes[s].shape);
        ts_fill_uniform(x, &rng, -4, 4);
        ts_fill_uniform(z, &rng, 0, 1);
        for (int r = 0; r < 3; r++) {
            ad_check_options o = ad_check_defaults();
            ad_bce_attrs at = {reds[r]};
            o.attrs = &at;
            o.attrs_size = sizeof at;
            ad_check_report rep = {0};
            const ad_tensor *const in[] = {x, z};
            cr_assert_eq(ad_rule_check(ad_op_bce_with_logits, in, 2, &o, &rep), AD_OK, "%s",
                         ad_last_error());
            cr_assert_eq(rep.slots_checked, 1);
        }
        ad_tensor_free(x);
        ad_tensor_free(z);
    }
}

/* max(x, 0) - x z + log1p(e^-|x|), in double */
static double want_l(double x, double z)
{
    return fmax(x, 0) - x * z + log1p(exp(-fabs(x)));
}

Test(bce, is_finite_and_exact_at_logits_of_plus_and_minus_1000)
{
    const double xv[] = {-1000, 1000, -1000, 1000, 0.5, -2};
    const double zv[] = {0, 1, 1, 0, 0.3, 0.75};
    for (int d = 0; d < 2; d++) {
        ad_dtype dt = d ? AD_F64 : AD_F32;
        ad_tensor *x = ts_tensor(dt, 1, TS_SHAPE(6)), *z = ts_tensor(dt, 1, TS_SHAPE(6));
        double want[6], sum = 0;
        for (int i = 0; i < 6; i++) {
            ts_set(x, i, xv[i]);
            ts_set(z, i, zv[i]);
            want[i] = want_l(xv[i], zv[i]);
            sum += want[i];
        }
        ad_tape *t;
        cr_assert_eq(ad_tape_new(&t), AD_OK);
        ad_var xs = ad_use(t, x), zs = ad_use(t, z);
        const ad_tensor *l = ad_value(t, ad_bce_with_logits_ex(t, xs, zs, AD_REDUCTION_NONE));
        cr_assert_not_null(l, "%s", ad_tape_error(t));
        ts_assert_near(l, want, d ? 1e-15 : 1e-6, "bce none");
        const ad_tensor *m = ad_value(t, ad_bce_with_logits(t, xs, zs));
        ts_assert_near(m, (const double[]){sum / 6}, d ? 1e-15 : 1e-6, "bce mean");
        const ad_tensor *s = ad_value(t, ad_bce_with_logits_ex(t, xs, zs, AD_REDUCTION_SUM));
        ts_assert_near(s, (const double[]){sum}, d ? 1e-15 : 1e-6, "bce sum");
        ad_tape_free(t);
        ad_tensor_free(x);
        ad_tensor_free(z);
    }
}

Test(bce, gradient_is_sigmoid_minus_target_over_n_and_finite_at_1000)
{
    const double xv[] = {-1000, 1000, 0.0, 1.5};
    const double zv[] = {1, 0, 0.25, 1};
    ad_tensor *x = ts_tensor(AD_F64, 1, TS_SHAPE(4)), *z = ts_tensor(AD_F64, 1, TS_SHAPE(4));
    double want[4];
    for (int i = 0; i < 4; i++) {
        ts_set(x, i, xv[i]);
        ts_set(z, i, zv[i]);
        want[i] = (1 / (1 + exp(-xv[i])) - zv[i]) / 4;
    }
    ad_params *ps;
    ad_grads *gs;
    ad_tape *t;
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    cr_assert_eq(ad_params_add(ps, x, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(ps, &gs), AD_OK);
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    cr_assert_eq(ad_backward(t, ad_bce_with_logits(t, ad_use(t, x), ad_use(t, z)), ps, gs),
                 AD_OK, "%s", ad_last_error());
    ts_assert_near(ad_grads_get(gs, x), want, 1e-15, "dx");
    ad_tape_free(t);
    ad_grads_free(gs);
    ad_params_free(ps);
    ad_tensor_free(x);
    ad_tensor_free(z);
}

Test(bce, mismatched_shapes_and_a_bad_reduction_are_named_errors)
{
    ad_tensor *x = ts_tensor(AD_F32, 2, TS_SHAPE(2, 3)), *z = ts_tensor(AD_F32, 2, TS_SHAPE(3, 2));
    ts_fill_uniform(x, &(uint64_t){1}, -1, 1);
    ts_fill_uniform(z, &(uint64_t){2}, 0, 1);
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ad_var y = ad_bce_with_logits(t, ad_use(t, x), ad_use(t, z));
    ts_assert_tape_failed(t, y, AD_ERR_SHAPE, "bce_with_logits", "3x2");
    ad_tape_reset(t);
    y = ad_bce_with_logits_ex(t, ad_use(t, x), ad_use(t, x), (ad_reduction)0);
    ts_assert_tape_failed(t, y, AD_ERR_INVALID, "bce_with_logits", "reduction 0");
    ad_tape_free(t);
    ad_tensor_free(x);
    ad_tensor_free(z);
}
