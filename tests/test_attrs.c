/*
** test_attrs.c: attributes are typed by their rule and checked at record time. A call
** whose attributes do not fit its rule (given to a rule that takes none, missing when
** required, of another size) is AD_ERR_ATTRS naming the op, the rule and both sizes,
** poisons the tape and runs nothing; defaults reach primal and pullback, and the
** checker; the arena copy is aligned as ad_rule.h documents and outlives the caller's
** struct. How rules declare attributes (registration, the built-ins) is in
** test_attrs_rules.c.
*/
#include <criterion/criterion.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

/* ---- user functions: y = k x, with k from their attributes ---- */

typedef struct gain_attrs {
    double k;
    int32_t tag;
} gain_attrs; /* 16 bytes on every ABI the suite runs on */

static int primal_runs, pullback_runs;
static gain_attrs in_primal, in_pullback; /* what the last primal and pullback read */
static int misaligned;                    /* ad_attrs copies off alignof(max_align_t) */
static const void *last_attrs;            /* what ad_attrs gave the last primal */

static void note_alignment(const void *p)
{
    misaligned += p && (uintptr_t)p % alignof(max_align_t) != 0;
}

static ad_status times(ad_ctx *cx, const ad_tensor *x, double k, ad_tensor **out)
{
    ad_status rc = ad_out(cx, x->dtype, x->ndim, x->shape, out);
    for (int64_t i = 0; rc == AD_OK && i < x->size; i++)
        ts_set(*out, i, k * ts_get(x, i));
    return rc;
}

/* Reads gain_attrs; registered once with required attributes, once with defaults. */
static ad_status gain_primal(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    const gain_attrs *a = ad_attrs(cx);
    primal_runs++;
    last_attrs = a;
    note_alignment(a);
    in_primal = *a; /* never NULL for a rule with attrs_size > 0: no check on purpose */
    return times(cx, in[0], a->k, out);
}

static ad_status gain_required_fn(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    return gain_primal(cx, in, out);
}

static ad_status gain_default_fn(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    ad_status rc = gain_primal(cx, in, out);
    return rc ? rc : AD_OK; /* a body of its own, so no linker folds the two */
}

/* dx = k dy */
static ad_status gain_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                               const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)in, (void)y;
    const gain_attrs *a = ad_attrs(cx);
    pullback_runs++;
    note_alignment(a);
    in_pullback = *a;
    for (int64_t i = 0; din[0] && i < dy->size; i++)
        ts_set(din[0], i, (beta[0] != 0.0f ? ts_get(din[0], i) : 0.0) + a->k * ts_get(dy, i));
    return AD_OK;
}

/* Takes no attributes: y = x. */
static ad_status plain_fn(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    primal_runs++;
    last_attrs = ad_attrs(cx);
    return times(cx, in[0], 1.0, out);
}

/* Three bytes of attributes holding 1: an odd size, for the alignment promise. */
typedef struct tiny_attrs {
    char c[3];
} tiny_attrs;

static ad_status tiny_fn(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    note_alignment(ad_attrs(cx));
    return times(cx, in[0], ((const tiny_attrs *)ad_attrs(cx))->c[0], out);
}

/* dx = dy, for plain_fn and tiny_fn. */
static ad_status unit_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                               const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)in, (void)y;
    pullback_runs++;
    note_alignment(ad_attrs(cx));
    for (int64_t i = 0; din[0] && i < dy->size; i++)
        ts_set(din[0], i, (beta[0] != 0.0f ? ts_get(din[0], i) : 0.0) + ts_get(dy, i));
    return AD_OK;
}

static const ad_rule gain_required_rule = {
    .name = "gain (required)", .pullback = gain_pullback, .n_inputs = 1,
    .attrs_size = sizeof(gain_attrs)};
static const ad_rule gain_default_rule = {
    .name = "gain (k = 3 by default)", .pullback = gain_pullback, .n_inputs = 1,
    .attrs_size = sizeof(gain_attrs), .attrs_default = &(gain_attrs){.k = 3.0, .tag = 7}};

static void register_all(void)
{
    const struct {
        ad_primal_fn fn;
        const char *name;
        ad_rule rule;
    } all[] = {
        {gain_required_fn, "gain_required_fn", gain_required_rule},
        {gain_default_fn, "gain_default_fn", gain_default_rule},
        {plain_fn, "plain_fn", {.name = "plain", .pullback = unit_pullback, .n_inputs = 1}},
        {tiny_fn, "tiny_fn", {.name = "tiny", .pullback = unit_pullback, .n_inputs = 1,
                              .attrs_size = sizeof(tiny_attrs)}},
    };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        cr_assert_eq(ad_rule_register_as(all[i].fn, all[i].name, &all[i].rule, 0), AD_OK,
                     "%s", ad_last_error());
}

/* ---- a rig: x (4 elements, float64) a parameter ---- */

typedef struct rig {
    ad_tape *t;
    ad_tensor *x;
    ad_params *ps;
    ad_grads *gs;
} rig;

static rig rig_open(void)
{
    rig r = {.x = ts_tensor(AD_F64, 1, TS_SHAPE(4))};
    for (int i = 0; i < 4; i++)
        ts_set(r.x, i, i + 1.0);
    cr_assert_eq(ad_tape_new(&r.t), AD_OK);
    cr_assert_eq(ad_params_new(&r.ps), AD_OK);
    cr_assert_eq(ad_params_add(r.ps, r.x, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(r.ps, &r.gs), AD_OK);
    return r;
}

static void rig_close(rig *r)
{
    ad_grads_free(r->gs);
    ad_params_free(r->ps);
    ad_tape_free(r->t);
    ad_tensor_free(r->x);
}

/* Sweeps sum(y) and expects d/dx = k everywhere. */
static void expect_gradient(rig *r, ad_var y, double k)
{
    cr_assert(ad_var_ok(y), "%s", ad_tape_error(r->t));
    cr_assert_eq(ad_backward(r->t, ad_sum(r->t, y), r->ps, r->gs), AD_OK, "%s",
                 ad_last_error());
    const double want[4] = {k, k, k, k};
    ts_assert_near(ad_grads_get(r->gs, r->x), want, 0.0, "dx");
}

/*
** A refused call: `code` with the needles in the tape's and the thread's message, no
** primal ran, no node was recorded, and the tape stays poisoned: a later good call is
** refused too, with the first error kept.
*/
static void expect_refused(rig *r, ad_var y, ad_status code, const char *n1, const char *n2)
{
    ts_assert_tape_failed(r->t, y, code, n1, n2);
    cr_expect_eq(primal_runs, 0, "the primal ran");
    cr_expect_eq(ad_tape_get_stats(r->t).nodes, 0u, "a node was recorded");
    ad_var later = ad_call(r->t, plain_fn, ad_use(r->t, r->x));
    cr_expect_not(ad_var_ok(later), "a call after the error succeeded");
    cr_expect_eq(ad_tape_status(r->t), code, "the first error was replaced");
    cr_expect_eq(primal_runs, 0, "a call on the poisoned tape ran");
    ad_tape_reset(r->t);
}

/* ---- errors ---- */

Test(attrs, attributes_given_to_a_rule_that_takes_none_fail_with_attrs)
{
    register_all();
    rig r = rig_open();
    gain_attrs a = {1.0, 0};
    expect_refused(&r, ad_call_attrs(r.t, plain_fn, &a, ad_use(r.t, r.x)), AD_ERR_ATTRS,
                   "plain_fn (rule \"plain\")", "16 bytes given, but the rule takes none");
    EXPECT_MENTIONS(ad_last_error(), "attrs_size is 0");
    int flag = 1;
    expect_refused(&r, ad_call_attrs(r.t, ad_op_tanh, &flag, ad_use(r.t, r.x)),
                   AD_ERR_ATTRS, "ad_op_tanh (rule \"tanh\")", "4 bytes given");
    rig_close(&r);
}

Test(attrs, required_attributes_missing_fail_with_attrs_naming_the_size)
{
    register_all();
    rig r = rig_open();
    expect_refused(&r, ad_call(r.t, gain_required_fn, ad_use(r.t, r.x)), AD_ERR_ATTRS,
                   "gain_required_fn (rule \"gain (required)\")", "no attributes given (0");
    EXPECT_MENTIONS(ad_last_error(), "requires 16 bytes");
    expect_refused(&r, ad_call(r.t, ad_op_scale, ad_use(r.t, r.x)), AD_ERR_ATTRS,
                   "ad_op_scale (rule \"scale\")", "requires 8 bytes");
    char dfa_needle[64];
    snprintf(dfa_needle, sizeof dfa_needle, "requires %zu bytes", sizeof(ad_dfa *));
    expect_refused(&r, ad_call(r.t, ad_op_dfa_output, ad_use(r.t, r.x)), AD_ERR_ATTRS,
                   "ad_op_dfa_output (rule \"dfa output (captures e)\")", dfa_needle);
    ad_tensor *b = ts_tensor(AD_F64, 2, TS_SHAPE(1, 4));
    ad_tensor *h = ts_tensor(AD_F64, 2, TS_SHAPE(1, 1));
    expect_refused(&r, ad_call(r.t, ad_op_dfa_hidden, ad_use(r.t, h), ad_use(r.t, b)),
                   AD_ERR_ATTRS, "ad_op_dfa_hidden (rule \"dfa hidden (e B')\")", dfa_needle);
    ad_tensor_free(b);
    ad_tensor_free(h);
    rig_close(&r);
}

Test(attrs, attributes_of_another_size_fail_with_attrs_and_null_ones_with_null)
{
    register_all();
    rig r = rig_open();
    double k = 2.0; /* a bare double where the rule wants a gain_attrs */
    expect_refused(&r, ad_call_attrs(r.t, gain_required_fn, &k, ad_use(r.t, r.x)),
                   AD_ERR_ATTRS, "gain_required_fn (rule \"gain (required)\")",
                   "attributes of 8 bytes given, but the rule's are 16 bytes");
    expect_refused(&r, ad_call_attrs(r.t, gain_default_fn, &k, ad_use(r.t, r.x)),
                   AD_ERR_ATTRS, "gain_default_fn", "8 bytes given, but the rule's are 16");
    int trans = 1; /* one flag where matmul wants both */
    ad_tensor *m = ts_tensor(AD_F64, 2, TS_SHAPE(2, 2));
    expect_refused(&r, ad_call_attrs(r.t, ad_op_matmul, &trans, ad_use(r.t, m), ad_use(r.t, m)),
                   AD_ERR_ATTRS, "ad_op_matmul (rule \"matmul\")",
                   "4 bytes given, but the rule's are 8 bytes");
    expect_refused(&r, ad_call_as(r.t, gain_default_fn, "gain_default_fn",
                                  (const ad_var[]){ad_use(r.t, r.x)}, 1, NULL, 16),
                   AD_ERR_NULL, "gain_default_fn (rule \"gain (k = 3 by default)\")",
                   "attrs is NULL but attrs_size is 16");
    ad_tensor_free(m);
    rig_close(&r);
}

/* ---- defaults and required attributes at work ---- */

Test(attrs, defaults_reach_the_primal_and_the_pullback)
{
    register_all();
    rig r = rig_open();
    expect_gradient(&r, ad_call(r.t, gain_default_fn, ad_use(r.t, r.x)), 3.0);
    cr_expect(in_primal.k == 3.0 && in_primal.tag == 7, "primal read k %g tag %d",
              in_primal.k, in_primal.tag);
    cr_expect(in_pullback.k == 3.0 && in_pullback.tag == 7, "pullback read k %g tag %d",
              in_pullback.k, in_pullback.tag);
    cr_expect_neq(last_attrs, ad_rule_find(gain_default_fn)->attrs_default,
                  "the node reads the registry's defaults, not its own copy");
    /* Given attributes win over the defaults. */
    ad_tape_reset(r.t);
    gain_attrs a = {-0.5, 1};
    expect_gradient(&r, ad_call_attrs(r.t, gain_default_fn, &a, ad_use(r.t, r.x)), -0.5);
    cr_expect(in_pullback.k == -0.5 && in_pullback.tag == 1);
    /* Forward-only recording still hands the primal its defaults. */
    ad_tape_reset(r.t);
    ad_tape_set_grad_enabled(r.t, 0);
    cr_expect(ad_var_ok(ad_call(r.t, gain_default_fn, ad_use(r.t, r.x))), "%s",
              ad_tape_error(r.t));
    cr_expect_eq(in_primal.k, 3.0);
    cr_expect_eq(misaligned, 0);
    rig_close(&r);
}

Test(attrs, user_rule_with_required_attributes_runs_with_them)
{
    register_all();
    rig r = rig_open();
    gain_attrs a = {1.5, 9};
    ad_var y = ad_call_attrs(r.t, gain_required_fn, &a, ad_use(r.t, r.x));
    cr_assert(ad_var_ok(y), "%s", ad_tape_error(r.t));
    cr_expect_eq(ts_get(ad_value(r.t, y), 3), 6.0);
    expect_gradient(&r, y, 1.5);
    cr_expect_eq(primal_runs, 1);
    cr_expect_eq(pullback_runs, 1);
    cr_expect(in_pullback.tag == 9);
    ad_tape_reset(r.t);
    cr_expect(ad_var_ok(ad_call(r.t, plain_fn, ad_use(r.t, r.x))), "%s", ad_tape_error(r.t));
    cr_expect_null(last_attrs, "a rule that takes no attributes got some");
    rig_close(&r);
}

Test(attrs, rule_check_passes_attributes_through_recording)
{
    register_all();
    ad_tensor *x = ts_tensor(AD_F64, 1, TS_SHAPE(5));
    uint64_t rng = 4;
    ts_fill_uniform(x, &rng, -1, 1);
    const ad_tensor *in[1] = {x};
    gain_attrs a = {-2.0, 0};
    ad_check_options o = ad_check_defaults();
    o.attrs = &a, o.attrs_size = sizeof a;
    cr_expect_eq(ad_rule_check(gain_required_fn, in, 1, &o, NULL), AD_OK, "%s",
                 ad_last_error());
    cr_expect_eq(in_pullback.k, -2.0);
    cr_expect_eq(ad_rule_check(gain_default_fn, in, 1, NULL, NULL), AD_OK, "%s",
                 ad_last_error());
    cr_expect_eq(in_pullback.k, 3.0);
    cr_expect_eq(ad_rule_check(gain_required_fn, in, 1, NULL, NULL), AD_ERR_ATTRS);
    EXPECT_MENTIONS(ad_last_error(), "gain_required_fn", "requires 16 bytes");
    o.attrs_size = 8;
    cr_expect_eq(ad_rule_check(gain_required_fn, in, 1, &o, NULL), AD_ERR_ATTRS);
    EXPECT_MENTIONS(ad_last_error(), "8 bytes given", "16 bytes");
    ad_tensor_free(x);
}

/* ---- the arena copy: alignment and lifetime ---- */

Test(attrs, arena_copy_is_aligned_to_max_align_t_in_primal_and_pullback)
{
    register_all();
    rig r = rig_open();
    ad_var y = ad_use(r.t, r.x);
    for (int i = 0; i < 5; i++) { /* odd sizes in between, so no copy lands by luck */
        tiny_attrs tiny = {{1, (char)i, 0}};
        y = ad_call_attrs(r.t, tiny_fn, &tiny, y);
        y = ad_call(r.t, plain_fn, y);
        y = ad_call_attrs(r.t, gain_default_fn, (&(gain_attrs){1.0, i}), y); /* parenthesised */
    }
    expect_gradient(&r, y, 1.0);
    cr_expect_eq(pullback_runs, 15);
    cr_expect_eq(misaligned, 0, "%d copies were not aligned to %zu", misaligned,
                 alignof(max_align_t));
    rig_close(&r);
}

/* Records with attributes that die with this frame: a local written over after the
** call, and a heap copy freed (under AddressSanitizer, a read of it would fail). */
static ad_var record_with_short_lived_attrs(rig *r)
{
    gain_attrs local = {2.5, 1};
    gain_attrs *heap = malloc(sizeof *heap);
    cr_assert_not_null(heap);
    *heap = (gain_attrs){0.5, 2};
    ad_var h = ad_call_attrs(r->t, gain_required_fn, &local, ad_use(r->t, r->x));
    h = ad_call_attrs(r->t, gain_default_fn, heap, h);
    local.k = 100.0;
    free(heap);
    return h;
}

Test(attrs, callers_struct_may_go_out_of_scope_after_the_call)
{
    register_all();
    rig r = rig_open();
    ad_var y = record_with_short_lived_attrs(&r);
    expect_gradient(&r, y, 2.5 * 0.5);
    cr_expect_eq(in_pullback.k, 2.5, "the last pullback (the first call's) read %g",
                 in_pullback.k);
    rig_close(&r);
}
