/*
** test_check.c: ad_rule_check catches real bugs in gradient slots. Small user primals
** are registered with deliberately broken pullbacks (a wrong factor, one wrong element,
** overwriting on beta = 1, an element left unwritten, a write past the buffer, an
** added constant, a failing status) and each must be refused with a message naming
** the rule, the slot and the element; the correct pullback passes and its report says
** what was checked. Options: defaults from ad_check_defaults(), explicit values as
** given, invalid values refused. Every other error the checker returns, and untouched
** inputs. Feedback slots: test_check_feedback.c.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

#define ASSERT_HAS(msg, needle)                                                         \
    cr_assert(strstr((msg), (needle)) != NULL, "\"%s\" not in: %s", (needle), (msg))

/* Registers once per process (Criterion forks per test, but need not). */
#define REGISTER(fn, rule)                                                              \
    do {                                                                                \
        if (!ad_rule_find(fn))                                                          \
            cr_assert_eq(ad_rule_register(fn, rule), AD_OK, "%s", ad_last_error());     \
    } while (0)

static ad_tensor *random_tensor(ad_dtype dt, int64_t rows, int64_t cols, uint64_t *rng,
                                double lo, double hi)
{
    ad_tensor *t = ts_tensor(dt, 2, TS_SHAPE(rows, cols));
    ts_fill_uniform(t, rng, lo, hi);
    return t;
}

/* d[i] = v on beta 0 (never reading d[i], which may be NaN), d[i] += v on beta 1. */
static void put(ad_tensor *d, float beta, int64_t i, double v)
{
    ts_set(d, i, beta != 0.0f ? ts_get(d, i) + v : v);
}

/* ---- y = a .* x^2 and its pullbacks, correct and broken ---- */

/* A user primal `name` that runs forward(cx, in, out, tag). Each rule needs its own
** function (the registry's key); the distinct tag keeps the bodies distinct under
** identical-code folding. */
#define PRIMAL(name, forward, tag)                                                      \
    static ad_status name(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)     \
    {                                                                                   \
        return forward(cx, in, out, tag);                                               \
    }

/* The forward shared by the square primals; tag only names the variant in errors. */
static ad_status square_forward(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out,
                                int tag)
{
    const ad_tensor *a = in[0], *x = in[1];
    if (a->ndim != x->ndim || a->size != x->size)
        return ad_fail(AD_ERR_SHAPE, "scaled square %d: a and x differ in shape", tag);
    ad_status rc = ad_out(cx, x->dtype, x->ndim, x->shape, out);
    for (int64_t i = 0; rc == AD_OK && i < x->size; i++)
        ts_set(*out, i, ts_get(a, i) * ts_get(x, i) * ts_get(x, i));
    return rc;
}

enum square_bug {
    SQ_CORRECT,
    SQ_WRONG_FACTOR,  /* dx = a x dy: the 2 of d(x^2) forgotten */
    SQ_ONE_ELEMENT,   /* dx[5] off by 0.01 */
    SQ_OVERWRITES,    /* dx = ... even when beta = 1 */
    SQ_UNWRITTEN,     /* dx[2] never written */
    SQ_FAILS,         /* returns an error of its own */
    SQ_WRITES_PAST,   /* right values, and one element past the end of dx */
    SQ_AFFINE,        /* dx = 2 a x dy + 0.001: right at no dy, not linear in it */
};

/* y = a x^2:  da = dy x^2;  dx = 2 a x dy  (unless `bug` says otherwise, in dx only) */
static ad_status square_pullback_with(const ad_tensor *dy, const ad_tensor *const in[],
                                      ad_tensor *const din[], const float beta[],
                                      enum square_bug bug)
{
    const ad_tensor *a = in[0], *x = in[1];
    if (bug == SQ_FAILS)
        return ad_fail(AD_ERR_INVALID, "planted pullback failure");
    for (int64_t i = 0; din[0] && i < a->size; i++)
        put(din[0], beta[0], i, ts_get(dy, i) * ts_get(x, i) * ts_get(x, i));
    for (int64_t i = 0; din[1] && i < x->size; i++) {
        double v = (bug == SQ_WRONG_FACTOR ? 1.0 : 2.0) * ts_get(a, i) * ts_get(x, i) *
                   ts_get(dy, i);
        if (bug == SQ_ONE_ELEMENT && i == 5)
            v += 0.01;
        if (bug == SQ_UNWRITTEN && i == 2)
            continue;
        if (bug == SQ_AFFINE)
            v += 0.001;
        put(din[1], bug == SQ_OVERWRITES ? 0.0f : beta[1], i, v);
    }
    if (bug == SQ_WRITES_PAST && din[1]) /* inside the checker's guard, never past it */
        ((double *)din[1]->data)[x->size] = 1.0;
    return AD_OK;
}

#define SQUARE_VARIANT(primal, bug)                                                     \
    PRIMAL(primal, square_forward, bug)                                                 \
    static ad_status primal##_pullback(ad_ctx *cx, const ad_tensor *dy,                 \
                                       const ad_tensor *const in[], const ad_tensor *y, \
                                       ad_tensor *const din[], const float beta[])      \
    {                                                                                   \
        (void)cx, (void)y;                                                              \
        return square_pullback_with(dy, in, din, beta, bug);                            \
    }

SQUARE_VARIANT(sq_correct, SQ_CORRECT)
SQUARE_VARIANT(sq_wrong_factor, SQ_WRONG_FACTOR)
SQUARE_VARIANT(sq_one_element, SQ_ONE_ELEMENT)
SQUARE_VARIANT(sq_beta_ignored, SQ_OVERWRITES)
SQUARE_VARIANT(sq_skips_one, SQ_UNWRITTEN)
SQUARE_VARIANT(sq_fails, SQ_FAILS)
SQUARE_VARIANT(sq_writes_past, SQ_WRITES_PAST)
SQUARE_VARIANT(sq_affine, SQ_AFFINE)

/* The correct pullback once more, under a rule that never differentiates a; the failing
** one under a rule that differentiates nothing. */
PRIMAL(sq_const_a, square_forward, 100)
PRIMAL(sq_all_const, square_forward, 101)

/* The square rules: two float inputs of any rank. */
#define SQ_RULE(rule_name, pb, nondiff_mask)                                            \
    {.name = (rule_name), .pullback = (pb), .n_inputs = 2, .nondiff = (nondiff_mask)}
static const ad_rule sq_correct_rule = SQ_RULE("scaled square", sq_correct_pullback, 0);
static const ad_rule sq_wrong_factor_rule =
    SQ_RULE("scaled square (wrong factor)", sq_wrong_factor_pullback, 0);
static const ad_rule sq_one_element_rule =
    SQ_RULE("scaled square (one wrong element)", sq_one_element_pullback, 0);
static const ad_rule sq_beta_ignored_rule =
    SQ_RULE("scaled square (beta ignored)", sq_beta_ignored_pullback, 0);
static const ad_rule sq_skips_one_rule =
    SQ_RULE("scaled square (skips one)", sq_skips_one_pullback, 0);
static const ad_rule sq_fails_rule = SQ_RULE("scaled square (fails)", sq_fails_pullback, 0);
static const ad_rule sq_writes_past_rule =
    SQ_RULE("scaled square (writes past dx)", sq_writes_past_pullback, 0);
static const ad_rule sq_affine_rule = SQ_RULE("scaled square (affine)", sq_affine_pullback, 0);
static const ad_rule sq_const_a_rule =
    SQ_RULE("scaled square (a constant)", sq_correct_pullback, AD_INPUT(0));
static const ad_rule sq_all_const_rule =
    SQ_RULE("scaled square (all constant)", sq_fails_pullback, AD_INPUT(0) | AD_INPUT(1));

/* Inputs for the square rules: a in [0.5, 1.5], x in [0.5, 1.5] so that every element
** of dx is well away from 0 and a wrong value cannot hide inside atol. */
typedef struct square_inputs {
    ad_tensor *a, *x;
    const ad_tensor *in[2];
} square_inputs;

static square_inputs square_inputs_new(int64_t rows, int64_t cols, uint64_t seed)
{
    uint64_t rng = seed;
    square_inputs s;
    s.a = random_tensor(AD_F64, rows, cols, &rng, 0.5, 1.5);
    s.x = random_tensor(AD_F64, rows, cols, &rng, 0.5, 1.5);
    s.in[0] = s.a;
    s.in[1] = s.x;
    return s;
}

static void square_inputs_free(square_inputs *s)
{
    ad_tensor_free(s->a);
    ad_tensor_free(s->x);
}

/* The element index a CHECK_FAILED message names after "element ", or -1. */
static long long named_element(const char *msg)
{
    const char *p = strstr(msg, "element ");
    return p ? strtoll(p + strlen("element "), NULL, 10) : -1;
}

Test(check, correct_pullback_passes_and_counts_every_differentiable_slot)
{
    REGISTER(sq_correct, &sq_correct_rule);
    REGISTER(sq_const_a, &sq_const_a_rule);
    square_inputs s = square_inputs_new(3, 4, 1);
    ad_check_options o = ad_check_defaults();
    o.rtol = 1e-6;
    ad_check_report rep = {0};
    cr_assert_eq(ad_rule_check(sq_correct, s.in, 2, &o, &rep), AD_OK, "%s", ad_last_error());
    cr_assert_eq(rep.slots_checked, 2);
    cr_assert(rep.max_rel_err < 1e-6, "max_rel_err %g", rep.max_rel_err);
    /* The same pullback under a rule with a nondiff: only x is a differentiable slot. */
    rep = (ad_check_report){0};
    cr_assert_eq(ad_rule_check(sq_const_a, s.in, 2, &o, &rep), AD_OK, "%s", ad_last_error());
    cr_assert_eq(rep.slots_checked, 1);
    square_inputs_free(&s);
}

Test(check, wrong_factor_fails_naming_rule_slot_and_element)
{
    REGISTER(sq_wrong_factor, &sq_wrong_factor_rule);
    square_inputs s = square_inputs_new(3, 4, 2);
    ad_check_report rep = {0};
    ad_status rc = ad_rule_check(sq_wrong_factor, s.in, 2, NULL, &rep);
    cr_assert_eq(rc, AD_ERR_CHECK_FAILED, "got %s", ad_status_str(rc));
    const char *msg = ad_last_error();
    ASSERT_HAS(msg, "scaled square (wrong factor)");
    ASSERT_HAS(msg, "sq_wrong_factor");
    ASSERT_HAS(msg, "input 1");
    ASSERT_HAS(msg, "finite differences");
    long long el = named_element(msg);
    cr_assert(el >= 0 && el < s.x->size, "no element named: %s", msg);
    cr_assert_eq(rep.slots_checked, 1, "slot 0 (correct) passed before slot 1 failed");
    square_inputs_free(&s);
}

Test(check, a_single_wrong_element_is_named)
{
    REGISTER(sq_one_element, &sq_one_element_rule);
    square_inputs s = square_inputs_new(3, 4, 3);
    ad_status rc = ad_rule_check(sq_one_element, s.in, 2, NULL, NULL);
    cr_assert_eq(rc, AD_ERR_CHECK_FAILED, "got %s", ad_status_str(rc));
    ASSERT_HAS(ad_last_error(), "input 1");
    cr_assert_eq(named_element(ad_last_error()), 5, "%s", ad_last_error());
    square_inputs_free(&s);
}

Test(check, wrong_factor_on_a_large_input_fails_along_a_random_direction)
{
    /* 400 elements is above full_limit (256): the checker probes random directions and
    ** names the direction; with full_limit raised it probes coordinates instead. */
    REGISTER(sq_wrong_factor, &sq_wrong_factor_rule);
    square_inputs s = square_inputs_new(20, 20, 4);
    ad_status rc = ad_rule_check(sq_wrong_factor, s.in, 2, NULL, NULL);
    cr_assert_eq(rc, AD_ERR_CHECK_FAILED, "got %s", ad_status_str(rc));
    ASSERT_HAS(ad_last_error(), "input 1");
    ASSERT_HAS(ad_last_error(), "direction");
    ad_check_options o = ad_check_defaults();
    o.full_limit = 400;
    rc = ad_rule_check(sq_wrong_factor, s.in, 2, &o, NULL);
    cr_assert_eq(rc, AD_ERR_CHECK_FAILED, "got %s", ad_status_str(rc));
    ASSERT_HAS(ad_last_error(), "element");
    square_inputs_free(&s);
}

Test(check, correct_pullback_passes_along_random_directions_on_a_large_input)
{
    REGISTER(sq_correct, &sq_correct_rule);
    square_inputs s = square_inputs_new(20, 20, 5);
    ad_check_report rep = {0};
    ad_check_options o = ad_check_defaults();
    o.rtol = 1e-6, o.directions = 16;
    cr_assert_eq(ad_rule_check(sq_correct, s.in, 2, &o, &rep), AD_OK, "%s", ad_last_error());
    cr_assert_eq(rep.slots_checked, 2);
    square_inputs_free(&s);
}

Test(check, pullback_that_overwrites_on_beta_1_fails)
{
    REGISTER(sq_beta_ignored, &sq_beta_ignored_rule);
    square_inputs s = square_inputs_new(3, 4, 6);
    ad_status rc = ad_rule_check(sq_beta_ignored, s.in, 2, NULL, NULL);
    cr_assert_eq(rc, AD_ERR_CHECK_FAILED, "got %s", ad_status_str(rc));
    const char *msg = ad_last_error();
    ASSERT_HAS(msg, "overwrites");
    ASSERT_HAS(msg, "scaled square (beta ignored)");
    ASSERT_HAS(msg, "input 1");
    square_inputs_free(&s);
}

Test(check, pullback_that_leaves_an_element_unwritten_fails)
{
    REGISTER(sq_skips_one, &sq_skips_one_rule);
    square_inputs s = square_inputs_new(3, 4, 7);
    ad_status rc = ad_rule_check(sq_skips_one, s.in, 2, NULL, NULL);
    cr_assert_eq(rc, AD_ERR_CHECK_FAILED, "got %s", ad_status_str(rc));
    const char *msg = ad_last_error();
    ASSERT_HAS(msg, "unwritten");
    ASSERT_HAS(msg, "input 1");
    cr_assert_eq(named_element(msg), 2, "%s", msg);
    square_inputs_free(&s);
}

Test(check, pullback_error_status_is_returned_with_its_message)
{
    REGISTER(sq_fails, &sq_fails_rule);
    square_inputs s = square_inputs_new(3, 4, 8);
    ad_status rc = ad_rule_check(sq_fails, s.in, 2, NULL, NULL);
    cr_assert_eq(rc, AD_ERR_INVALID, "got %s", ad_status_str(rc));
    ASSERT_HAS(ad_last_error(), "planted pullback failure");
    square_inputs_free(&s);
}

Test(check, report_says_each_gradient_slot_got_every_check_and_finite_differences)
{
    REGISTER(sq_correct, &sq_correct_rule);
    REGISTER(sq_const_a, &sq_const_a_rule);
    square_inputs s = square_inputs_new(3, 4, 9);
    ad_check_report rep;
    cr_assert_eq(ad_rule_check(sq_correct, s.in, 2, NULL, &rep), AD_OK, "%s", ad_last_error());
    const unsigned all = AD_CHECKED_WRITES | AD_CHECKED_ADDS | AD_CHECKED_LINEAR |
                         AD_CHECKED_ALONE | AD_CHECKED_BOUNDS | AD_CHECKED_VALUES;
    cr_expect_str_eq(rep.fn_name, "sq_correct");
    cr_expect_eq(rep.n_slots, 2);
    for (int i = 0; i < 2; i++) {
        cr_expect_eq(rep.slot[i].method, AD_CHECK_FINITE_DIFFERENCES, "slot %d", i);
        cr_expect_eq(rep.slot[i].outcome, AD_CHECK_PASSED, "slot %d", i);
        cr_expect_eq(rep.slot[i].passed, all, "slot %d: 0x%x", i, rep.slot[i].passed);
        cr_expect(rep.slot[i].max_rel_err > 0 && rep.slot[i].max_rel_err < 1e-6,
                  "slot %d: %g", i, rep.slot[i].max_rel_err);
        cr_expect_eq(rep.slot[i].angle, AD_CHECK_ANGLE_NONE, "no reference, no angle");
        cr_expect(isnan(rep.slot[i].angle_degrees));
    }
    cr_expect_eq(rep.max_rel_err, fmax(rep.slot[0].max_rel_err, rep.slot[1].max_rel_err));
    cr_assert_eq(ad_rule_check(sq_const_a, s.in, 2, NULL, &rep), AD_OK, "%s", ad_last_error());
    cr_expect_eq(rep.slot[0].method, AD_CHECK_SKIPPED_NONDIFF);
    cr_expect_eq(rep.slot[0].outcome, AD_CHECK_SKIPPED);
    cr_expect_eq(rep.slot[0].passed, 0u);
    cr_expect_eq(rep.slot[1].outcome, AD_CHECK_PASSED);
    square_inputs_free(&s);
}

Test(check, rule_with_no_differentiable_slot_never_runs_its_pullback)
{
    REGISTER(sq_all_const, &sq_all_const_rule);
    square_inputs s = square_inputs_new(3, 4, 12);
    ad_check_report rep;
    cr_expect_eq(ad_rule_check(sq_all_const, s.in, 2, NULL, &rep), AD_OK, "%s",
                 ad_last_error());
    cr_expect_eq(rep.slots_checked, 0);
    cr_expect_eq(rep.slot[0].outcome, AD_CHECK_SKIPPED);
    cr_expect_eq(rep.slot[1].outcome, AD_CHECK_SKIPPED);
    square_inputs_free(&s);
}

Test(check, gradient_slot_that_writes_past_its_buffer_fails_though_its_values_are_right)
{
    REGISTER(sq_writes_past, &sq_writes_past_rule);
    square_inputs s = square_inputs_new(3, 4, 10);
    ad_check_report rep;
    ad_status rc = ad_rule_check(sq_writes_past, s.in, 2, NULL, &rep);
    cr_assert_eq(rc, AD_ERR_CHECK_FAILED, "got %s", ad_status_str(rc));
    EXPECT_MENTIONS(ad_last_error(), "scaled square (writes past dx)", "input 1",
                    "outside its buffer");
    cr_expect_eq(rep.slot[1].outcome, AD_CHECK_FAILED);
    cr_expect_eq(rep.slot[1].passed & AD_CHECKED_BOUNDS, 0u);
    cr_expect_eq(rep.slot[0].passed & AD_CHECKED_BOUNDS, AD_CHECKED_BOUNDS);
    square_inputs_free(&s);
}

Test(check, gradient_slot_with_an_added_constant_fails_as_not_linear)
{
    REGISTER(sq_affine, &sq_affine_rule);
    square_inputs s = square_inputs_new(3, 4, 11);
    ad_status rc = ad_rule_check(sq_affine, s.in, 2, NULL, NULL);
    cr_assert_eq(rc, AD_ERR_CHECK_FAILED, "got %s", ad_status_str(rc));
    EXPECT_MENTIONS(ad_last_error(), "scaled square (affine)", "input 1", "not linear");
    cr_expect_geq(named_element(ad_last_error()), 0, "%s", ad_last_error());
    square_inputs_free(&s);
}

/* ---- other errors, and the caller's inputs ---- */

typedef struct snapshot {
    const ad_tensor *t;
    void *bytes;
    uint64_t version;
} snapshot;

static snapshot snapshot_of(const ad_tensor *t)
{
    size_t n = (size_t)t->size * ad_dtype_size(t->dtype);
    snapshot s = {t, malloc(n ? n : 1), t->version};
    cr_assert_not_null(s.bytes);
    if (n)
        memcpy(s.bytes, t->data, n);
    return s;
}

static void assert_unchanged(const snapshot *s, const char *what)
{
    size_t n = (size_t)s->t->size * ad_dtype_size(s->t->dtype);
    cr_assert_eq(s->t->version, s->version, "%s: version moved", what);
    cr_assert(n == 0 || memcmp(s->bytes, s->t->data, n) == 0, "%s: data changed", what);
}

/* ---- options: defaults from a call, explicit values as given ---- */

Test(check, null_options_are_the_defaults)
{
    REGISTER(sq_correct, &sq_correct_rule);
    square_inputs s = square_inputs_new(3, 4, 95);
    ad_check_options d = ad_check_defaults();
    cr_expect_eq(d.rtol, 1e-6);
    cr_expect_eq(d.atol, 1e-8);
    cr_expect_eq(d.eps, 1e-5);
    cr_expect_eq(d.full_limit, 256);
    cr_expect_eq(d.directions, 8);
    cr_expect_eq(d.seed, 1u);
    ad_check_report by_null, by_defaults;
    cr_assert_eq(ad_rule_check(sq_correct, s.in, 2, NULL, &by_null), AD_OK, "%s",
                 ad_last_error());
    cr_assert_eq(ad_rule_check(sq_correct, s.in, 2, &d, &by_defaults), AD_OK, "%s",
                 ad_last_error());
    cr_expect_eq(by_null.max_rel_err, by_defaults.max_rel_err, "same dy, same numbers");
    square_inputs_free(&s);
}

Test(check, explicit_zero_options_mean_zero)
{
    /* atol = rtol = 0 demands exact finite differences, which rounding never gives; the
    ** old "0 means default" would have passed this. */
    REGISTER(sq_correct, &sq_correct_rule);
    REGISTER(sq_wrong_factor, &sq_wrong_factor_rule);
    square_inputs s = square_inputs_new(3, 4, 96);
    ad_check_options o = ad_check_defaults();
    o.rtol = 0, o.atol = 0;
    cr_expect_eq(ad_rule_check(sq_correct, s.in, 2, &o, NULL), AD_ERR_CHECK_FAILED);
    ASSERT_HAS(ad_last_error(), "finite differences");
    /* full_limit = 0: even 12 elements are probed along random directions. */
    o = ad_check_defaults();
    o.full_limit = 0;
    cr_expect_eq(ad_rule_check(sq_wrong_factor, s.in, 2, &o, NULL), AD_ERR_CHECK_FAILED);
    ASSERT_HAS(ad_last_error(), "direction");
    cr_expect_eq(ad_rule_check(sq_correct, s.in, 2, &o, NULL), AD_OK, "%s", ad_last_error());
    /* seed = 0 is a seed like any other. */
    o = ad_check_defaults();
    o.seed = 0;
    cr_expect_eq(ad_rule_check(sq_correct, s.in, 2, &o, NULL), AD_OK, "%s", ad_last_error());
    square_inputs_free(&s);
}

Test(check, invalid_options_fail_naming_the_option_and_leave_inputs_alone)
{
    REGISTER(sq_correct, &sq_correct_rule);
    square_inputs s = square_inputs_new(3, 4, 97);
    ad_tensor *a0 = ts_clone(s.a), *x0 = ts_clone(s.x);
    static const int dummy = 1;
    struct {
        const char *field;
        ad_check_options o;
    } bad[9];
    for (int k = 0; k < 9; k++)
        bad[k].o = ad_check_defaults();
    bad[0].field = "options.eps", bad[0].o.eps = 0;
    bad[1].field = "options.eps", bad[1].o.eps = -1e-5;
    bad[2].field = "options.eps", bad[2].o.eps = NAN;
    bad[3].field = "options.directions", bad[3].o.directions = 0;
    bad[4].field = "options.rtol", bad[4].o.rtol = -1e-6;
    bad[5].field = "options.atol", bad[5].o.atol = NAN;
    bad[6].field = "options.rtol", bad[6].o.rtol = INFINITY;
    bad[7].field = "options.full_limit", bad[7].o.full_limit = -1;
    bad[8].field = "options.attrs", bad[8].o.attrs_size = sizeof dummy;
    for (int k = 0; k < 9; k++) {
        ad_check_report rep;
        ad_status rc = ad_rule_check(sq_correct, s.in, 2, &bad[k].o, &rep);
        cr_expect_eq(rc, AD_ERR_INVALID, "case %d: %s", k, ad_status_str(rc));
        ASSERT_HAS(ad_last_error(), bad[k].field);
        cr_expect_eq(rep.slots_checked, 0, "case %d", k);
    }
    cr_expect_eq(ts_max_abs_diff(s.a, a0), 0.0);
    cr_expect_eq(ts_max_abs_diff(s.x, x0), 0.0);
    ad_tensor_free(a0);
    ad_tensor_free(x0);
    square_inputs_free(&s);
}

PRIMAL(unregistered_square, square_forward, 200) /* never registered */

Test(check, function_without_a_rule_fails_with_no_rule)
{
    square_inputs s = square_inputs_new(3, 4, 70);
    snapshot sa = snapshot_of(s.a), sx = snapshot_of(s.x);
    ad_status rc = ad_rule_check(unregistered_square, s.in, 2, NULL, NULL);
    cr_assert_eq(rc, AD_ERR_NO_RULE, "got %s", ad_status_str(rc));
    ASSERT_HAS(ad_last_error(), "unregistered_square");
    assert_unchanged(&sa, "a");
    assert_unchanged(&sx, "x");
    free(sa.bytes);
    free(sx.bytes);
    square_inputs_free(&s);
}

Test(check, float32_inputs_fail_with_dtype_error)
{
    REGISTER(sq_correct, &sq_correct_rule);
    uint64_t rng = 80;
    ad_tensor *a = random_tensor(AD_F32, 3, 4, &rng, 0.5, 1.5);
    ad_tensor *x = random_tensor(AD_F32, 3, 4, &rng, 0.5, 1.5);
    snapshot sa = snapshot_of(a), sx = snapshot_of(x);
    const ad_tensor *in[] = {a, x};
    ad_status rc = ad_rule_check(sq_correct, in, 2, NULL, NULL);
    cr_assert_eq(rc, AD_ERR_DTYPE, "got %s", ad_status_str(rc));
    ASSERT_HAS(ad_last_error(), "input 0");
    ASSERT_HAS(ad_last_error(), "f32");
    assert_unchanged(&sa, "a");
    assert_unchanged(&sx, "x");
    free(sa.bytes);
    free(sx.bytes);
    ad_tensor_free(a);
    ad_tensor_free(x);
}

Test(check, inputs_are_unchanged_after_a_passing_and_a_failing_check)
{
    REGISTER(sq_correct, &sq_correct_rule);
    REGISTER(sq_wrong_factor, &sq_wrong_factor_rule);
    square_inputs s = square_inputs_new(3, 4, 90);
    snapshot sa = snapshot_of(s.a), sx = snapshot_of(s.x);
    cr_assert_eq(ad_rule_check(sq_correct, s.in, 2, NULL, NULL), AD_OK, "%s",
                 ad_last_error());
    assert_unchanged(&sa, "a after a pass");
    assert_unchanged(&sx, "x after a pass");
    cr_assert_eq(ad_rule_check(sq_wrong_factor, s.in, 2, NULL, NULL), AD_ERR_CHECK_FAILED);
    assert_unchanged(&sa, "a after a failure");
    assert_unchanged(&sx, "x after a failure");
    free(sa.bytes);
    free(sx.bytes);
    square_inputs_free(&s);
}
