/*
** test_check_feedback.c: ad_rule_check on feedback slots (declared not_gradient), which
** have no ground truth. A correct FA rule written here by naive loops must pass the
** default check with nothing but its inputs, whatever B is; the report must say that
** its dX slot got the structural checks and give the angle between dY B and backprop's
** dY W (checked against numbers computed here). Each bug a feedback pullback can have
** without a formula to compare with (overwriting on beta = 1, non-linearity, writes
** past or before its buffer, different values alone and together, an element left
** unwritten, a write into an input) must still fail the default check. With an expected
** pullback (dY B by a loop written here) the values are compared, and that comparison
** is shown to be real.
*/
#define _POSIX_C_SOURCE 200809L /* open_memstream */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

#define REGISTER(fn, rule)                                                              \
    do {                                                                                \
        if (!ad_rule_find(fn))                                                          \
            cr_assert_eq(ad_rule_register(fn, rule), AD_OK, "%s", ad_last_error());     \
    } while (0)

/* d[i] = v on beta 0 (never reading d[i], which may be NaN), d[i] += v on beta 1. */
static void put(ad_tensor *d, float beta, int64_t i, double v)
{
    ts_set(d, i, beta != 0.0f ? ts_get(d, i) + v : v);
}

/* Y = X W' by naive loops (W: out x in, X: batch x in); B, of W's shape, only feeds the
** pullback. */
static ad_status fa_forward(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    const ad_tensor *w = in[0], *x = in[1], *b = in[2];
    if (x->shape[1] != w->shape[1] || b->shape[0] != w->shape[0] ||
        b->shape[1] != w->shape[1])
        return ad_fail(AD_ERR_SHAPE, "%s: W, X and B do not fit", ad_ctx_op_name(cx));
    int64_t batch = x->shape[0], n_out = w->shape[0], n_in = w->shape[1];
    ad_status rc = ad_out(cx, x->dtype, 2, (int64_t[]){batch, n_out}, out);
    for (int64_t i = 0; rc == AD_OK && i < batch; i++)
        for (int64_t o = 0; o < n_out; o++) {
            double s = 0.0;
            for (int64_t p = 0; p < n_in; p++)
                s += ts_get(x, i * n_in + p) * ts_get(w, o * n_in + p);
            ts_set(*out, i * n_out + o, s);
        }
    return rc;
}

enum fa_bug {
    FB_CORRECT,
    FB_BAD_DW,        /* dW = 2 dY' X: the gradient slot is wrong */
    FB_OVERWRITES,    /* dX = dY B even when beta = 1 */
    FB_NOT_LINEAR,    /* dX = tanh(dY B): an activation applied to the cotangent */
    FB_WRITES_PAST,   /* right values, and one element after the end of dX */
    FB_WRITES_BEFORE, /* right values, and one element before the start of dX */
    FB_ALONE_DIFFERS, /* dX 0.1% larger when dW is asked too */
    FB_UNWRITTEN,     /* dX[0] never written */
    FB_WRITES_INPUT,  /* adds 1 to B[0] */
};

/* FA:  dW = dY' X (the true gradient);  dX = dY B (backprop would send dY W), with
** `bug` planted. */
static void fa_pullback_with(const ad_tensor *dy, const ad_tensor *const in[],
                             ad_tensor *const din[], const float beta[], enum fa_bug bug)
{
    const ad_tensor *w = in[0], *x = in[1], *b = in[2];
    int64_t batch = x->shape[0], n_out = w->shape[0], n_in = w->shape[1];
    for (int64_t o = 0; din[0] && o < n_out; o++)
        for (int64_t p = 0; p < n_in; p++) {
            double s = 0.0;
            for (int64_t i = 0; i < batch; i++)
                s += ts_get(dy, i * n_out + o) * ts_get(x, i * n_in + p);
            put(din[0], beta[0], o * n_in + p, (bug == FB_BAD_DW ? 2.0 : 1.0) * s);
        }
    for (int64_t i = 0; din[1] && i < batch; i++)
        for (int64_t p = 0; p < n_in; p++) {
            double s = 0.0;
            for (int64_t o = 0; o < n_out; o++)
                s += ts_get(dy, i * n_out + o) * ts_get(b, o * n_in + p);
            if (bug == FB_NOT_LINEAR)
                s = tanh(s);
            if (bug == FB_ALONE_DIFFERS && din[0])
                s *= 1.001;
            if (bug == FB_UNWRITTEN && i == 0 && p == 0)
                continue;
            put(din[1], bug == FB_OVERWRITES ? 0.0f : beta[1], i * n_in + p, s);
        }
    /* Inside the checker's guard elements: never past its memory. */
    if (din[1] && bug == FB_WRITES_PAST)
        ((double *)din[1]->data)[din[1]->size] = 0.5;
    if (din[1] && bug == FB_WRITES_BEFORE)
        ((double *)din[1]->data)[-1] = 0.5;
    if (bug == FB_WRITES_INPUT)
        ((double *)b->data)[0] += 1.0;
}

/* A primal (the registry's key) and its pullback per variant; the forwards differ in
** the name they report, so identical-code folding cannot merge them. */
#define FA_VARIANT(name, bug)                                                           \
    static ad_status name(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)     \
    {                                                                                   \
        return fa_forward(cx, in, out);                                                 \
    }                                                                                   \
    static ad_status name##_pullback(ad_ctx *cx, const ad_tensor *dy,                   \
                                     const ad_tensor *const in[], const ad_tensor *y,   \
                                     ad_tensor *const din[], const float beta[])        \
    {                                                                                   \
        (void)cx, (void)y;                                                              \
        fa_pullback_with(dy, in, din, beta, bug);                                       \
        return AD_OK;                                                                   \
    }

FA_VARIANT(fa_dense, FB_CORRECT)
FA_VARIANT(fa_bad_dw, FB_BAD_DW)
FA_VARIANT(fa_overwrites, FB_OVERWRITES)
FA_VARIANT(fa_not_linear, FB_NOT_LINEAR)
FA_VARIANT(fa_writes_past, FB_WRITES_PAST)
FA_VARIANT(fa_writes_before, FB_WRITES_BEFORE)
FA_VARIANT(fa_alone_differs, FB_ALONE_DIFFERS)
FA_VARIANT(fa_unwritten, FB_UNWRITTEN)
FA_VARIANT(fa_writes_input, FB_WRITES_INPUT)
FA_VARIANT(fa_no_reference, FB_CORRECT)
FA_VARIANT(fa_all_feedback, FB_CORRECT)

/* Three rank-2 f64 inputs, B (slot 2) never differentiated, dX (slot 1) feedback, and
** backprop's pullback as the reference (the true gradient). */
#define FA_RULE(rule_name, pb, ref, not_gradient_mask)                                  \
    {.name = (rule_name), .pullback = (pb), .reference = (ref), .n_inputs = 3,          \
     .inputs = {{AD_ACCEPT_F64, AD_RANK(2)}, {AD_ACCEPT_F64, AD_RANK(2)},               \
                {AD_ACCEPT_F64, AD_RANK(2)}},                                           \
     .nondiff = AD_INPUT(2), .not_gradient = (not_gradient_mask)}
#define FA_RULE_OF(fn, rule_name)                                                       \
    static const ad_rule fn##_rule =                                                    \
        FA_RULE(rule_name, fn##_pullback, ad_dense_backprop_pullback, AD_INPUT(1))

FA_RULE_OF(fa_dense, "test FA dense");
FA_RULE_OF(fa_bad_dw, "test FA dense (bad dW)");
FA_RULE_OF(fa_overwrites, "test FA dense (overwrites)");
FA_RULE_OF(fa_not_linear, "test FA dense (tanh of the cotangent)");
FA_RULE_OF(fa_writes_past, "test FA dense (writes past dX)");
FA_RULE_OF(fa_writes_before, "test FA dense (writes before dX)");
FA_RULE_OF(fa_alone_differs, "test FA dense (dX depends on dW being asked)");
FA_RULE_OF(fa_unwritten, "test FA dense (skips dX[0])");
FA_RULE_OF(fa_writes_input, "test FA dense (writes B)");
static const ad_rule fa_no_reference_rule =
    FA_RULE("test FA dense (no reference)", fa_no_reference_pullback, NULL, AD_INPUT(1));
static const ad_rule fa_all_feedback_rule =
    FA_RULE("test FA dense (every slot feedback)", fa_all_feedback_pullback, NULL,
            AD_INPUT(0) | AD_INPUT(1));

typedef struct fa_inputs {
    ad_tensor *w, *x, *b;
    const ad_tensor *in[3];
} fa_inputs;

/* W and B: out x in, X: batch x in, uniform in [-1, 1); B = b_scale W unless 0. */
static fa_inputs fa_inputs_new(int64_t n_out, int64_t n_in, int64_t batch, double b_scale,
                               uint64_t seed)
{
    uint64_t rng = seed;
    fa_inputs f = {ts_tensor(AD_F64, 2, TS_SHAPE(n_out, n_in)),
                   ts_tensor(AD_F64, 2, TS_SHAPE(batch, n_in)),
                   ts_tensor(AD_F64, 2, TS_SHAPE(n_out, n_in)), {0}};
    ts_fill_uniform(f.w, &rng, -1, 1);
    ts_fill_uniform(f.x, &rng, -1, 1);
    ts_fill_uniform(f.b, &rng, -1, 1);
    for (int64_t k = 0; b_scale != 0 && k < f.b->size; k++)
        ts_set(f.b, k, b_scale * ts_get(f.w, k));
    f.in[0] = f.w, f.in[1] = f.x, f.in[2] = f.b;
    return f;
}

static void fa_inputs_free(fa_inputs *f)
{
    ad_tensor_free(f->w);
    ad_tensor_free(f->x);
    ad_tensor_free(f->b);
}

static const unsigned structural = AD_CHECKED_WRITES | AD_CHECKED_ADDS | AD_CHECKED_LINEAR |
                                   AD_CHECKED_ALONE | AD_CHECKED_BOUNDS;

/* The angle in degrees between two flat float64 arrays, by loops. */
static double naive_angle(const ad_tensor *a, const ad_tensor *b)
{
    double dot = 0, aa = 0, bb = 0;
    for (int64_t k = 0; k < a->size; k++) {
        dot += ts_get(a, k) * ts_get(b, k);
        aa += ts_get(a, k) * ts_get(a, k);
        bb += ts_get(b, k) * ts_get(b, k);
    }
    return acos(dot / sqrt(aa * bb)) * 180.0 / acos(-1.0);
}

Test(check_feedback, correct_fa_rule_passes_the_default_check_whatever_b_is)
{
    REGISTER(fa_dense, &fa_dense_rule);
    const int64_t dims[][3] = {{4, 3, 5}, {2, 6, 1}, {12, 25, 16}}; /* out, in, batch */
    for (int s = 0; s < 3; s++) {
        fa_inputs f = fa_inputs_new(dims[s][0], dims[s][1], dims[s][2], 0, 10 + (uint64_t)s);
        ad_check_report rep;
        ad_status rc = ad_rule_check(fa_dense, f.in, 3, NULL, &rep);
        cr_assert_eq(rc, AD_OK, "shape %d: %s", s, ad_last_error());
        cr_expect_eq(rep.slots_checked, 2);
        cr_expect_eq(rep.slot[0].method, AD_CHECK_FINITE_DIFFERENCES);
        cr_expect_eq(rep.slot[0].passed, structural | AD_CHECKED_VALUES);
        cr_expect(rep.slot[0].angle == AD_CHECK_ANGLE_MEASURED &&
                  rep.slot[0].angle_degrees < 1e-5, "dW is the reference's: %g",
                  rep.slot[0].angle_degrees);
        cr_expect_eq(rep.slot[1].method, AD_CHECK_STRUCTURAL);
        cr_expect_eq(rep.slot[1].outcome, AD_CHECK_PASSED);
        cr_expect_eq(rep.slot[1].passed, structural, "0x%x", rep.slot[1].passed);
        cr_expect_eq(rep.slot[1].max_rel_err, 0.0, "nothing to compare values with");
        cr_expect(rep.slot[1].angle == AD_CHECK_ANGLE_MEASURED &&
                  rep.slot[1].angle_degrees > 10 && rep.slot[1].angle_degrees < 170,
                  "dY B against dY W for random B: %g", rep.slot[1].angle_degrees);
        cr_expect_eq(rep.slot[2].method, AD_CHECK_SKIPPED_NONDIFF);
        fa_inputs_free(&f);
    }
}

Test(check_feedback, angle_is_that_of_dy_b_and_dy_w)
{
    REGISTER(fa_dense, &fa_dense_rule);
    /* B = W, 3 W: dY B is dY W up to scale, 0 degrees; B = -W: 180 degrees. */
    const double scales[] = {1.0, 3.0, -1.0}, want[] = {0.0, 0.0, 180.0};
    for (int k = 0; k < 3; k++) {
        fa_inputs f = fa_inputs_new(4, 3, 5, scales[k], 20 + (uint64_t)k);
        ad_check_report rep;
        cr_assert_eq(ad_rule_check(fa_dense, f.in, 3, NULL, &rep), AD_OK, "%s",
                     ad_last_error());
        cr_expect_eq(rep.slot[1].angle, AD_CHECK_ANGLE_MEASURED);
        cr_expect_float_eq(rep.slot[1].angle_degrees, want[k], 1e-5, "B = %g W: %g",
                           scales[k], rep.slot[1].angle_degrees);
        fa_inputs_free(&f);
    }
    /* One output: dX's rows are dY[r] B and dY[r] W, so the angle is B's to W's,
    ** whatever dY the checker drew. */
    fa_inputs f = fa_inputs_new(1, 7, 6, 0, 23);
    ad_check_report rep;
    cr_assert_eq(ad_rule_check(fa_dense, f.in, 3, NULL, &rep), AD_OK, "%s", ad_last_error());
    cr_expect_float_eq(rep.slot[1].angle_degrees, naive_angle(f.b, f.w), 1e-9, "%g vs %g",
                       rep.slot[1].angle_degrees, naive_angle(f.b, f.w));
    fa_inputs_free(&f);
}

Test(check_feedback, feedback_bugs_fail_the_default_check_naming_the_bug)
{
    static const struct {
        ad_primal_fn fn;
        const char *fn_name;
        const ad_rule *rule;
        int slot;
        const char *says;
    } bugs[] = {
        {fa_overwrites, "fa_overwrites", &fa_overwrites_rule, 1, "instead of adding"},
        {fa_not_linear, "fa_not_linear", &fa_not_linear_rule, 1, "not linear"},
        {fa_writes_past, "fa_writes_past", &fa_writes_past_rule, 1, "outside its buffer"},
        {fa_writes_before, "fa_writes_before", &fa_writes_before_rule, 1, "outside its buffer"},
        {fa_alone_differs, "fa_alone_differs", &fa_alone_differs_rule, 1, "asked at once"},
        {fa_unwritten, "fa_unwritten", &fa_unwritten_rule, 1, "element 0 left unwritten"},
        {fa_writes_input, "fa_writes_input", &fa_writes_input_rule, 0, "changed input 2"},
        {fa_bad_dw, "fa_bad_dw", &fa_bad_dw_rule, 0, "finite differences"},
    };
    for (size_t k = 0; k < sizeof bugs / sizeof bugs[0]; k++) {
        if (!ad_rule_find(bugs[k].fn))
            cr_assert_eq(ad_rule_register_as(bugs[k].fn, bugs[k].fn_name, bugs[k].rule, 0),
                         AD_OK, "%s", ad_last_error());
        fa_inputs f = fa_inputs_new(4, 3, 5, 0, 30 + k);
        ad_check_report rep;
        ad_status rc = ad_rule_check_as(bugs[k].fn, bugs[k].fn_name, f.in, 3, NULL, &rep);
        cr_expect_eq(rc, AD_ERR_CHECK_FAILED, "%s: %s", bugs[k].fn_name, ad_status_str(rc));
        char slot[16];
        snprintf(slot, sizeof slot, "input %d", bugs[k].slot);
        EXPECT_MENTIONS(ad_last_error(), bugs[k].rule->name, bugs[k].fn_name, slot,
                        bugs[k].says);
        cr_expect_eq(rep.slot[bugs[k].slot].outcome, AD_CHECK_FAILED, "%s", bugs[k].fn_name);
        fa_inputs_free(&f);
    }
}

/* The test's own dX = dY B (B'*dY for column vectors), by loops over raw doubles: the
** expected value of FA's slot 1, independent of the pullback and the library. */
static ad_status naive_dy_b(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                            const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)y;
    const ad_tensor *b = in[2];
    int64_t n_out = b->shape[0], n_in = b->shape[1], batch = dy->shape[0];
    const double *g = dy->data, *bd = b->data;
    double *d = din[1] ? din[1]->data : NULL;
    for (int64_t i = 0; d && i < batch; i++)
        for (int64_t p = 0; p < n_in; p++) {
            double s = beta[1] != 0.0f ? d[i * n_in + p] : 0.0;
            for (int64_t o = 0; o < n_out; o++)
                s += g[i * n_out + o] * bd[o * n_in + p];
            d[i * n_in + p] = s;
        }
    return AD_OK;
}

/* Backprop's dX = dY W by the same loops: the wrong expectation for FA. */
static ad_status naive_dy_w(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                            const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    const ad_tensor *swapped[3] = {in[0], in[1], in[0]};
    return naive_dy_b(cx, dy, swapped, y, din, beta);
}

/* Writes all of dX but its last element. */
static ad_status naive_dy_b_short(ad_ctx *cx, const ad_tensor *dy,
                                  const ad_tensor *const in[], const ad_tensor *y,
                                  ad_tensor *const din[], const float beta[])
{
    ad_status rc = naive_dy_b(cx, dy, in, y, din, beta);
    if (din[1])
        ((double *)din[1]->data)[din[1]->size - 1] = NAN;
    return rc;
}

Test(check_feedback, expected_pullback_compares_feedback_values_for_real)
{
    REGISTER(fa_dense, &fa_dense_rule);
    ad_check_options o = ad_check_defaults();
    o.expected = naive_dy_b;
    const int64_t dims[][3] = {{4, 3, 5}, {2, 6, 1}, {12, 25, 16}};
    for (int s = 0; s < 3; s++) {
        fa_inputs f = fa_inputs_new(dims[s][0], dims[s][1], dims[s][2], 0, 40 + (uint64_t)s);
        ad_check_report rep;
        cr_assert_eq(ad_rule_check(fa_dense, f.in, 3, &o, &rep), AD_OK, "%s", ad_last_error());
        cr_expect_eq(rep.slot[1].method, AD_CHECK_EXPECTED);
        cr_expect_eq(rep.slot[1].passed, structural | AD_CHECKED_VALUES);
        cr_expect_lt(rep.slot[1].max_rel_err, 1e-12, "%g", rep.slot[1].max_rel_err);
        fa_inputs_free(&f);
    }
    fa_inputs f = fa_inputs_new(4, 3, 5, 0, 45);
    o.expected = naive_dy_w; /* B differs from W: dY B is not dY W */
    cr_expect_eq(ad_rule_check(fa_dense, f.in, 3, &o, NULL), AD_ERR_CHECK_FAILED);
    EXPECT_MENTIONS(ad_last_error(), "test FA dense", "input 1", "the expected pullback gives");
    o.expected = naive_dy_b_short;
    cr_expect_eq(ad_rule_check(fa_dense, f.in, 3, &o, NULL), AD_ERR_CHECK_FAILED);
    EXPECT_MENTIONS(ad_last_error(), "input 1", "expected pullback left element 14 unwritten");
    fa_inputs_free(&f);
}

Test(check_feedback, feedback_rules_without_a_reference_pass_with_no_angle)
{
    REGISTER(fa_no_reference, &fa_no_reference_rule);
    REGISTER(fa_all_feedback, &fa_all_feedback_rule);
    fa_inputs f = fa_inputs_new(4, 3, 5, 0, 50);
    ad_check_report rep;
    cr_assert_eq(ad_rule_check(fa_no_reference, f.in, 3, NULL, &rep), AD_OK, "%s",
                 ad_last_error());
    cr_expect_eq(rep.slot[1].angle, AD_CHECK_ANGLE_NONE);
    cr_expect_eq(rep.slot[1].method, AD_CHECK_STRUCTURAL);
    cr_assert_eq(ad_rule_check(fa_all_feedback, f.in, 3, NULL, &rep), AD_OK, "%s",
                 ad_last_error());
    cr_expect_eq(rep.slot[0].method, AD_CHECK_STRUCTURAL, "declared feedback: no FD");
    cr_expect_eq(rep.slot[1].method, AD_CHECK_STRUCTURAL);
    cr_expect_eq(rep.slots_checked, 2);
    fa_inputs_free(&f);
}

Test(check_feedback, inputs_are_unchanged_after_a_failing_feedback_check)
{
    REGISTER(fa_overwrites, &fa_overwrites_rule);
    fa_inputs f = fa_inputs_new(4, 3, 5, 0, 60);
    ad_tensor *w0 = ts_clone(f.w), *x0 = ts_clone(f.x), *b0 = ts_clone(f.b);
    uint64_t versions[3] = {f.w->version, f.x->version, f.b->version};
    cr_expect_eq(ad_rule_check(fa_overwrites, f.in, 3, NULL, NULL), AD_ERR_CHECK_FAILED);
    cr_expect_eq(ts_max_abs_diff(f.w, w0), 0.0);
    cr_expect_eq(ts_max_abs_diff(f.x, x0), 0.0);
    cr_expect_eq(ts_max_abs_diff(f.b, b0), 0.0);
    cr_expect(f.w->version == versions[0] && f.x->version == versions[1] &&
              f.b->version == versions[2]);
    ad_tensor_free(w0);
    ad_tensor_free(x0);
    ad_tensor_free(b0);
    fa_inputs_free(&f);
}

Test(check_feedback, report_prints_each_slot_with_its_method_checks_and_angle)
{
    REGISTER(fa_dense, &fa_dense_rule);
    fa_inputs f = fa_inputs_new(4, 3, 5, 1.0, 70);
    ad_check_report rep;
    cr_assert_eq(ad_rule_check(fa_dense, f.in, 3, NULL, &rep), AD_OK, "%s", ad_last_error());
    char *text = NULL;
    size_t size = 0;
    FILE *m = open_memstream(&text, &size);
    cr_assert_not_null(m);
    cr_assert_eq(ad_check_report_print(&rep, m), AD_OK, "%s", ad_last_error());
    fclose(m);
    EXPECT_MENTIONS(text, "ad_rule_check fa_dense: 2 of 2 differentiable slots passed",
                    "input 0  finite differences  passed",
                    "writes adds linear alone bounds values",
                    "input 1  structural only (feedback)  passed", "angle 0.0 deg",
                    "input 2  skipped (nondiff)");
    free(text);
    cr_expect_eq(ad_check_report_print(NULL, stdout), AD_ERR_NULL);
    cr_expect_eq(ad_check_report_print(&rep, NULL), AD_ERR_NULL);
    fa_inputs_free(&f);
}
