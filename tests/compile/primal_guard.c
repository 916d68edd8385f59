/*
** primal_guard.c: compiled by primal_guard.sh, once per CASE. CASE 0 holds the right
** calls and must compile without a warning; each other case passes the wrapper a user
** calls (ad_dense_fa) where the registry wants the primal (ad_op_dense_fa), and must
** not compile, even with incompatible-pointer warnings turned off: without AD_PRIMAL
** it would compile and return 0 or NULL at run time.
*/
#include "ad.h"

#define CASES 4

static ad_status my_op(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    (void)in;
    return ad_out(cx, AD_F32, 0, NULL, out);
}

static const ad_primal_fn table[2] = {ad_op_dense_fa, my_op};

uint64_t use(const ad_tape *tape);
uint64_t use(const ad_tape *tape)
{
    uint64_t n = 0;
#if CASE == 0
    ad_primal_fn fn = ad_op_matmul;
    n += ad_tape_pullback_count(tape, ad_op_dense_fa);
    n += ad_tape_pullback_count(tape, fn) + ad_tape_pullback_count(tape, table[1]);
    n += ad_rule_total_pullbacks(my_op) + ad_rule_total_pullbacks(&ad_op_tanh);
    n += ad_rule_find(table[0]) != NULL;
    n += ad_rule_find((ad_primal_fn)NULL) != NULL;
    n += (ad_rule_find)(fn) != NULL; /* the function itself, without the macro */
    n += ad_rule_unregister(my_op) == AD_OK;
#elif CASE == 1
    n += ad_tape_pullback_count(tape, ad_dense_fa);
#elif CASE == 2
    n += ad_rule_total_pullbacks(ad_dense_fa);
#elif CASE == 3
    n += ad_rule_find(ad_dense_fa) != NULL;
#elif CASE == 4
    n += ad_rule_unregister(ad_dense_fa) == AD_OK;
#endif
    (void)tape;
    return n;
}
