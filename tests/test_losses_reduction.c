/*
** test_losses_reduction.c: softmax cross-entropy's reductions (none, mean, sum):
** float64 finite-difference checks of each, values and shapes against a naive loop
** written here, the empty batch, and refused reductions. The mean's other properties
** (stability, label errors, forward-only) are in test_losses.c.
*/
#include <criterion/criterion.h>
#include <math.h>

#include "support.h"

static const ad_reduction reductions[] = {AD_REDUCTION_NONE, AD_REDUCTION_MEAN,
                                          AD_REDUCTION_SUM};
static const char *const reduction_names[] = {"none", "mean", "sum"};

static ad_tensor *logits(ad_dtype dt, int64_t n, int64_t k, uint64_t *rng)
{
    ad_tensor *z = ts_tensor(dt, 2, TS_SHAPE(n, k));
    ts_fill_uniform(z, rng, -3, 3);
    return z;
}

static ad_tensor *labels(int64_t n, int64_t k, uint64_t *rng)
{
    ad_tensor *l = ts_tensor(AD_I32, 1, TS_SHAPE(n));
    for (int64_t i = 0; i < n; i++)
        ts_set(l, i, (double)(ts_next(rng) % (uint64_t)k));
    return l;
}

/* Row i's loss log sum_j e^z_ij - z_i[l_i], unshifted: fine for these small logits. */
static double naive_row(const ad_tensor *z, const ad_tensor *l, int64_t i)
{
    int64_t k = z->shape[1];
    double s = 0.0;
    for (int64_t j = 0; j < k; j++)
        s += exp(ts_get(z, i * k + j));
    return log(s) - ts_get(z, i * k + (int64_t)ts_get(l, i));
}

Test(losses_reduction, each_reduction_passes_finite_difference_check_in_f64)
{
    uint64_t rng = 21;
    const int64_t dims[][2] = {{1, 3}, {4, 3}, {3, 5}, {2, 2}, {30, 10}};
    for (int r = 0; r < 3; r++)
        for (int s = 0; s < 5; s++) {
            ad_tensor *z = logits(AD_F64, dims[s][0], dims[s][1], &rng);
            ad_tensor *l = labels(dims[s][0], dims[s][1], &rng);
            ad_softmax_ce_attrs at = AD_SOFTMAX_CE_ATTRS_DEFAULT;
            at.reduction = reductions[r];
            ad_check_options o = ad_check_defaults();
            o.attrs = &at, o.attrs_size = sizeof at;
            ad_check_report rep = {0};
            cr_assert_eq(ad_rule_check(ad_op_softmax_cross_entropy,
                                       ((const ad_tensor *const[]){z, l}), 2, &o, &rep),
                         AD_OK, "%s, shape %d: %s", reduction_names[r], s, ad_last_error());
            cr_assert_eq(rep.slots_checked, 1, "%s: labels are nondiff", reduction_names[r]);
            ad_tensor_free(z);
            ad_tensor_free(l);
        }
}

Test(losses_reduction, values_and_shapes_match_a_naive_loop_in_f32_and_f64)
{
    uint64_t rng = 22;
    const ad_dtype dtypes[] = {AD_F32, AD_F64};
    for (int d = 0; d < 2; d++) {
        double tol = dtypes[d] == AD_F32 ? 1e-6 : 1e-14;
        ad_tensor *z = logits(dtypes[d], 5, 4, &rng), *l = labels(5, 4, &rng);
        double rows[5], total = 0.0;
        for (int i = 0; i < 5; i++)
            total += rows[i] = naive_row(z, l, i);
        ad_tape *t;
        cr_assert_eq(ad_tape_new(&t), AD_OK);
        for (int r = 0; r < 3; r++) {
            const ad_tensor *y = ad_value(t, ad_softmax_cross_entropy_ex(
                                                 t, ad_use(t, z), ad_use(t, l), reductions[r]));
            cr_assert_not_null(y, "%s", ad_tape_error(t));
            cr_assert_eq(y->dtype, dtypes[d]);
            if (reductions[r] == AD_REDUCTION_NONE) {
                cr_assert(y->ndim == 1 && y->shape[0] == 5, "none: rank %d", y->ndim);
                ts_assert_near(y, rows, tol, "per-row losses");
            } else {
                cr_assert_eq(y->ndim, 0, "%s: rank %d", reduction_names[r], y->ndim);
                double want = reductions[r] == AD_REDUCTION_MEAN ? total / 5 : total;
                ts_assert_near(y, &want, tol, reduction_names[r]);
            }
        }
        /* The plain form is the mean, bitwise. */
        const ad_tensor *mean = ad_value(t, ad_softmax_cross_entropy(t, ad_use(t, z),
                                                                     ad_use(t, l)));
        const ad_tensor *ex = ad_value(t, ad_softmax_cross_entropy_ex(
                                              t, ad_use(t, z), ad_use(t, l), AD_REDUCTION_MEAN));
        cr_assert(mean && ex && ts_get(mean, 0) == ts_get(ex, 0));
        ad_tape_free(t);
        ad_tensor_free(z);
        ad_tensor_free(l);
    }
}

/* None gives zero losses, sum 0, mean 0/0 = NaN as torch.nn.CrossEntropyLoss does. */
Test(losses_reduction, empty_batch_gives_no_rows_zero_sum_and_nan_mean)
{
    ad_tensor *z = ts_tensor(AD_F64, 2, TS_SHAPE(0, 3)), *l = ts_tensor(AD_I32, 1, TS_SHAPE(0));
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    const ad_tensor *y[3];
    for (int r = 0; r < 3; r++)
        y[r] = ad_value(t, ad_softmax_cross_entropy_ex(t, ad_use(t, z), ad_use(t, l),
                                                       reductions[r]));
    cr_assert(y[0] && y[1] && y[2], "%s", ad_tape_error(t));
    cr_expect(y[0]->ndim == 1 && y[0]->shape[0] == 0 && y[0]->size == 0);
    cr_expect(isnan(ts_get(y[1], 0)));
    cr_expect_eq(ts_get(y[2], 0), 0.0);
    ad_tape_free(t);
    ad_tensor_free(z);
    ad_tensor_free(l);
}

Test(losses_reduction, a_reduction_outside_the_enum_fails_with_invalid_before_any_output)
{
    uint64_t rng = 23;
    ad_tensor *z = logits(AD_F32, 3, 4, &rng), *l = labels(3, 4, &rng);
    ad_tensor *z0 = ts_clone(z);
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    const int bad[] = {0, 4, -1};
    for (int i = 0; i < 3; i++) {
        ad_tape_reset(t);
        char needle[32];
        snprintf(needle, sizeof needle, "reduction %d is not", bad[i]);
        ad_var y = ad_softmax_cross_entropy_ex(t, ad_use(t, z), ad_use(t, l),
                                               (ad_reduction)bad[i]);
        ts_assert_tape_failed(t, y, AD_ERR_INVALID, "ad_softmax_cross_entropy_ex", needle);
        cr_expect_eq(ad_tape_get_stats(t).nodes, 0u);
    }
    /* A zeroed struct is not the default: the default is the initialiser. */
    ad_tape_reset(t);
    ad_softmax_ce_attrs zeroed = {0};
    ts_assert_tape_failed(t, ad_call_attrs(t, ad_op_softmax_cross_entropy, &zeroed,
                                           ad_use(t, z), ad_use(t, l)),
                          AD_ERR_INVALID, "reduction 0", NULL);
    /* Attributes of another type are refused by size. */
    ad_tape_reset(t);
    double wrong = 1.0;
    ts_assert_tape_failed(t, ad_call_attrs(t, ad_op_softmax_cross_entropy, &wrong,
                                           ad_use(t, z), ad_use(t, l)),
                          AD_ERR_ATTRS, "rule \"softmax_cross_entropy\"", "8 bytes given");
    /* No attributes at all: the rule's default, the mean. */
    ad_tape_reset(t);
    const ad_tensor *y = ad_value(t, ad_call(t, ad_op_softmax_cross_entropy, ad_use(t, z),
                                             ad_use(t, l)));
    const ad_tensor *mean = ad_value(t, ad_softmax_cross_entropy(t, ad_use(t, z),
                                                                 ad_use(t, l)));
    cr_assert(y && mean && y->ndim == 0 && ts_get(y, 0) == ts_get(mean, 0));
    cr_expect_eq(ts_max_abs_diff(z, z0), 0.0, "the logits changed");
    ad_tape_free(t);
    ad_tensor_free(z);
    ad_tensor_free(z0);
    ad_tensor_free(l);
}
