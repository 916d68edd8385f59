/*
** test_feedback.c: the feedback-learning rules. Each passes ad_rule_check's default
** check with nothing but the inputs (and the attrs a normal call passes); with the
** `expected` option, feedback slots are compared with values written here by loops
** (never the library's kernels), weight slots with finite differences, and the tied
** cases with backprop.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "support.h"

/* ---- naive references for the feedback slots ---- */

/* din[slot] (+)= dY F with F[o][i] = f(k) for k = o * in + i. */
static void naive_dy_times(const ad_tensor *dy, const ad_tensor *w, double (*f)(const ad_tensor *const[], int64_t),
                           const ad_tensor *const in[], ad_tensor *d, float beta)
{
    int64_t n = dy->shape[0], o = w->shape[0], i = w->shape[1];
    for (int64_t r = 0; r < n; r++)
        for (int64_t c = 0; c < i; c++) {
            double s = beta ? ts_get(d, r * i + c) : 0.0;
            for (int64_t a = 0; a < o; a++)
                s += ts_get(dy, r * o + a) * f(in, a * i + c);
            ts_set(d, r * i + c, s);
        }
}

static double feedback_b(const ad_tensor *const in[], int64_t k) { return ts_get(in[2], k); }
static double sign_w(const ad_tensor *const in[], int64_t k)
{
    double w = ts_get(in[0], k);
    return (w > 0) - (w < 0);
}
static double sign_w_mag(const ad_tensor *const in[], int64_t k)
{
    return sign_w(in, k) * fabs(ts_get(in[2], k));
}

/* BioTorch's scaled uSF: sign(W) sqrt(2 / (in + out)). */
static double sign_w_scaled(const ad_tensor *const in[], int64_t k)
{
    return sign_w(in, k) * sqrt(2.0 / (double)(in[0]->shape[0] + in[0]->shape[1]));
}

#define NAIVE_REFERENCE(name, f)                                                        \
    static ad_status name(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],  \
                          const ad_tensor *y, ad_tensor *const din[], const float beta[]) \
    {                                                                                    \
        (void)cx, (void)y;                                                               \
        if (din[1])                                                                      \
            naive_dy_times(dy, in[0], f, in, din[1], beta[1]);                           \
        return AD_OK;                                                                    \
    }
NAIVE_REFERENCE(naive_fa, feedback_b)
NAIVE_REFERENCE(naive_usf, sign_w)
NAIVE_REFERENCE(naive_usf_scaled, sign_w_scaled)
NAIVE_REFERENCE(naive_sf, sign_w_mag)

/* KP's feedback slots: dX = dY B, and dB = dY' X (W's update, by loops). */
static ad_status naive_kp(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                          const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    naive_fa(cx, dy, in, y, din, beta);
    int64_t n = dy->shape[0], o = in[0]->shape[0], i = in[0]->shape[1];
    for (int64_t a = 0; din[2] && a < o; a++)
        for (int64_t c = 0; c < i; c++) {
            double s = beta[2] ? ts_get(din[2], a * i + c) : 0.0;
            for (int64_t r = 0; r < n; r++)
                s += ts_get(dy, r * o + a) * ts_get(in[1], r * i + c);
            ts_set(din[2], a * i + c, s);
        }
    return AD_OK;
}

static ad_tensor *random_f64(int64_t rows, int64_t cols, uint64_t *rng)
{
    ad_tensor *t = ts_tensor(AD_F64, 2, TS_SHAPE(rows, cols));
    ts_fill_uniform(t, rng, -1, 1);
    return t;
}

static const int64_t shapes[3][3] = {{5, 3, 4}, {1, 6, 2}, {7, 4, 9}}; /* batch, in, out */

static void check_dense_rule(ad_primal_fn fn, const char *name, int n_in,
                             ad_pullback_fn expected)
{
    for (int s = 0; s < 3; s++) {
        uint64_t rng = 40 + (uint64_t)s;
        int64_t n = shapes[s][0], i = shapes[s][1], o = shapes[s][2];
        ad_tensor *w = random_f64(o, i, &rng), *x = random_f64(n, i, &rng);
        ad_tensor *b = random_f64(o, i, &rng);
        const ad_tensor *in[3] = {w, x, b};
        ad_check_options opts = ad_check_defaults();
        opts.expected = expected;
        ad_check_report rep = {0};
        ad_status rc = ad_rule_check_as(fn, name, in, n_in, &opts, &rep);
        cr_expect_eq(rc, AD_OK, "%s shape %d: %s", name, s, ad_last_error());
        cr_expect_geq(rep.slots_checked, 2, "%s", name);
        cr_expect_eq(rep.slot[1].method, AD_CHECK_EXPECTED, "%s", name);
        cr_expect_eq(rep.slot[1].passed & AD_CHECKED_VALUES, AD_CHECKED_VALUES, "%s", name);
        ad_tensor_free(w);
        ad_tensor_free(x);
        ad_tensor_free(b);
    }
}

Test(feedback, fa_rule_dw_by_finite_differences_dx_by_naive_b)
{
    check_dense_rule(ad_op_dense_fa, "ad_op_dense_fa", 3, naive_fa);
}

Test(feedback, scaled_usf_rule_dx_is_dy_times_sign_w_times_xaviers_std)
{
    check_dense_rule(ad_op_dense_usf_scaled, "ad_op_dense_usf_scaled", 2, naive_usf_scaled);
}

Test(feedback, usf_scale_is_xaviers_standard_deviation_with_pytorchs_fans)
{
    ad_tensor *fc = ts_tensor(AD_F32, 2, TS_SHAPE(84, 120));
    ad_tensor *conv = ts_tensor(AD_F32, 4, TS_SHAPE(6, 1, 5, 5));
    ad_tensor *vec = ts_tensor(AD_F64, 1, TS_SHAPE(10));
    cr_expect_float_eq(ad_usf_scale(fc), sqrt(2.0 / 204.0), 1e-15);
    cr_expect_float_eq(ad_usf_scale(conv), sqrt(2.0 / (25.0 + 150.0)), 1e-15);
    cr_expect_float_eq(ad_usf_scale(vec), sqrt(0.1), 1e-15);
    cr_expect(isnan(ad_usf_scale(NULL)));
    ad_tensor_free(fc), ad_tensor_free(conv), ad_tensor_free(vec);
}

Test(feedback, usf_rule_dx_is_dy_times_sign_w)
{
    check_dense_rule(ad_op_dense_usf, "ad_op_dense_usf", 2, naive_usf);
}

Test(feedback, sf_rule_dx_is_dy_times_sign_w_times_magnitudes)
{
    check_dense_rule(ad_op_dense_sf, "ad_op_dense_sf", 3, naive_sf);
}

Test(feedback, kp_rule_sends_dy_b_down_and_gives_b_the_update_of_w)
{
    check_dense_rule(ad_op_dense_kp, "ad_op_dense_kp", 3, naive_kp);
}

/* ---- the default check: nothing but the inputs ---- */

/* Runs the default check of fn at inputs in[0..n) and expects it to pass; *rep out. */
static void default_check(ad_primal_fn fn, const char *name, const ad_tensor *const in[],
                          int n, const void *attrs, size_t attrs_size, ad_check_report *rep)
{
    ad_check_options o = ad_check_defaults();
    o.attrs = attrs, o.attrs_size = attrs_size;
    ad_status rc = ad_rule_check_as(fn, name, in, n, attrs ? &o : NULL, rep);
    cr_expect_eq(rc, AD_OK, "%s: %s", name, ad_last_error());
}

Test(feedback, dense_feedback_rules_pass_the_default_check)
{
    for (int s = 0; s < 3; s++) {
        uint64_t rng = 60 + (uint64_t)s;
        int64_t n = shapes[s][0], i = shapes[s][1], o = shapes[s][2];
        ad_tensor *w = random_f64(o, i, &rng), *x = random_f64(n, i, &rng);
        ad_tensor *b = random_f64(o, i, &rng), *m = random_f64(o, i, &rng);
        ad_rng r;
        ad_rng_seed(&r, 5 + (uint64_t)s);
        cr_assert_eq(ad_sf_draw_magnitudes(m, &r), AD_OK);
        const ad_tensor *fa_in[3] = {w, x, b}, *sf_in[3] = {w, x, m};
        ad_check_report rep;
        default_check(ad_op_dense_fa, "ad_op_dense_fa", fa_in, 3, NULL, 0, &rep);
        cr_expect_eq(rep.slot[1].method, AD_CHECK_STRUCTURAL);
        cr_expect_eq(rep.slots_checked, 2);
        default_check(ad_op_dense_usf, "ad_op_dense_usf", fa_in, 2, NULL, 0, &rep);
        cr_expect_eq(rep.slots_checked, 2);
        default_check(ad_op_dense_usf_scaled, "ad_op_dense_usf_scaled", fa_in, 2, NULL, 0,
                      &rep);
        cr_expect_eq(rep.slots_checked, 2);
        cr_expect(rep.slot[1].angle == AD_CHECK_ANGLE_MEASURED &&
                  rep.slot[1].angle_degrees < 60, "scaled uSF angle %g",
                  rep.slot[1].angle_degrees);
        default_check(ad_op_dense_usf, "ad_op_dense_usf", fa_in, 2, NULL, 0, &rep);
        /* Sign symmetry sends dY sign(W): within 90 degrees of backprop's dY W. */
        cr_expect(rep.slot[1].angle == AD_CHECK_ANGLE_MEASURED &&
                  rep.slot[1].angle_degrees < 60, "uSF angle %g", rep.slot[1].angle_degrees);
        /* brSF redraws the magnitudes every batch, frSF keeps them: one rule either way. */
        for (int draw = 0; draw < 2; draw++) {
            default_check(ad_op_dense_sf, "ad_op_dense_sf", sf_in, 3, NULL, 0, &rep);
            cr_expect_eq(rep.slots_checked, 2);
            cr_expect_eq(rep.slot[2].method, AD_CHECK_SKIPPED_NONDIFF);
            cr_assert_eq(ad_sf_draw_magnitudes(m, &r), AD_OK);
        }
        default_check(ad_op_dense_kp, "ad_op_dense_kp", fa_in, 3, NULL, 0, &rep);
        cr_expect_eq(rep.slots_checked, 3);
        cr_expect_eq(rep.slot[2].method, AD_CHECK_STRUCTURAL);
        cr_expect_eq(rep.slot[2].angle, AD_CHECK_ANGLE_ZERO_REFERENCE,
                     "B's true gradient is 0: the angle is not applicable");
        cr_expect(isnan(rep.slot[2].angle_degrees));
        ad_tensor_free(w);
        ad_tensor_free(x);
        ad_tensor_free(b);
        ad_tensor_free(m);
    }
}

Test(feedback, fa_angle_to_backprop_is_zero_only_when_b_is_w)
{
    uint64_t rng = 3;
    ad_tensor *w = random_f64(4, 3, &rng), *x = random_f64(5, 3, &rng);
    ad_tensor *b = random_f64(4, 3, &rng);
    const ad_tensor *in[3] = {w, x, b};
    ad_check_report rep;
    default_check(ad_op_dense_fa, "ad_op_dense_fa", in, 3, NULL, 0, &rep);
    cr_expect_gt(rep.slot[1].angle_degrees, 5.0, "random B: %g", rep.slot[1].angle_degrees);
    cr_assert_eq(ad_tensor_copy_from(b, w), AD_OK);
    default_check(ad_op_dense_fa, "ad_op_dense_fa", in, 3, NULL, 0, &rep);
    cr_expect_lt(rep.slot[1].angle_degrees, 1e-5, "B = W: %g", rep.slot[1].angle_degrees);
    ad_tensor_free(w);
    ad_tensor_free(x);
    ad_tensor_free(b);
}

Test(feedback, dfa_output_rule_passes_the_default_check_with_the_attrs_of_a_call)
{
    uint64_t rng = 8;
    ad_tensor *y = random_f64(6, 3, &rng);
    ad_dfa dfa = {0};
    ad_dfa *attrs = &dfa; /* what ad_dfa_output passes: a struct holding the ad_dfa * */
    ad_check_report rep;
    default_check(ad_op_dfa_output, "ad_op_dfa_output", (const ad_tensor *const[]){y}, 1,
                  &attrs, sizeof attrs, &rep);
    cr_expect_eq(rep.slot[0].method, AD_CHECK_FINITE_DIFFERENCES);
    cr_expect_eq(rep.slots_checked, 1);
    cr_expect_null(dfa.error_, "the probes' recordings cleared e");
    ad_tensor_free(y);
}

/* e B' by loops, into want[rows x units]. */
static void naive_e_bt(const ad_tensor *e, const ad_tensor *b, double *want)
{
    int64_t rows = e->shape[0], outs = e->shape[1], units = b->shape[0];
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < units; j++) {
            double s = 0;
            for (int64_t k = 0; k < outs; k++)
                s += ts_get(e, i * outs + k) * ts_get(b, j * outs + k);
            want[i * units + j] = s;
        }
}

Test(feedback, dfa_hidden_ignores_dy_and_sends_e_times_b_transposed)
{
    uint64_t rng = 9;
    ad_tensor *h = random_f64(6, 5, &rng), *b = random_f64(5, 3, &rng);
    ad_tensor *e = random_f64(6, 3, &rng);
    ad_dfa dfa = {0};
    ad_tape *t;
    ad_params *ps;
    ad_grads *gs;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    cr_assert_eq(ad_params_add(ps, h, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(ps, &gs), AD_OK);
    ad_var y = ad_dfa_hidden(t, &dfa, ad_use(t, h), ad_use(t, b));
    cr_assert(ad_var_ok(y), "%s", ad_tape_error(t));
    cr_expect_eq(ts_max_abs_diff(ad_value(t, y), h), 0.0, "forward is the identity");
    ad_var loss = ad_sum(t, ad_scale(t, y, 3.0)); /* dy = 3 everywhere: must be ignored */
    dfa.error_ = e; /* as an output rule would leave it, after recording cleared it */
    cr_assert_eq(ad_backward(t, loss, ps, gs), AD_OK, "%s", ad_last_error());
    double want[30];
    naive_e_bt(e, b, want);
    const ad_tensor *g = ad_grads_get(gs, h);
    cr_assert_not_null(g);
    for (int k = 0; k < 30; k++)
        cr_expect_float_eq(ts_get(g, k), want[k], 1e-12, "element %d", k);
    cr_expect_null(ad_cotangent(t, y), "the cotangent above the DFA layer was computed");
    ad_grads_free(gs);
    ad_params_free(ps);
    ad_tape_free(t);
    ad_tensor_free(h);
    ad_tensor_free(b);
    ad_tensor_free(e);
}

Test(feedback, dfa_hidden_rule_passes_the_default_check_seeding_e_itself)
{
    uint64_t rng = 12;
    ad_tensor *h = random_f64(6, 5, &rng), *b = random_f64(5, 3, &rng);
    ad_dfa dfa = {0};
    ad_dfa *attrs = &dfa; /* as ad_dfa_hidden passes it; no output rule, no e set here */
    ad_check_report rep;
    default_check(ad_op_dfa_hidden, "ad_op_dfa_hidden", (const ad_tensor *const[]){h, b}, 2,
                  &attrs, sizeof attrs, &rep);
    cr_expect_eq(rep.slots_checked, 1);
    cr_expect_eq(rep.slot[0].method, AD_CHECK_STRUCTURAL);
    cr_expect_eq(rep.slot[0].passed & AD_CHECKED_LINEAR, AD_CHECKED_LINEAR,
                 "linear in the e the checker seeded: 0x%x", rep.slot[0].passed);
    cr_expect_eq(rep.slot[0].angle, AD_CHECK_ANGLE_OWN_SIGNAL);
    cr_expect_eq(rep.slot[1].method, AD_CHECK_SKIPPED_NONDIFF);
    cr_expect_null(dfa.error_, "the checker's e was left in the caller's ad_dfa");
    ad_tensor_free(h);
    ad_tensor_free(b);
}

/* What DFA's hidden slot should be: e B' by loops, e being what the checker seeded
** (read as the rule reads it, through the ad_dfa in the call's attrs); `factor` 2 is a
** wrong expectation. */
static ad_status naive_e_bt_with(ad_ctx *cx, const ad_tensor *const in[],
                                 ad_tensor *const din[], const float beta[], double factor)
{
    ad_dfa *const *attrs = ad_attrs(cx);
    const ad_tensor *e = (*attrs)->error_, *b = in[1];
    int64_t rows = e->shape[0], outs = e->shape[1], units = b->shape[0];
    for (int64_t i = 0; din[0] && i < rows; i++)
        for (int64_t j = 0; j < units; j++) {
            double s = beta[0] ? ts_get(din[0], i * units + j) : 0.0;
            for (int64_t k = 0; k < outs; k++)
                s += factor * ts_get(e, i * outs + k) * ts_get(b, j * outs + k);
            ts_set(din[0], i * units + j, s);
        }
    return AD_OK;
}

static ad_status naive_dfa_hidden(ad_ctx *cx, const ad_tensor *dy,
                                  const ad_tensor *const in[], const ad_tensor *y,
                                  ad_tensor *const din[], const float beta[])
{
    (void)dy, (void)y; /* dy is NULL: the rule ignores it */
    return naive_e_bt_with(cx, in, din, beta, 1.0);
}

static ad_status twice_dfa_hidden(ad_ctx *cx, const ad_tensor *dy,
                                  const ad_tensor *const in[], const ad_tensor *y,
                                  ad_tensor *const din[], const float beta[])
{
    (void)dy, (void)y;
    return naive_e_bt_with(cx, in, din, beta, 2.0);
}

Test(feedback, dfa_hidden_values_are_e_times_b_transposed_by_the_expected_option)
{
    uint64_t rng = 13;
    ad_tensor *h = random_f64(4, 6, &rng), *b = random_f64(6, 2, &rng);
    ad_dfa dfa = {0};
    ad_dfa *attrs = &dfa;
    const ad_tensor *in[2] = {h, b};
    ad_check_options o = ad_check_defaults();
    o.attrs = &attrs, o.attrs_size = sizeof attrs, o.expected = naive_dfa_hidden;
    ad_check_report rep;
    cr_expect_eq(ad_rule_check(ad_op_dfa_hidden, in, 2, &o, &rep), AD_OK, "%s",
                 ad_last_error());
    cr_expect_eq(rep.slot[0].method, AD_CHECK_EXPECTED);
    cr_expect_eq(rep.slot[0].passed & AD_CHECKED_VALUES, AD_CHECKED_VALUES);
    cr_expect_lt(rep.slot[0].max_rel_err, 1e-12, "%g", rep.slot[0].max_rel_err);
    o.expected = twice_dfa_hidden;
    cr_expect_eq(ad_rule_check(ad_op_dfa_hidden, in, 2, &o, &rep), AD_ERR_CHECK_FAILED);
    EXPECT_MENTIONS(ad_last_error(), "dfa hidden", "input 0", "the expected pullback gives");
    cr_expect_null(dfa.error_, "e withdrawn after a failure too");
    ad_tensor_free(h);
    ad_tensor_free(b);
}

Test(feedback, random_signals_are_ninety_degrees_apart)
{
    uint64_t rng = 77;
    ad_tensor *a = ts_tensor(AD_F32, 2, TS_SHAPE(256, 64));
    ad_tensor *b = ts_tensor(AD_F32, 2, TS_SHAPE(256, 64));
    ts_fill_uniform(a, &rng, -1, 1);
    ts_fill_uniform(b, &rng, -1, 1);
    double angle = ad_angle_degrees(a, b);
    cr_expect(fabs(angle - 90.0) <= 5.0, "angle %g", angle);
    cr_expect_float_eq(ad_angle_degrees(a, a), 0.0, 1e-3);
    ad_tensor_fill(b, 0.0);
    cr_expect(isnan(ad_angle_degrees(a, b)));
    ad_tensor_free(a);
    ad_tensor_free(b);
}
