/*
** test_losses.c: mse and softmax cross-entropy: finite-difference checks, forward
** values against naive formulas in f32 and f64, stability at huge logits, every error,
** forward-only recording, and gradients through the tape against hand-derived values.
*/
#include <criterion/criterion.h>
#include <math.h>

#include "support.h"

static const ad_dtype dtypes[] = {AD_F32, AD_F64};

static ad_tensor *random_tensor(ad_dtype dt, int ndim, const int64_t *shape, uint64_t *rng,
                                double lo, double hi)
{
    ad_tensor *t = ts_tensor(dt, ndim, shape);
    ts_fill_uniform(t, rng, lo, hi);
    return t;
}

static ad_tensor *random_labels(int64_t n, int64_t k, uint64_t *rng)
{
    ad_tensor *l = ts_tensor(AD_I32, 1, (const int64_t[]){n});
    for (int64_t i = 0; i < n; i++)
        ts_set(l, i, (double)(ts_next(rng) % (uint64_t)k));
    return l;
}

static void check_rule(ad_primal_fn fn, const char *name, const ad_tensor *a,
                       const ad_tensor *b)
{
    ad_check_options o = ad_check_defaults();
    o.rtol = 1e-6;
    ad_check_report r = {0};
    ad_status rc = ad_rule_check_as(fn, name, (const ad_tensor *const[]){a, b}, 2, &o, &r);
    cr_assert_eq(rc, AD_OK, "%s: %s", name, ad_last_error());
    cr_assert_eq(r.slots_checked, 1, "%s: %d slots checked (the second is nondiff)", name,
                 r.slots_checked);
}

/* Records wrapper(a, b); the rank-0 value as a double. */
static double loss_on_tape(ad_var (*wrapper)(ad_tape *, ad_var, ad_var), const ad_tensor *a,
                           const ad_tensor *b)
{
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    const ad_tensor *y = ad_value(t, wrapper(t, ad_use(t, a), ad_use(t, b)));
    cr_assert_not_null(y, "%s", ad_tape_error(t));
    cr_assert_eq(y->ndim, 0);
    cr_assert_eq(y->dtype, a->dtype);
    double v = ts_get(y, 0);
    ad_tape_free(t);
    return v;
}

/* Mean over rows of log sum_j e^z_ij - z_i[l_i], unshifted: fine for small logits. */
static double naive_ce(const ad_tensor *z, const ad_tensor *l)
{
    int64_t n = z->shape[0], k = z->shape[1];
    double total = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double s = 0.0;
        for (int64_t j = 0; j < k; j++)
            s += exp(ts_get(z, i * k + j));
        total += log(s) - ts_get(z, i * k + (int64_t)ts_get(l, i));
    }
    return total / (double)n;
}

static void assert_rel(double got, double want, double tol, const char *what)
{
    cr_assert_leq(fabs(got - want), tol * fmax(1.0, fabs(want)), "%s: %.17g, expected %.17g",
                  what, got, want);
}

/* ---- mse ---- */

Test(losses, mse_passes_finite_difference_check_in_f64)
{
    uint64_t rng = 1;
    const struct {
        int ndim;
        int64_t shape[4];
    } shapes[] = {{2, {3, 2}}, {2, {1, 4}}, {3, {2, 3, 4}}, {0, {0}}, {2, {20, 15}}};
    for (int s = 0; s < 5; s++) {
        ad_tensor *p = random_tensor(AD_F64, shapes[s].ndim, shapes[s].shape, &rng, -1, 1);
        ad_tensor *t = random_tensor(AD_F64, shapes[s].ndim, shapes[s].shape, &rng, -1, 1);
        check_rule(ad_op_mse, "ad_op_mse", p, t);
        ad_tensor_free(p);
        ad_tensor_free(t);
    }
}

Test(losses, mse_matches_naive_mean_of_squares_in_f32_and_f64)
{
    uint64_t rng = 2;
    for (int d = 0; d < 2; d++) {
        ad_tensor *p = random_tensor(dtypes[d], 2, TS_SHAPE(3, 5), &rng, -2, 2);
        ad_tensor *t = random_tensor(dtypes[d], 2, TS_SHAPE(3, 5), &rng, -2, 2);
        double want = 0.0;
        for (int i = 0; i < 15; i++)
            want += (ts_get(p, i) - ts_get(t, i)) * (ts_get(p, i) - ts_get(t, i));
        want /= 15.0;
        assert_rel(loss_on_tape(ad_mse, p, t), want, dtypes[d] == AD_F32 ? 1e-6 : 1e-14,
                   "mse");
        ad_tensor_free(p);
        ad_tensor_free(t);
    }
}

Test(losses, mse_of_empty_tensors_is_nan)
{
    ad_tensor *p = ts_tensor(AD_F32, 2, TS_SHAPE(0, 4));
    ad_tensor *t = ts_tensor(AD_F32, 2, TS_SHAPE(0, 4));
    cr_assert(isnan(loss_on_tape(ad_mse, p, t)));
    ad_tensor_free(p);
    ad_tensor_free(t);
}

Test(losses, mse_of_different_shapes_fails_naming_both_shapes)
{
    uint64_t rng = 3;
    ad_tensor *p = random_tensor(AD_F32, 2, TS_SHAPE(2, 3), &rng, -1, 1);
    ad_tensor *t = random_tensor(AD_F32, 2, TS_SHAPE(3, 2), &rng, -1, 1);
    ad_tensor *p0 = ts_clone(p), *t0 = ts_clone(t);
    ad_tape *tape;
    cr_assert_eq(ad_tape_new(&tape), AD_OK);
    ad_var y = ad_mse(tape, ad_use(tape, p), ad_use(tape, t));
    ts_assert_tape_failed(tape, y, AD_ERR_SHAPE, "mse: shapes differ",
                          "2x3 f32 and 3x2 f32");
    cr_assert_eq(ts_max_abs_diff(p, p0), 0.0);
    cr_assert_eq(ts_max_abs_diff(t, t0), 0.0);
    ad_tape_free(tape);
    ad_tensor_free(p);
    ad_tensor_free(t);
    ad_tensor_free(p0);
    ad_tensor_free(t0);
}

/* ---- softmax cross-entropy ---- */

Test(losses, softmax_ce_passes_finite_difference_check_in_f64)
{
    uint64_t rng = 4;
    const int64_t dims[][2] = {{1, 3}, {4, 3}, {3, 5}, {2, 2}, {30, 10}};
    for (int s = 0; s < 5; s++) {
        ad_tensor *z = random_tensor(AD_F64, 2, dims[s], &rng, -3, 3);
        ad_tensor *l = random_labels(dims[s][0], dims[s][1], &rng);
        check_rule(ad_op_softmax_cross_entropy, "ad_op_softmax_cross_entropy", z, l);
        ad_tensor_free(z);
        ad_tensor_free(l);
    }
}

Test(losses, softmax_ce_matches_naive_log_sum_exp_in_f32_and_f64)
{
    uint64_t rng = 5;
    for (int d = 0; d < 2; d++) {
        ad_tensor *z = random_tensor(dtypes[d], 2, TS_SHAPE(4, 3), &rng, -3, 3);
        ad_tensor *l = random_labels(4, 3, &rng);
        assert_rel(loss_on_tape(ad_softmax_cross_entropy, z, l), naive_ce(z, l),
                   dtypes[d] == AD_F32 ? 1e-6 : 1e-14, "softmax_cross_entropy");
        ad_tensor_free(z);
        ad_tensor_free(l);
    }
}

/* Rows (1000, 0, -1000) with labels 0, 1, 2 lose about 0, 1000 and 2000; unshifted,
** e^1000 overflows to inf in both dtypes. */
Test(losses, softmax_ce_is_finite_and_exact_for_huge_logits)
{
    for (int d = 0; d < 2; d++) {
        ad_tensor *z = ts_tensor(dtypes[d], 2, TS_SHAPE(3, 3));
        ad_tensor *l = ts_tensor(AD_I32, 1, TS_SHAPE(3));
        for (int i = 0; i < 3; i++) {
            ts_set(z, i * 3 + 0, 1000.0);
            ts_set(z, i * 3 + 1, 0.0);
            ts_set(z, i * 3 + 2, -1000.0);
            ts_set(l, i, i);
        }
        double loss = loss_on_tape(ad_softmax_cross_entropy, z, l);
        cr_assert(isfinite(loss), "loss is %g", loss);
        assert_rel(loss, 1000.0, 1e-12, "mean of 0, 1000, 2000");
        ad_tensor_free(z);
        ad_tensor_free(l);
    }
}

/* Records softmax_ce(z, l) and expects `code` with both needles in the messages. */
static void expect_ce_error(ad_tensor *z, ad_tensor *l, ad_status code, const char *needle1,
                            const char *needle2)
{
    ad_tensor *z0 = ts_clone(z), *l0 = ts_clone(l);
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ad_var y = ad_softmax_cross_entropy(t, ad_use(t, z), ad_use(t, l));
    ts_assert_tape_failed(t, y, code, needle1, needle2);
    cr_assert_eq(ts_max_abs_diff(z, z0), 0.0, "logits changed");
    cr_assert_eq(ts_max_abs_diff(l, l0), 0.0, "labels changed");
    ad_tape_free(t);
    ad_tensor_free(z0);
    ad_tensor_free(l0);
}

Test(losses, softmax_ce_label_out_of_range_fails_naming_row_and_label)
{
    uint64_t rng = 6;
    const int32_t bad[][3] = {{0, 3, 1}, {-1, 0, 0}, {2, 1, 7}};
    const char *needles[] = {"row 1 has label 3", "row 0 has label -1", "row 2 has label 7"};
    for (int k = 0; k < 3; k++) {
        ad_tensor *z = random_tensor(AD_F64, 2, TS_SHAPE(3, 3), &rng, -1, 1);
        ad_tensor *l = ts_tensor(AD_I32, 1, TS_SHAPE(3));
        for (int i = 0; i < 3; i++)
            ts_set(l, i, bad[k][i]);
        expect_ce_error(z, l, AD_ERR_INVALID, needles[k], "0..2");
        ad_tensor_free(z);
        ad_tensor_free(l);
    }
}

Test(losses, softmax_ce_with_wrong_label_count_fails_naming_both_shapes)
{
    uint64_t rng = 7;
    ad_tensor *z = random_tensor(AD_F32, 2, TS_SHAPE(2, 3), &rng, -1, 1);
    ad_tensor *l = random_labels(3, 3, &rng);
    expect_ce_error(z, l, AD_ERR_SHAPE, "labels 3 i32", "logits 2x3 f32");
    ad_tensor_free(z);
    ad_tensor_free(l);
}

Test(losses, softmax_ce_rule_refuses_float_labels_and_rank_1_logits)
{
    uint64_t rng = 8;
    ad_tensor *z = random_tensor(AD_F64, 2, TS_SHAPE(2, 3), &rng, -1, 1);
    ad_tensor *fl = ts_tensor(AD_F64, 1, TS_SHAPE(2));
    expect_ce_error(z, fl, AD_ERR_DTYPE, "input 1 has dtype f64", NULL);
    ad_tensor *z1 = random_tensor(AD_F64, 1, TS_SHAPE(3), &rng, -1, 1);
    ad_tensor *l = random_labels(1, 3, &rng);
    expect_ce_error(z1, l, AD_ERR_RANK, "input 0 has rank 1", NULL);
    ad_tensor_free(z);
    ad_tensor_free(fl);
    ad_tensor_free(z1);
    ad_tensor_free(l);
}

/* Forward-only recording skips ad_save: the same loss in fewer arena bytes. */
Test(losses, softmax_ce_forward_only_gives_the_same_loss_without_saving)
{
    uint64_t rng = 9;
    ad_tensor *z = random_tensor(AD_F64, 2, TS_SHAPE(8, 10), &rng, -2, 2);
    ad_tensor *l = random_labels(8, 10, &rng);
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    double loss[2];
    size_t used[2];
    for (int mode = 0; mode < 2; mode++) {
        ad_tape_reset(t);
        ad_tape_set_grad_enabled(t, mode);
        ad_var y = ad_softmax_cross_entropy(t, ad_use(t, z), ad_use(t, l));
        cr_assert(ad_var_ok(y), "%s", ad_tape_error(t));
        loss[mode] = ts_get(ad_value(t, y), 0);
        used[mode] = ad_tape_get_stats(t).bytes_used;
    }
    cr_assert_eq(loss[0], loss[1]);
    cr_assert_geq(used[1], used[0] + 80 * sizeof(double), "saving used %zu vs %zu bytes",
                  used[1], used[0]);
    ad_tape_free(t);
    ad_tensor_free(z);
    ad_tensor_free(l);
}

/* ---- gradients through the tape ---- */

/* A copy of the gradient of wrapper(a, b) with respect to a; the parameter set holds
** a, and b too when both_params; *b_got_gradient says whether b got one. */
static ad_tensor *gradient_of(ad_var (*wrapper)(ad_tape *, ad_var, ad_var), ad_tensor *a,
                              ad_tensor *b, int both_params, int *b_got_gradient)
{
    ad_tape *t;
    ad_params *ps;
    ad_grads *gs;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    cr_assert_eq(ad_params_add(ps, a, NULL), AD_OK);
    if (both_params)
        cr_assert_eq(ad_params_add(ps, b, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(ps, &gs), AD_OK);
    ad_var loss = wrapper(t, ad_use(t, a), ad_use(t, b));
    cr_assert_eq(ad_backward(t, loss, ps, gs), AD_OK, "%s", ad_last_error());
    const ad_tensor *g = ad_grads_get(gs, a);
    cr_assert_not_null(g);
    ad_tensor *copy = ts_clone(g);
    *b_got_gradient = both_params && ad_grads_get(gs, b) != NULL;
    ad_grads_free(gs);
    ad_params_free(ps);
    ad_tape_free(t);
    return copy;
}

Test(losses, mse_gradient_is_two_residual_over_n_and_target_gets_none)
{
    uint64_t rng = 10;
    for (int d = 0; d < 2; d++) {
        ad_tensor *p = random_tensor(dtypes[d], 2, TS_SHAPE(2, 3), &rng, -1, 1);
        ad_tensor *t = random_tensor(dtypes[d], 2, TS_SHAPE(2, 3), &rng, -1, 1);
        int target_got;
        ad_tensor *g = gradient_of(ad_mse, p, t, 1, &target_got);
        double want[6];
        for (int i = 0; i < 6; i++)
            want[i] = 2.0 * (ts_get(p, i) - ts_get(t, i)) / 6.0;
        ts_assert_near(g, want, dtypes[d] == AD_F32 ? 1e-6 : 1e-15, "dpred");
        cr_assert(!target_got, "the target is nondiff but got a gradient");
        ad_tensor_free(g);
        ad_tensor_free(p);
        ad_tensor_free(t);
    }
}

Test(losses, softmax_ce_gradient_is_p_minus_onehot_over_n)
{
    const double zv[6] = {0.5, -1.0, 2.0, 0.0, 0.3, -0.7};
    const int32_t lv[2] = {2, 0};
    for (int d = 0; d < 2; d++) {
        ad_tensor *z = ts_tensor(dtypes[d], 2, TS_SHAPE(2, 3));
        ad_tensor *l = ts_tensor(AD_I32, 1, TS_SHAPE(2));
        for (int i = 0; i < 6; i++)
            ts_set(z, i, zv[i]);
        ts_set(l, 0, lv[0]);
        ts_set(l, 1, lv[1]);
        int unused;
        ad_tensor *g = gradient_of(ad_softmax_cross_entropy, z, l, 0, &unused);
        double want[6];
        for (int i = 0; i < 2; i++) {
            double s = 0.0;
            for (int j = 0; j < 3; j++)
                s += exp(zv[i * 3 + j]);
            for (int j = 0; j < 3; j++)
                want[i * 3 + j] = (exp(zv[i * 3 + j]) / s - (j == lv[i])) / 2.0;
        }
        ts_assert_near(g, want, dtypes[d] == AD_F32 ? 1e-6 : 1e-15, "dlogits");
        ad_tensor_free(g);
        ad_tensor_free(z);
        ad_tensor_free(l);
    }
}
