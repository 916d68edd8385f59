/*
** test_check_signal.c: ad_rule_check on rules that ignore dy (AD_RULE_IGNORES_DY) and
** read a signal from elsewhere, as DFA's hidden layer reads the output error. A user's
** rule of that kind, written here, tells the checker through its signal hook how to
** seed the signal: the correct rule passes with linearity in the signal checked, a rule
** that is not linear in it fails, a rule without a hook is checked without linearity,
** and the signal never outlives the check (on success, failure or out of memory).
*/
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "support.h"

#define REGISTER(fn, rule)                                                              \
    do {                                                                                \
        if (!ad_rule_find(fn))                                                          \
            cr_assert_eq(ad_rule_register(fn, rule), AD_OK, "%s", ad_last_error());     \
    } while (0)

/* The user's state, reached through the call's attrs (a pointer to it), as ad_dfa is:
** an earlier rule's pullback would set s in a sweep. */
typedef struct user_state {
    const ad_tensor *s;
} user_state;

static user_state *state_of(const ad_ctx *cx)
{
    user_state *const *a = ad_attrs(cx);
    return a ? *a : NULL;
}

/* y = x (the identity), as DFA's hidden layer; tag only names the variant in errors. */
static ad_status copy_forward(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out,
                              int tag)
{
    if (in[0]->dtype != AD_F64)
        return ad_fail(AD_ERR_DTYPE, "user signal rule %d: f64 only", tag);
    ad_status rc = ad_out(cx, in[0]->dtype, in[0]->ndim, in[0]->shape, out);
    if (rc == AD_OK && in[0]->size)
        memcpy((*out)->data, in[0]->data, (size_t)in[0]->size * sizeof(double));
    return rc;
}

/* dx = 2 s (or s^2 when squared: not linear in s); dy is ignored. */
static ad_status signal_pullback_with(ad_ctx *cx, const ad_tensor *dy,
                                      ad_tensor *const din[], const float beta[],
                                      int squared)
{
    (void)dy;
    const user_state *st = state_of(cx);
    if (!din[0])
        return AD_OK;
    if (!st || !st->s)
        return ad_fail(AD_ERR_INVALID, "user signal rule: no signal");
    for (int64_t i = 0; i < din[0]->size; i++) {
        double s = ts_get(st->s, i), v = squared ? s * s : 2.0 * s;
        ts_set(din[0], i, beta[0] != 0.0f ? ts_get(din[0], i) + v : v);
    }
    return AD_OK;
}

/* Makes the signal: x's shape, published in the user's state; taken back at the end. */
static ad_status user_signal(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **signal)
{
    user_state *st = state_of(cx);
    if (!st)
        return ad_fail(AD_ERR_NULL, "user signal rule: no state");
    if (*signal) {
        st->s = NULL;
        return AD_OK;
    }
    ad_status rc = ad_scratch(cx, in[0]->dtype, in[0]->ndim, in[0]->shape, signal);
    if (rc == AD_OK)
        st->s = *signal;
    return rc;
}

/* A hook that says it worked and gives nothing. */
static ad_status empty_signal(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **signal)
{
    (void)cx, (void)in, (void)signal;
    return AD_OK;
}

/* Each rule needs its own primal (the registry's key); the tag keeps their bodies
** distinct under identical-code folding. */
#define SIGNAL_VARIANT(name, squared, tag)                                              \
    static ad_status name(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)     \
    {                                                                                   \
        return copy_forward(cx, in, out, tag);                                          \
    }                                                                                   \
    static ad_status name##_pullback(ad_ctx *cx, const ad_tensor *dy,                   \
                                     const ad_tensor *const in[], const ad_tensor *y,   \
                                     ad_tensor *const din[], const float beta[])        \
    {                                                                                   \
        (void)in, (void)y;                                                              \
        return signal_pullback_with(cx, dy, din, beta, squared);                        \
    }

SIGNAL_VARIANT(sig_linear, 0, 1)
SIGNAL_VARIANT(sig_squared, 1, 2)
SIGNAL_VARIANT(sig_no_hook, 0, 3)
SIGNAL_VARIANT(sig_empty_hook, 0, 4)
SIGNAL_VARIANT(sig_not_ignoring, 0, 5)

#define SIGNAL_RULE(rule_name, pb, hook, rule_flags)                                    \
    {.name = (rule_name), .pullback = (pb), .n_inputs = 1,                              \
     .not_gradient = AD_INPUT(0), .flags = (rule_flags), .signal = (hook),             \
     .attrs_size = sizeof(user_state *)}
static const ad_rule sig_linear_rule =
    SIGNAL_RULE("user signal (2 s)", sig_linear_pullback, user_signal, AD_RULE_IGNORES_DY);
static const ad_rule sig_squared_rule =
    SIGNAL_RULE("user signal (s^2)", sig_squared_pullback, user_signal, AD_RULE_IGNORES_DY);
static const ad_rule sig_no_hook_rule =
    SIGNAL_RULE("user signal (no hook)", sig_no_hook_pullback, NULL, AD_RULE_IGNORES_DY);
static const ad_rule sig_empty_hook_rule = SIGNAL_RULE(
    "user signal (empty hook)", sig_empty_hook_pullback, empty_signal, AD_RULE_IGNORES_DY);
static const ad_rule sig_not_ignoring_rule =
    SIGNAL_RULE("user signal (reads dy)", sig_not_ignoring_pullback, user_signal, 0);

static ad_tensor *random_x(uint64_t seed)
{
    uint64_t rng = seed;
    ad_tensor *x = ts_tensor(AD_F64, 2, TS_SHAPE(3, 4));
    ts_fill_uniform(x, &rng, -1, 1);
    return x;
}

/* Options passing &st as a call's attrs would. */
static ad_check_options with_state(user_state **st)
{
    ad_check_options o = ad_check_defaults();
    o.attrs = st, o.attrs_size = sizeof *st;
    return o;
}

Test(check_signal, rule_with_a_signal_hook_passes_with_linearity_in_the_signal)
{
    REGISTER(sig_linear, &sig_linear_rule);
    ad_tensor *x = random_x(1);
    user_state state = {NULL}, *st = &state;
    ad_check_options o = with_state(&st);
    ad_check_report rep;
    cr_assert_eq(ad_rule_check(sig_linear, (const ad_tensor *const[]){x}, 1, &o, &rep),
                 AD_OK, "%s", ad_last_error());
    cr_expect_eq(rep.slot[0].outcome, AD_CHECK_PASSED);
    cr_expect_eq(rep.slot[0].passed, AD_CHECKED_WRITES | AD_CHECKED_ADDS | AD_CHECKED_LINEAR |
                                         AD_CHECKED_ALONE | AD_CHECKED_BOUNDS);
    cr_expect_null(state.s, "the signal was handed back");
    ad_tensor_free(x);
}

Test(check_signal, rule_not_linear_in_its_signal_fails)
{
    REGISTER(sig_squared, &sig_squared_rule);
    ad_tensor *x = random_x(2);
    user_state state = {NULL}, *st = &state;
    ad_check_options o = with_state(&st);
    ad_status rc = ad_rule_check(sig_squared, (const ad_tensor *const[]){x}, 1, &o, NULL);
    cr_expect_eq(rc, AD_ERR_CHECK_FAILED, "got %s", ad_status_str(rc));
    EXPECT_MENTIONS(ad_last_error(), "user signal (s^2)", "input 0", "not linear");
    cr_expect_null(state.s, "the signal was handed back after a failure");
    ad_tensor_free(x);
}

Test(check_signal, rule_without_a_hook_is_checked_without_linearity)
{
    REGISTER(sig_no_hook, &sig_no_hook_rule);
    ad_tensor *x = random_x(3), *s = random_x(4);
    user_state state = {s}, *st = &state; /* as an earlier pullback would leave it */
    ad_check_options o = with_state(&st);
    ad_check_report rep;
    cr_assert_eq(ad_rule_check(sig_no_hook, (const ad_tensor *const[]){x}, 1, &o, &rep),
                 AD_OK, "%s", ad_last_error());
    cr_expect_eq(rep.slot[0].passed & AD_CHECKED_LINEAR, 0u, "nothing to vary");
    cr_expect_eq(rep.slot[0].passed & AD_CHECKED_ADDS, AD_CHECKED_ADDS);
    cr_expect_eq(state.s, s, "the caller's state is the caller's");
    /* With no state at all the pullback's own error comes back. */
    state.s = NULL;
    ad_status rc = ad_rule_check(sig_no_hook, (const ad_tensor *const[]){x}, 1, &o, NULL);
    cr_expect_eq(rc, AD_ERR_INVALID, "got %s", ad_status_str(rc));
    EXPECT_MENTIONS(ad_last_error(), "no signal");
    ad_tensor_free(x);
    ad_tensor_free(s);
}

Test(check_signal, hook_that_gives_no_signal_is_a_bad_rule)
{
    REGISTER(sig_empty_hook, &sig_empty_hook_rule);
    ad_tensor *x = random_x(5);
    user_state state = {NULL}, *st = &state;
    ad_check_options o = with_state(&st);
    ad_status rc = ad_rule_check(sig_empty_hook, (const ad_tensor *const[]){x}, 1, &o, NULL);
    cr_expect_eq(rc, AD_ERR_BAD_RULE, "got %s", ad_status_str(rc));
    EXPECT_MENTIONS(ad_last_error(), "user signal (empty hook)", "signal hook gave nothing");
    ad_tensor_free(x);
}

Test(check_signal, signal_hook_without_ignores_dy_is_refused_at_registration)
{
    ad_status rc = ad_rule_register(sig_not_ignoring, &sig_not_ignoring_rule);
    cr_expect_eq(rc, AD_ERR_BAD_RULE, "got %s", ad_status_str(rc));
    EXPECT_MENTIONS(ad_last_error(), "sig_not_ignoring", "signal hook", "AD_RULE_IGNORES_DY");
    cr_expect_null(ad_rule_find(sig_not_ignoring));
}

Test(check_signal, out_of_memory_at_every_allocation_fails_cleanly_and_hands_e_back)
{
    uint64_t rng = 6;
    ad_tensor *h = ts_tensor(AD_F64, 2, TS_SHAPE(4, 5));
    ad_tensor *b = ts_tensor(AD_F64, 2, TS_SHAPE(5, 3));
    ts_fill_uniform(h, &rng, -1, 1);
    ts_fill_uniform(b, &rng, -1, 1);
    ad_dfa dfa = {0};
    ad_dfa *attrs = &dfa;
    ad_check_options o = ad_check_defaults();
    o.attrs = &attrs, o.attrs_size = sizeof attrs;
    const ad_tensor *in[2] = {h, b};
    cr_assert_not_null(ad_rule_find(ad_op_dfa_hidden)); /* the registry seeded first */
    ts_alloc_install();
    int64_t before = ts_alloc_outstanding();
    ad_status rc = AD_ERR_NOMEM;
    uint64_t k;
    for (k = 1; rc == AD_ERR_NOMEM && k < 1000; k++) {
        ts_alloc_fail_at(k);
        rc = ad_rule_check(ad_op_dfa_hidden, in, 2, &o, NULL);
        ts_alloc_fail_at(0);
        cr_expect(rc == AD_OK || rc == AD_ERR_NOMEM, "allocation %llu: %s",
                  (unsigned long long)k, ad_status_str(rc));
        cr_expect_null(dfa.error_, "allocation %llu: e left behind", (unsigned long long)k);
        cr_expect_eq(ts_alloc_outstanding(), before, "allocation %llu leaked",
                     (unsigned long long)k);
    }
    cr_expect_eq(rc, AD_OK, "%s", ad_last_error());
    cr_expect_gt(k, 2, "no allocation was failed");
    ts_alloc_uninstall();
    ad_tensor_free(h);
    ad_tensor_free(b);
}
