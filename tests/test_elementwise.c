/*
** test_elementwise.c: add, sub, mul, scale and bias_add: finite-difference checks of
** every rule, forward values against naive loops in f32 and f64, each error, and
** gradients through the tape against hand-derived values.
*/
#include <criterion/criterion.h>
#include <math.h>

#include "support.h"

static const ad_dtype dtypes[] = {AD_F32, AD_F64};

/* f32 results are compared with double references at single-precision tolerance. */
static double tol_for(ad_dtype dt)
{
    return dt == AD_F32 ? 1e-6 : 1e-14;
}

static ad_tensor *random_tensor(ad_dtype dt, int ndim, const int64_t *shape, uint64_t *rng)
{
    ad_tensor *t = ts_tensor(dt, ndim, shape);
    ts_fill_uniform(t, rng, -1.0, 1.0);
    return t;
}

/* ad_rule_check at rtol 1e-6 must pass and compare `slots` input slots. */
#define CHECK_RULE(fn, in, n, attrs_ptr, attrs_sz, slots)                               \
    do {                                                                                \
        ad_check_options o_ = ad_check_defaults();                                      \
        o_.rtol = 1e-6, o_.attrs = (attrs_ptr), o_.attrs_size = (attrs_sz);             \
        ad_check_report r_ = {0};                                                       \
        ad_status rc_ = ad_rule_check(fn, in, n, &o_, &r_);                             \
        cr_assert_eq(rc_, AD_OK, "%s: %s", #fn, ad_last_error());                       \
        cr_assert_eq(r_.slots_checked, (slots), "%s: %d slots checked", #fn,            \
                     r_.slots_checked);                                                 \
    } while (0)

/* Shapes for the elementwise checks: non-square, a batch of 1, rank 3, a scalar, and
** one above the checker's full_limit of 256 so random directions are used too. */
static const struct {
    int ndim;
    int64_t shape[4];
} shapes[] = {{2, {2, 3}}, {2, {1, 5}}, {3, {3, 2, 4}}, {0, {0}}, {2, {20, 15}}};
#define N_SHAPES ((int)(sizeof shapes / sizeof shapes[0]))

Test(elementwise, add_sub_mul_pass_finite_difference_check_in_f64)
{
    uint64_t rng = 11;
    for (int s = 0; s < N_SHAPES; s++) {
        ad_tensor *a = random_tensor(AD_F64, shapes[s].ndim, shapes[s].shape, &rng);
        ad_tensor *b = random_tensor(AD_F64, shapes[s].ndim, shapes[s].shape, &rng);
        const ad_tensor *in[] = {a, b};
        CHECK_RULE(ad_op_add, in, 2, NULL, 0, 2);
        CHECK_RULE(ad_op_sub, in, 2, NULL, 0, 2);
        CHECK_RULE(ad_op_mul, in, 2, NULL, 0, 2);
        ad_tensor_free(a);
        ad_tensor_free(b);
    }
}

Test(elementwise, scale_passes_finite_difference_check_in_f64)
{
    uint64_t rng = 12;
    const double alphas[] = {2.5, -0.75, 0.0};
    for (int s = 0; s < N_SHAPES; s++)
        for (int k = 0; k < 3; k++) {
            ad_tensor *a = random_tensor(AD_F64, shapes[s].ndim, shapes[s].shape, &rng);
            const ad_tensor *in[] = {a};
            ad_scale_attrs at = {alphas[k]};
            CHECK_RULE(ad_op_scale, in, 1, &at, sizeof at, 1);
            ad_tensor_free(a);
        }
}

Test(elementwise, bias_add_passes_finite_difference_check_in_f64)
{
    uint64_t rng = 13;
    const int64_t dims[][2] = {{3, 4}, {1, 5}, {6, 2}, {30, 10}};
    for (int s = 0; s < 4; s++) {
        ad_tensor *x = random_tensor(AD_F64, 2, dims[s], &rng);
        ad_tensor *b = random_tensor(AD_F64, 1, &dims[s][1], &rng);
        const ad_tensor *in[] = {x, b};
        CHECK_RULE(ad_op_bias_add, in, 2, NULL, 0, 2);
        ad_tensor_free(x);
        ad_tensor_free(b);
    }
}

Test(elementwise, add_sub_mul_scale_match_naive_loops_in_f32_and_f64)
{
    uint64_t rng = 21;
    for (int d = 0; d < 2; d++) {
        ad_tensor *a = random_tensor(dtypes[d], 3, TS_SHAPE(2, 3, 4), &rng);
        ad_tensor *b = random_tensor(dtypes[d], 3, TS_SHAPE(2, 3, 4), &rng);
        ad_tape *t;
        cr_assert_eq(ad_tape_new(&t), AD_OK);
        ad_var va = ad_use(t, a), vb = ad_use(t, b);
        ad_var ys[] = {ad_add(t, va, vb), ad_sub(t, va, vb), ad_mul(t, va, vb),
                       ad_scale(t, va, -1.5)};
        double want[4][24];
        for (int64_t i = 0; i < 24; i++) {
            double x = ts_get(a, i), y = ts_get(b, i);
            want[0][i] = x + y;
            want[1][i] = x - y;
            want[2][i] = x * y;
            want[3][i] = -1.5 * x;
        }
        const char *names[] = {"add", "sub", "mul", "scale"};
        for (int k = 0; k < 4; k++) {
            const ad_tensor *y = ad_value(t, ys[k]);
            cr_assert_not_null(y, "%s: %s", names[k], ad_tape_error(t));
            cr_assert_eq(y->dtype, dtypes[d]);
            cr_assert_eq(y->ndim, 3);
            ts_assert_near(y, want[k], tol_for(dtypes[d]), names[k]);
        }
        ad_tape_free(t);
        ad_tensor_free(a);
        ad_tensor_free(b);
    }
}

Test(elementwise, bias_add_adds_b_to_every_row_in_f32_and_f64)
{
    uint64_t rng = 22;
    for (int d = 0; d < 2; d++) {
        ad_tensor *x = random_tensor(dtypes[d], 2, TS_SHAPE(3, 4), &rng);
        ad_tensor *b = random_tensor(dtypes[d], 1, TS_SHAPE(4), &rng);
        ad_tape *t;
        cr_assert_eq(ad_tape_new(&t), AD_OK);
        const ad_tensor *y = ad_value(t, ad_bias_add(t, ad_use(t, x), ad_use(t, b)));
        cr_assert_not_null(y, "%s", ad_tape_error(t));
        double want[12];
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 4; j++)
                want[i * 4 + j] = ts_get(x, i * 4 + j) + ts_get(b, j);
        cr_assert_eq(y->dtype, dtypes[d]);
        ts_assert_near(y, want, tol_for(dtypes[d]), "bias_add");
        ad_tape_free(t);
        ad_tensor_free(x);
        ad_tensor_free(b);
    }
}

/* Records fn on (a, b) through the wrapper and expects a shape error naming both. */
static void expect_shape_error(ad_var (*wrapper)(ad_tape *, ad_var, ad_var),
                               const char *needle1, const char *needle2, ad_tensor *a,
                               ad_tensor *b)
{
    ad_tensor *a0 = ts_clone(a), *b0 = ts_clone(b);
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ad_var y = wrapper(t, ad_use(t, a), ad_use(t, b));
    ts_assert_tape_failed(t, y, AD_ERR_SHAPE, needle1, needle2);
    cr_assert_eq(ts_max_abs_diff(a, a0), 0.0, "first input changed");
    cr_assert_eq(ts_max_abs_diff(b, b0), 0.0, "second input changed");
    ad_tape_free(t);
    ad_tensor_free(a0);
    ad_tensor_free(b0);
}

Test(elementwise, add_sub_mul_of_different_shapes_fail_naming_both_shapes)
{
    uint64_t rng = 31;
    ad_var (*const wrappers[])(ad_tape *, ad_var, ad_var) = {ad_add, ad_sub, ad_mul};
    const char *ops[] = {"add: shapes differ", "sub: shapes differ", "mul: shapes differ"};
    for (int k = 0; k < 3; k++) {
        ad_tensor *a = random_tensor(AD_F64, 2, TS_SHAPE(2, 3), &rng);
        ad_tensor *b = random_tensor(AD_F64, 2, TS_SHAPE(3, 2), &rng);
        expect_shape_error(wrappers[k], ops[k], "2x3 f64 and 3x2 f64", a, b);
        ad_tensor_free(a);
        ad_tensor_free(b);
    }
}

Test(elementwise, add_of_equal_sizes_but_different_ranks_fails)
{
    uint64_t rng = 32;
    ad_tensor *a = random_tensor(AD_F32, 1, TS_SHAPE(6), &rng);
    ad_tensor *b = random_tensor(AD_F32, 2, TS_SHAPE(2, 3), &rng);
    expect_shape_error(ad_add, "add: shapes differ", "2x3 f32", a, b);
    ad_tensor_free(a);
    ad_tensor_free(b);
}

Test(elementwise, bias_add_with_wrong_bias_length_fails_naming_both_shapes)
{
    uint64_t rng = 33;
    ad_tensor *x = random_tensor(AD_F32, 2, TS_SHAPE(2, 3), &rng);
    ad_tensor *b = random_tensor(AD_F32, 1, TS_SHAPE(4), &rng);
    expect_shape_error(ad_bias_add, "bias_add: bias 4 f32", "columns of 2x3 f32", x, b);
    ad_tensor_free(x);
    ad_tensor_free(b);
}

Test(elementwise, bias_add_of_a_rank_1_x_is_refused_by_its_rule)
{
    uint64_t rng = 34;
    ad_tensor *x = random_tensor(AD_F64, 1, TS_SHAPE(3), &rng);
    ad_tensor *b = random_tensor(AD_F64, 1, TS_SHAPE(3), &rng);
    ad_tensor *x0 = ts_clone(x);
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ad_var y = ad_bias_add(t, ad_use(t, x), ad_use(t, b));
    ts_assert_tape_failed(t, y, AD_ERR_RANK, "input 0 has rank 1", NULL);
    cr_assert_eq(ts_max_abs_diff(x, x0), 0.0);
    ad_tape_free(t);
    ad_tensor_free(x);
    ad_tensor_free(x0);
    ad_tensor_free(b);
}

Test(elementwise, add_of_f32_and_f64_is_refused)
{
    ad_tensor *a = ts_tensor(AD_F32, 1, TS_SHAPE(3));
    ad_tensor *b = ts_tensor(AD_F64, 1, TS_SHAPE(3));
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ad_var y = ad_add(t, ad_use(t, a), ad_use(t, b));
    ts_assert_tape_failed(t, y, AD_ERR_DTYPE, "mixed float dtypes", NULL);
    ad_tape_free(t);
    ad_tensor_free(a);
    ad_tensor_free(b);
}

Test(elementwise, scale_recorded_without_attrs_fails_with_attrs_before_it_runs)
{
    uint64_t rng = 35;
    ad_tensor *a = random_tensor(AD_F64, 1, TS_SHAPE(4), &rng);
    ad_tensor *a0 = ts_clone(a);
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ad_var y = ad_call(t, ad_op_scale, ad_use(t, a));
    ts_assert_tape_failed(t, y, AD_ERR_ATTRS, "ad_op_scale (rule \"scale\")",
                          "requires 8 bytes");
    cr_assert_eq(ad_tape_get_stats(t).nodes, 0u);
    cr_assert_eq(ts_max_abs_diff(a, a0), 0.0);
    ad_tape_free(t);
    ad_tensor_free(a);
    ad_tensor_free(a0);
}

/* ---- gradients through the tape ---- */

typedef struct grad_env {
    ad_tape *tape;
    ad_params *ps;
    ad_grads *gs;
} grad_env;

/* A tape and a parameter set holding p[0..n) (NULL entries are skipped). */
static grad_env env_new(ad_tensor *const p[], int n)
{
    grad_env e;
    cr_assert_eq(ad_tape_new(&e.tape), AD_OK);
    cr_assert_eq(ad_params_new(&e.ps), AD_OK);
    for (int i = 0; i < n; i++)
        cr_assert_eq(ad_params_add(e.ps, p[i], NULL), AD_OK);
    cr_assert_eq(ad_grads_new(e.ps, &e.gs), AD_OK);
    return e;
}

static void env_free(grad_env *e)
{
    ad_grads_free(e->gs);
    ad_params_free(e->ps);
    ad_tape_free(e->tape);
}

static const ad_tensor *backward_for(grad_env *e, ad_var loss, const ad_tensor *p)
{
    ad_status rc = ad_backward(e->tape, loss, e->ps, e->gs);
    cr_assert_eq(rc, AD_OK, "ad_backward: %s", ad_last_error());
    const ad_tensor *g = ad_grads_get(e->gs, p);
    cr_assert_not_null(g, "no gradient");
    return g;
}

Test(elementwise, gradient_of_sum_of_products_is_the_other_factor)
{
    uint64_t rng = 41;
    for (int d = 0; d < 2; d++) {
        ad_tensor *a = random_tensor(dtypes[d], 2, TS_SHAPE(2, 3), &rng);
        ad_tensor *b = random_tensor(dtypes[d], 2, TS_SHAPE(2, 3), &rng);
        grad_env e = env_new((ad_tensor *[]){a, b}, 2);
        ad_var loss = ad_sum(e.tape, ad_mul(e.tape, ad_use(e.tape, a), ad_use(e.tape, b)));
        const ad_tensor *ga = backward_for(&e, loss, a), *gb = ad_grads_get(e.gs, b);
        cr_assert_not_null(gb, "b got no gradient");
        double wa[6], wb[6];
        for (int i = 0; i < 6; i++) {
            wa[i] = ts_get(b, i);
            wb[i] = ts_get(a, i);
        }
        ts_assert_near(ga, wa, tol_for(dtypes[d]), "d/da sum(a b)");
        ts_assert_near(gb, wb, tol_for(dtypes[d]), "d/db sum(a b)");
        env_free(&e);
        ad_tensor_free(a);
        ad_tensor_free(b);
    }
}

Test(elementwise, gradient_of_x_times_x_is_two_x)
{
    uint64_t rng = 42;
    ad_tensor *x = random_tensor(AD_F64, 1, TS_SHAPE(5), &rng);
    grad_env e = env_new((ad_tensor *[]){x}, 1);
    ad_var vx = ad_use(e.tape, x);
    const ad_tensor *g = backward_for(&e, ad_sum(e.tape, ad_mul(e.tape, vx, vx)), x);
    double want[5];
    for (int i = 0; i < 5; i++)
        want[i] = 2.0 * ts_get(x, i);
    ts_assert_near(g, want, 1e-14, "d/dx sum(x x)");
    env_free(&e);
    ad_tensor_free(x);
}

/* loss = sum(3 a - b + a): da = 3 + 1 = 4 (two paths accumulate), db = -1. */
Test(elementwise, gradients_of_sub_and_scale_accumulate_over_paths)
{
    uint64_t rng = 43;
    ad_tensor *a = random_tensor(AD_F32, 2, TS_SHAPE(3, 2), &rng);
    ad_tensor *b = random_tensor(AD_F32, 2, TS_SHAPE(3, 2), &rng);
    grad_env e = env_new((ad_tensor *[]){a, b}, 2);
    ad_tape *t = e.tape;
    ad_var va = ad_use(t, a);
    ad_var loss = ad_sum(t, ad_add(t, ad_sub(t, ad_scale(t, va, 3.0), ad_use(t, b)), va));
    const ad_tensor *ga = backward_for(&e, loss, a), *gb = ad_grads_get(e.gs, b);
    cr_assert_not_null(gb, "b got no gradient");
    double four[6] = {4, 4, 4, 4, 4, 4}, minus_one[6] = {-1, -1, -1, -1, -1, -1};
    ts_assert_near(ga, four, 1e-6, "da");
    ts_assert_near(gb, minus_one, 1e-6, "db");
    env_free(&e);
    ad_tensor_free(a);
    ad_tensor_free(b);
}

/* loss = sum(C * (X + 1 b')): dX = C, db_j = sum_i C_ij. */
Test(elementwise, bias_add_gradient_is_column_sums_of_dy)
{
    uint64_t rng = 44;
    for (int d = 0; d < 2; d++) {
        ad_tensor *x = random_tensor(dtypes[d], 2, TS_SHAPE(3, 2), &rng);
        ad_tensor *b = random_tensor(dtypes[d], 1, TS_SHAPE(2), &rng);
        ad_tensor *c = random_tensor(dtypes[d], 2, TS_SHAPE(3, 2), &rng);
        grad_env e = env_new((ad_tensor *[]){x, b}, 2);
        ad_tape *t = e.tape;
        ad_var y = ad_bias_add(t, ad_use(t, x), ad_use(t, b));
        ad_var loss = ad_sum(t, ad_mul(t, ad_use(t, c), y));
        const ad_tensor *gx = backward_for(&e, loss, x), *gb = ad_grads_get(e.gs, b);
        cr_assert_not_null(gb, "b got no gradient");
        double wx[6], wb[2] = {0, 0};
        for (int i = 0; i < 6; i++) {
            wx[i] = ts_get(c, i);
            wb[i % 2] += ts_get(c, i);
        }
        ts_assert_near(gx, wx, tol_for(dtypes[d]), "dX");
        ts_assert_near(gb, wb, tol_for(dtypes[d]), "db");
        env_free(&e);
        ad_tensor_free(x);
        ad_tensor_free(b);
        ad_tensor_free(c);
    }
}
