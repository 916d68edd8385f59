/*
** test_user_rules.c: the helpers ad_rule.h and ad_ops.h offer to people writing their
** own rules: ad_gemm_tensors takes a pullback's beta as it comes (a float), and
** AD_DISPATCH_FLOAT with AD_PUT_EACH let one primal and one pullback serve float and
** double: checked in f64 by ad_rule_check, run in f32 against values computed here.
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

/* ---- one rule for both float dtypes ---- */

Test(user_rules, dispatch_picks_float_for_f32_and_double_otherwise)
{
    size_t f = 0, d = 0;
    AD_DISPATCH_FLOAT(AD_F32, T, f = sizeof(T););
    AD_DISPATCH_FLOAT(AD_F64, T, d = sizeof(T););
    cr_expect_eq(f, sizeof(float));
    cr_expect_eq(d, sizeof(double));
}

Test(user_rules, put_each_writes_under_beta_zero_and_adds_under_beta_one)
{
    float d[5];
    for (int i = 0; i < 5; i++)
        d[i] = NAN; /* beta 0: never read */
    AD_PUT_EACH(d, 5, 0.0f, i, (float)i);
    for (int i = 0; i < 5; i++)
        cr_expect_eq(d[i], (float)i, "beta 0: d[%d] = %g", i, d[i]);
    AD_PUT_EACH(d, 5, 1.0f, k, 0.5f * (float)k);
    for (int i = 0; i < 5; i++)
        cr_expect_eq(d[i], 1.5f * (float)i, "beta 1: d[%d] = %g", i, d[i]);
}

/* y = a^2 b elementwise, written once over T. */
static ad_status sqmul(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    ad_status rc = ad_out(cx, in[0]->dtype, in[0]->ndim, in[0]->shape, out);
    if (rc)
        return rc;
    AD_DISPATCH_FLOAT(in[0]->dtype, T, {
        const T *a = in[0]->data, *b = in[1]->data;
        T *y = (*out)->data;
        for (int64_t i = 0; i < in[0]->size; i++)
            y[i] = a[i] * a[i] * b[i];
    });
    return AD_OK;
}

/* y = a^2 b:  da = 2 a b dy, db = a^2 dy; each slot under its own beta. */
static ad_status sqmul_pullback(ad_ctx *cx, const ad_tensor *dy,
                                const ad_tensor *const in[], const ad_tensor *y,
                                ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)y;
    AD_DISPATCH_FLOAT(dy->dtype, T, {
        const T *g = dy->data, *a = in[0]->data, *b = in[1]->data;
        if (din[0]) {
            T *da = din[0]->data;
            AD_PUT_EACH(da, dy->size, beta[0], i, 2 * a[i] * b[i] * g[i]);
        }
        if (din[1]) {
            T *db = din[1]->data;
            AD_PUT_EACH(db, dy->size, beta[1], i, a[i] * a[i] * g[i]);
        }
    });
    return AD_OK;
}

static const ad_rule sqmul_rule = {.name = "sqmul (one kernel, two dtypes)",
                                   .pullback = sqmul_pullback, .n_inputs = 2};

static void register_sqmul(void)
{
    if (!ad_rule_find(sqmul))
        cr_assert_eq(ad_rule_register(sqmul, &sqmul_rule), AD_OK, "%s", ad_last_error());
}

Test(user_rules, one_kernel_passes_the_f64_finite_difference_check)
{
    register_sqmul();
    uint64_t rng = 11;
    ad_tensor *a = ts_tensor(AD_F64, 2, TS_SHAPE(3, 4));
    ad_tensor *b = ts_tensor(AD_F64, 2, TS_SHAPE(3, 4));
    ts_fill_uniform(a, &rng, -2, 2);
    ts_fill_uniform(b, &rng, -2, 2);
    const ad_tensor *in[2] = {a, b};
    ad_check_report rep = {0};
    cr_assert_eq(ad_rule_check(sqmul, in, 2, NULL, &rep), AD_OK, "%s", ad_last_error());
    cr_expect_eq(rep.slots_checked, 2);
    ad_tensor_free(a);
    ad_tensor_free(b);
}

typedef struct sq_data {
    ad_tensor *a, *b, *c;
} sq_data;

/* sum(a^2 b) + sum(a^2 c): a gets two contributions, so its second one is added
** under beta 1, in f32. */
static ad_var sq_loss(ad_tape *t, void *u)
{
    sq_data *s = u;
    ad_var a = ad_use(t, s->a);
    ad_var u1 = ad_call(t, sqmul, a, ad_use(t, s->b));
    ad_var u2 = ad_call(t, sqmul, a, ad_use(t, s->c));
    return ad_add(t, ad_sum(t, u1), ad_sum(t, u2));
}

Test(user_rules, one_kernel_runs_in_f32_with_both_betas)
{
    register_sqmul();
    enum { N = 7 };
    uint64_t rng = 12;
    sq_data s = {ts_tensor(AD_F32, 1, TS_SHAPE(N)), ts_tensor(AD_F32, 1, TS_SHAPE(N)),
                 ts_tensor(AD_F32, 1, TS_SHAPE(N))};
    ts_fill_uniform(s.a, &rng, -2, 2);
    ts_fill_uniform(s.b, &rng, -2, 2);
    ts_fill_uniform(s.c, &rng, -2, 2);
    ad_params *ps;
    ad_grads *gs;
    ad_tape *t;
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    cr_assert_eq(ad_params_add(ps, s.a, NULL), AD_OK);
    cr_assert_eq(ad_params_add(ps, s.b, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(ps, &gs), AD_OK);
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    double loss = 0, want_loss = 0, da[N], db[N];
    cr_assert_eq(ad_gradient(t, ps, sq_loss, &s, gs, &loss), AD_OK, "%s", ad_last_error());
    for (int i = 0; i < N; i++) {
        double a = ts_get(s.a, i), b = ts_get(s.b, i), c = ts_get(s.c, i);
        want_loss += a * a * (b + c);
        da[i] = 2 * a * (b + c);
        db[i] = a * a;
    }
    cr_expect(fabs(loss - want_loss) < 1e-5 * fmax(1, fabs(want_loss)), "loss %g, want %g",
              loss, want_loss);
    const ad_tensor *ga = ad_grads_get(gs, s.a), *gb = ad_grads_get(gs, s.b);
    cr_assert(ga && gb && ga->dtype == AD_F32 && gb->dtype == AD_F32);
    ts_assert_near(ga, da, 1e-5, "f32 da = 2 a (b + c)");
    ts_assert_near(gb, db, 1e-5, "f32 db = a^2");
    cr_expect_eq(ad_tape_pullback_count(t, sqmul), 2u);
    ad_tape_free(t);
    ad_grads_free(gs);
    ad_params_free(ps);
    ad_tensor_free(s.a);
    ad_tensor_free(s.b);
    ad_tensor_free(s.c);
}
