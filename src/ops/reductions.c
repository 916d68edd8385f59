/*
** reductions.c: the sum and the mean of every element, to a rank-0 value.
**
** Sums accumulate in double whatever the dtype: a float accumulator over a large
** tensor loses the small terms once the running sum is large. The mean of an empty
** tensor is 0/0 = NaN, as in NumPy and PyTorch; its pullback has nothing to write.
*/
#include "ops_internal.h"

/* Writes scale * (sum of x) into a fresh rank-0 output of x's dtype. */
static ad_status reduce(ad_ctx *cx, const ad_tensor *x, bool mean, ad_tensor **out)
{
    ad_status rc = ad_out(cx, x->dtype, 0, NULL, out);
    if (rc)
        return rc;
    AD_DISPATCH_FLOAT(x->dtype, T, {
        const T *v = x->data;
        double s = 0.0;
        for (int64_t i = 0; i < x->size; i++)
            s += v[i];
        *(T *)(*out)->data = (T)(mean ? s / (double)x->size : s);
    });
    return AD_OK;
}

/* dx = g everywhere, g = dy scale (computed in double, then rounded once). */
static void broadcast_into(ad_tensor *dx, float beta, const ad_tensor *dy, double scale)
{
    AD_DISPATCH_FLOAT(dx->dtype, T, {
        T *d = dx->data;
        const T g = (T)(*(const T *)dy->data * scale);
        AD_PUT_EACH(d, dx->size, beta, i, g);
    });
}

/* ---- sum ---- */

ad_status ad_op_sum(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    return reduce(cx, in[0], false, out);
}

/* y = sum_i x_i:  dx_i = dy */
static ad_status sum_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                              const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)in, (void)y;
    if (din[0])
        broadcast_into(din[0], beta[0], dy, 1.0);
    return AD_OK;
}

static const ad_rule rule_sum = {.name = "sum", .pullback = sum_pullback, .n_inputs = 1,
                              .unread = AD_INPUT(0) | AD_OUTPUT};

/* ---- mean ---- */

ad_status ad_op_mean(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    return reduce(cx, in[0], true, out);
}

/* y = (1/N) sum_i x_i:  dx_i = dy / N */
static ad_status mean_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                               const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)y;
    if (din[0] && in[0]->size > 0)
        broadcast_into(din[0], beta[0], dy, 1.0 / (double)in[0]->size);
    return AD_OK;
}

static const ad_rule rule_mean = {.name = "mean", .pullback = mean_pullback, .n_inputs = 1,
                              .unread = AD_INPUT(0) | AD_OUTPUT};

/* ---- typed wrappers ---- */

ad_var ad_sum(ad_tape *t, ad_var x)
{
    return ad_call_as(t, ad_op_sum, "ad_sum", (const ad_var[]){x}, 1, NULL, 0);
}

ad_var ad_mean(ad_tape *t, ad_var x)
{
    return ad_call_as(t, ad_op_mean, "ad_mean", (const ad_var[]){x}, 1, NULL, 0);
}

ADI_RULE_FAMILY(adi_family_reductions, "reductions",
                ADI_SEED(ad_op_sum, rule_sum),
                ADI_SEED(ad_op_mean, rule_mean));
