/*
** test_attrs_rules.c: how rules declare their attributes. Registration refuses defaults
** without a size and copies the default bytes; every built-in rule declares its
** attribute size and whether it has defaults; matmul without attributes is matmul
** with AD_MATMUL_ATTRS_DEFAULT. Record-time checks are in test_attrs.c.
*/
#include <criterion/criterion.h>
#include <stdalign.h>
#include <string.h>

#include "support.h"

/* ---- a user function with defaults: y = k x ---- */

typedef struct gain_attrs {
    double k;
    int32_t tag;
} gain_attrs;

static gain_attrs in_primal;

static ad_status gain_fn(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    in_primal = *(const gain_attrs *)ad_attrs(cx);
    ad_status rc = ad_out(cx, in[0]->dtype, in[0]->ndim, in[0]->shape, out);
    for (int64_t i = 0; rc == AD_OK && i < in[0]->size; i++)
        ts_set(*out, i, in_primal.k * ts_get(in[0], i));
    return rc;
}

/* dx = k dy */
static ad_status gain_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                               const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)in, (void)y;
    double k = ((const gain_attrs *)ad_attrs(cx))->k;
    for (int64_t i = 0; din[0] && i < dy->size; i++)
        ts_set(din[0], i, (beta[0] != 0.0f ? ts_get(din[0], i) : 0.0) + k * ts_get(dy, i));
    return AD_OK;
}

static const ad_rule gain_rule = {
    .name = "gain", .pullback = gain_pullback, .n_inputs = 1,
    .attrs_size = sizeof(gain_attrs), .attrs_default = &(gain_attrs){.k = 3.0, .tag = 7}};

/* ---- registration ---- */

Test(attrs_rules, defaults_without_a_size_are_a_bad_rule_and_leave_the_table_unchanged)
{
    ad_rule bad = gain_rule;
    bad.attrs_size = 0;
    cr_expect_eq(ad_rule_register(gain_fn, &bad), AD_ERR_BAD_RULE);
    EXPECT_MENTIONS(ad_last_error(), "gain_fn", "attrs_default", "attrs_size 0");
    cr_expect_null(ad_rule_find(gain_fn));
    cr_assert_eq(ad_rule_register(gain_fn, &gain_rule), AD_OK, "%s", ad_last_error());
    cr_expect_eq(ad_rule_replace(gain_fn, &bad), AD_ERR_BAD_RULE);
    cr_expect_eq(ad_rule_find(gain_fn)->attrs_size, sizeof(gain_attrs),
                 "a refused replace changed the rule");
    ad_rule huge = gain_rule; /* defaults too large to copy: refused before any read */
    huge.attrs_size = SIZE_MAX;
    cr_expect_eq(ad_rule_replace(gain_fn, &huge), AD_ERR_OVERFLOW);
    EXPECT_MENTIONS(ad_last_error(), "gain_fn", "too large");
    cr_expect_eq(ad_rule_find(gain_fn)->attrs_size, sizeof(gain_attrs));
}

/* The rule and its defaults live on this frame and are scribbled over once registered. */
static void register_from_the_stack(void)
{
    gain_attrs defaults = {4.0, 5};
    ad_rule rule = gain_rule;
    rule.attrs_default = &defaults;
    cr_assert_eq(ad_rule_register(gain_fn, &rule), AD_OK, "%s", ad_last_error());
    const ad_rule *kept = ad_rule_find(gain_fn);
    cr_expect_neq(kept->attrs_default, (const void *)&defaults, "the defaults were not copied");
    cr_expect_eq((uintptr_t)kept->attrs_default % alignof(max_align_t), 0u);
    memset(&defaults, 0xA5, sizeof defaults);
}

Test(attrs_rules, registration_copies_the_defaults)
{
    register_from_the_stack();
    const gain_attrs *kept = ad_rule_find(gain_fn)->attrs_default;
    cr_expect(kept->k == 4.0 && kept->tag == 5);
    ad_tensor *x = ts_tensor(AD_F64, 1, TS_SHAPE(3));
    ts_set(x, 1, 2.0);
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    const ad_tensor *y = ad_value(t, ad_call(t, gain_fn, ad_use(t, x)));
    cr_assert_not_null(y, "%s", ad_tape_error(t));
    cr_expect_eq(ts_get(y, 1), 8.0);
    cr_expect_eq(in_primal.tag, 5);
    ad_tape_free(t);
    ad_tensor_free(x);
}

/* ---- the built-ins ---- */

Test(attrs_rules, builtin_rules_declare_their_attributes)
{
    const ad_rule *mm = ad_rule_find(ad_op_matmul);
    cr_assert(mm && mm->attrs_default, "matmul has defaults");
    cr_expect_eq(mm->attrs_size, sizeof(ad_matmul_attrs));
    ad_matmul_attrs zero = AD_MATMUL_ATTRS_DEFAULT;
    cr_expect(memcmp(mm->attrs_default, &zero, sizeof zero) == 0);
    const ad_rule *ce = ad_rule_find(ad_op_softmax_cross_entropy);
    cr_assert(ce && ce->attrs_default, "softmax cross-entropy has defaults");
    cr_expect_eq(ce->attrs_size, sizeof(ad_softmax_ce_attrs));
    cr_expect_eq(((const ad_softmax_ce_attrs *)ce->attrs_default)->reduction,
                 AD_REDUCTION_MEAN);
    const struct {
        ad_primal_fn fn;
        size_t size;
    } required[] = {{ad_op_scale, sizeof(ad_scale_attrs)},
                    {ad_op_dfa_output, sizeof(ad_dfa *)},
                    {ad_op_dfa_hidden, sizeof(ad_dfa *)},
                    {ad_op_dfa_conv_hidden, sizeof(ad_dfa_conv_attrs)}};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        const ad_rule *r = ad_rule_find(required[i].fn);
        cr_expect(r && r->attrs_size == required[i].size && !r->attrs_default,
                  "required rule %zu", i);
    }
    const ad_primal_fn none[] = {ad_op_add, ad_op_sub, ad_op_mul, ad_op_bias_add,
                                 ad_op_tanh, ad_op_relu, ad_op_sigmoid, ad_op_bias_relu,
                                 ad_op_bias_tanh, ad_op_sum, ad_op_mean, ad_op_mse,
                                 ad_op_dense_fa, ad_op_dense_usf, ad_op_dense_sf,
                                 ad_op_dense_kp};
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++) {
        const ad_rule *r = ad_rule_find(none[i]);
        cr_expect(r && r->attrs_size == 0 && !r->attrs_default, "rule %zu takes none", i);
    }
}

/* Without attributes matmul does not transpose (b' is written out by hand); the macro
** with trans_b set is ad_matmul(.., 0, 1), bitwise. */
Test(attrs_rules, matmul_without_attributes_has_no_transposes_and_the_macro_starts_there)
{
    uint64_t rng = 3;
    ad_tensor *a = ts_tensor(AD_F64, 2, TS_SHAPE(3, 2)), *b = ts_tensor(AD_F64, 2, TS_SHAPE(4, 2));
    ad_tensor *bt = ts_tensor(AD_F64, 2, TS_SHAPE(2, 4));
    ts_fill_uniform(a, &rng, -1, 1);
    ts_fill_uniform(b, &rng, -1, 1);
    for (int i = 0; i < 8; i++)
        ts_set(bt, (i % 2) * 4 + i / 2, ts_get(b, i));
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ad_matmul_attrs at = AD_MATMUL_ATTRS_DEFAULT;
    at.trans_b = 1;
    const ad_tensor *y = ad_value(t, ad_call_attrs(t, ad_op_matmul, &at, ad_use(t, a),
                                                   ad_use(t, b)));
    const ad_tensor *y0 = ad_value(t, ad_matmul(t, ad_use(t, a), ad_use(t, b), 0, 1));
    const ad_tensor *z = ad_value(t, ad_call(t, ad_op_matmul, ad_use(t, a), ad_use(t, bt)));
    const ad_tensor *z0 = ad_value(t, ad_matmul(t, ad_use(t, a), ad_use(t, bt), 0, 0));
    cr_assert(y && y0 && z && z0, "%s", ad_tape_error(t));
    cr_expect_eq(ts_max_abs_diff(y, y0), 0.0);
    cr_expect_eq(ts_max_abs_diff(z, z0), 0.0);
    cr_expect_leq(ts_max_abs_diff(y, z), 1e-15);
    ad_tape_free(t);
    ad_tensor_free(a);
    ad_tensor_free(b);
    ad_tensor_free(bt);
}
