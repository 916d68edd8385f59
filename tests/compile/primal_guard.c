/*
** primal_guard.c: compiled by primal_guard.sh, once per CASE. CASE 0 holds the right
** calls and must compile without a warning; each other case passes the wrapper a user
** calls (ad_dense_fa, ad_scale) where the registry, the checker or a recording wants
** the primal (ad_op_dense_fa, ad_op_scale), and must
** not compile, even with incompatible-pointer warnings turned off: without AD_PRIMAL
** it would compile and return 0 or NULL at run time.
*/
#include "ad.h"

#define CASES 9

static ad_status my_op(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    (void)in;
    return ad_out(cx, AD_F32, 0, NULL, out);
}

static const ad_primal_fn table[2] = {ad_op_dense_fa, my_op};

static ad_status my_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                             const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)dy, (void)in, (void)y, (void)din, (void)beta;
    return AD_OK;
}

uint64_t use(const ad_tape *tape, ad_tape *t, ad_var x, const ad_tensor *const inputs[]);
uint64_t use(const ad_tape *tape, ad_tape *t, ad_var x, const ad_tensor *const inputs[])
{
    uint64_t n = 0;
    const ad_rule rule = {.pullback = my_pullback, .n_inputs = 1};
    const ad_scale_attrs scale = {2.0};
#if CASE == 0
    ad_primal_fn fn = ad_op_matmul;
    n += ad_tape_pullback_count(tape, ad_op_dense_fa);
    n += ad_tape_pullback_count(tape, fn) + ad_tape_pullback_count(tape, table[1]);
    n += ad_rule_total_pullbacks(my_op) + ad_rule_total_pullbacks(&ad_op_tanh);
    n += ad_rule_find(table[0]) != NULL;
    n += ad_rule_find((ad_primal_fn)NULL) != NULL;
    n += (ad_rule_find)(fn) != NULL; /* the function itself, without the macro */
    n += ad_rule_unregister(my_op) == AD_OK;
    n += ad_rule_register(my_op, &rule) == AD_OK;
    n += ad_rule_replace(my_op, &rule) == AD_OK;
    n += ad_rule_check(my_op, inputs, 1, NULL, NULL) == AD_OK;
    n += ad_var_ok(ad_call(t, my_op, x));
    n += ad_var_ok(ad_call_attrs(t, ad_op_scale, &scale, x));
#elif CASE == 1
    n += ad_tape_pullback_count(tape, ad_dense_fa);
#elif CASE == 2
    n += ad_rule_total_pullbacks(ad_dense_fa);
#elif CASE == 3
    n += ad_rule_find(ad_dense_fa) != NULL;
#elif CASE == 4
    n += ad_rule_unregister(ad_dense_fa) == AD_OK;
#elif CASE == 5
    n += ad_rule_register(ad_dense_fa, &rule) == AD_OK;
#elif CASE == 6
    n += ad_rule_replace(ad_dense_fa, &rule) == AD_OK;
#elif CASE == 7
    n += ad_rule_check(ad_dense_fa, inputs, 1, NULL, NULL) == AD_OK;
#elif CASE == 8
    n += ad_var_ok(ad_call(t, ad_dense_fa, x));
#elif CASE == 9
    n += ad_var_ok(ad_call_attrs(t, ad_scale, &scale, x));
#endif
    (void)tape, (void)t, (void)x, (void)rule, (void)scale, (void)inputs;
    return n;
}
