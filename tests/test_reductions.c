/*
** test_reductions.c: sum and mean: finite-difference checks at every rank, forward
** values against naive loops in f32 and f64, double accumulation, empty tensors, the
** dtype error, and gradients through the tape.
*/
#include <criterion/criterion.h>
#include <math.h>

#include "support.h"

static const ad_dtype dtypes[] = {AD_F32, AD_F64};

static ad_tensor *random_tensor(ad_dtype dt, int ndim, const int64_t *shape, uint64_t *rng)
{
    ad_tensor *t = ts_tensor(dt, ndim, shape);
    ts_fill_uniform(t, rng, -1.0, 1.0);
    return t;
}

/* Ranks 0 to 4, non-square, a batch of 1, and one above the checker's full_limit. */
static const struct {
    int ndim;
    int64_t shape[4];
} shapes[] = {{0, {0}},       {1, {7}},          {2, {1, 5}},   {2, {3, 4}},
              {3, {2, 3, 4}}, {4, {1, 2, 1, 3}}, {2, {25, 12}}};
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

Test(reductions, sum_and_mean_pass_finite_difference_check_in_f64_at_every_rank)
{
    uint64_t rng = 1;
    for (int s = 0; s < N_SHAPES; s++) {
        ad_tensor *x = random_tensor(AD_F64, shapes[s].ndim, shapes[s].shape, &rng);
        check_rule(ad_op_sum, "ad_op_sum", x);
        check_rule(ad_op_mean, "ad_op_mean", x);
        ad_tensor_free(x);
    }
}

/* Records wrapper(x); the rank-0 value of x's dtype, as a double. */
static double reduce_on_tape(ad_var (*wrapper)(ad_tape *, ad_var), const ad_tensor *x)
{
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    const ad_tensor *y = ad_value(t, wrapper(t, ad_use(t, x)));
    cr_assert_not_null(y, "%s", ad_tape_error(t));
    cr_assert_eq(y->ndim, 0);
    cr_assert_eq(y->size, 1);
    cr_assert_eq(y->dtype, x->dtype);
    double v = ts_get(y, 0);
    ad_tape_free(t);
    return v;
}

Test(reductions, sum_and_mean_match_naive_loops_in_f32_and_f64)
{
    uint64_t rng = 2;
    for (int d = 0; d < 2; d++)
        for (int s = 0; s < N_SHAPES; s++) {
            ad_tensor *x = random_tensor(dtypes[d], shapes[s].ndim, shapes[s].shape, &rng);
            double want = 0.0;
            for (int64_t i = 0; i < x->size; i++)
                want += ts_get(x, i);
            double tol = dtypes[d] == AD_F32 ? 1e-6 : 1e-13;
            double sum = reduce_on_tape(ad_sum, x), mean = reduce_on_tape(ad_mean, x);
            cr_assert_leq(fabs(sum - want), tol * fmax(1.0, fabs(want)), "sum %g vs %g",
                          sum, want);
            want /= (double)x->size;
            cr_assert_leq(fabs(mean - want), tol * fmax(1.0, fabs(want)), "mean %g vs %g",
                          mean, want);
            ad_tensor_free(x);
        }
}

/* In float, 1e8 + 1 rounds back to 1e8 (the spacing there is 8), so a float running
** sum would stay at 1e8; 1e8 + 1000 is exact in float. */
Test(reductions, sum_accumulates_float32_in_double)
{
    ad_tensor *x = ts_tensor(AD_F32, 1, TS_SHAPE(1001));
    ts_set(x, 0, 1e8);
    for (int i = 1; i <= 1000; i++)
        ts_set(x, i, 1.0);
    cr_assert_eq(reduce_on_tape(ad_sum, x), 100001000.0);
    cr_assert_eq(reduce_on_tape(ad_mean, x), (double)(float)(100001000.0 / 1001.0));
    ad_tensor_free(x);
}

Test(reductions, sum_of_empty_tensor_is_zero_and_mean_is_nan)
{
    for (int d = 0; d < 2; d++) {
        ad_tensor *x = ts_tensor(dtypes[d], 2, TS_SHAPE(0, 3));
        cr_assert_eq(reduce_on_tape(ad_sum, x), 0.0);
        cr_assert(isnan(reduce_on_tape(ad_mean, x)));
        ad_tensor_free(x);
    }
}

/* Sum and mean have no errors of their own: their rules refuse non-float inputs. */
Test(reductions, int32_input_is_refused_and_left_unchanged)
{
    ad_var (*const wrappers[])(ad_tape *, ad_var) = {ad_sum, ad_mean};
    for (int k = 0; k < 2; k++) {
        ad_tensor *x = ts_tensor(AD_I32, 2, TS_SHAPE(2, 2));
        for (int i = 0; i < 4; i++)
            ts_set(x, i, 3 * i - 4);
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

/* d/dx of wrapper(x) through ad_backward must be `want` everywhere. */
static void check_constant_gradient(ad_var (*wrapper)(ad_tape *, ad_var), ad_tensor *x,
                                    double want, double tol)
{
    ad_tape *t;
    ad_params *ps;
    ad_grads *gs;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    cr_assert_eq(ad_params_add(ps, x, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(ps, &gs), AD_OK);
    cr_assert_eq(ad_backward(t, wrapper(t, ad_use(t, x)), ps, gs), AD_OK, "%s",
                 ad_last_error());
    const ad_tensor *g = ad_grads_get(gs, x);
    cr_assert_not_null(g);
    cr_assert_eq(g->size, x->size);
    for (int64_t i = 0; i < g->size; i++)
        cr_assert_leq(fabs(ts_get(g, i) - want), tol, "element %lld: %g, expected %g",
                      (long long)i, ts_get(g, i), want);
    ad_grads_free(gs);
    ad_params_free(ps);
    ad_tape_free(t);
}

Test(reductions, gradient_of_sum_is_one_and_of_mean_is_one_over_n)
{
    uint64_t rng = 3;
    for (int d = 0; d < 2; d++) {
        ad_tensor *x = random_tensor(dtypes[d], 3, TS_SHAPE(2, 3, 1), &rng);
        double tol = dtypes[d] == AD_F32 ? 1e-7 : 1e-16;
        check_constant_gradient(ad_sum, x, 1.0, tol);
        check_constant_gradient(ad_mean, x, 1.0 / 6.0, tol);
        ad_tensor_free(x);
    }
}

Test(reductions, gradient_of_a_rank_0_sum_is_one)
{
    ad_tensor *x = ts_tensor(AD_F64, 0, NULL);
    ts_set(x, 0, 2.5);
    check_constant_gradient(ad_sum, x, 1.0, 0.0);
    check_constant_gradient(ad_mean, x, 1.0, 0.0);
    ad_tensor_free(x);
}
