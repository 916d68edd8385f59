/*
** test_user_rules.c: the helpers ad_rule.h and ad_ops.h offer to people writing their
** own rules: ad_gemm_tensors takes a pullback's beta as it comes (a float).
*/
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "support.h"

/* beta has the pullback's type, so beta[i] passes with no conversion; alpha is a
** double. A change of either type fails here at compile time. */
_Static_assert(_Generic(&ad_gemm_tensors,
                        ad_status (*)(const ad_tensor *, int, const ad_tensor *, int, double,
                                      float, ad_tensor *): 1,
                        default: 0),
               "ad_gemm_tensors(a, trans_a, b, trans_b, double alpha, float beta, c)");

/* C = A B' with beta 0 over NaN (written, never read) and beta 1 over ones (added), in
** both float dtypes, against a naive product computed here. */
Test(user_rules, gemm_tensors_writes_under_beta_zero_and_adds_under_beta_one)
{
    const ad_dtype dts[2] = {AD_F32, AD_F64};
    for (int d = 0; d < 2; d++) {
        uint64_t rng = 7;
        ad_tensor *a = ts_tensor(dts[d], 2, TS_SHAPE(3, 4));
        ad_tensor *b = ts_tensor(dts[d], 2, TS_SHAPE(5, 4));
        ad_tensor *c = ts_tensor(dts[d], 2, TS_SHAPE(3, 5));
        ts_fill_uniform(a, &rng, -1, 1);
        ts_fill_uniform(b, &rng, -1, 1);
        double want[15];
        ts_naive_matmul(a, 0, b, 1, want);
        const float betas[2] = {0.0f, 1.0f};
        for (int k = 0; k < 2; k++) {
            for (int64_t i = 0; i < c->size; i++)
                ts_set(c, i, k ? 1.0 : NAN);
            cr_assert_eq(ad_gemm_tensors(a, 0, b, 1, 1.0, betas[k], c), AD_OK, "%s",
                         ad_last_error());
            double w[15];
            for (int i = 0; i < 15; i++)
                w[i] = want[i] + k;
            char what[64];
            snprintf(what, sizeof what, "%s, beta %g", ad_dtype_name(dts[d]), betas[k]);
            ts_assert_near(c, w, dts[d] == AD_F32 ? 1e-6 : 1e-14, what);
        }
        ad_tensor_free(a);
        ad_tensor_free(b);
        ad_tensor_free(c);
    }
}
