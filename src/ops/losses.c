/*
** losses.c: mean squared error, and softmax cross-entropy from logits and int32
** class labels. Both reduce to a rank-0 value, accumulating in double.
*/
#include <math.h>

#include "ops_internal.h"

/* ---- mse ---- */

/* Like torch.nn.MSELoss, the mean over zero elements is 0/0 = NaN. */
ad_status ad_op_mse(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    const ad_tensor *p = in[0], *t = in[1];
    ad_status rc = adi_require_same_shape("mse", p, t);
    if (rc || (rc = ad_out(cx, p->dtype, 0, NULL, out)))
        return rc;
    AD_TYPED(p->dtype, {
        const T *a = p->data, *b = t->data;
        double s = 0.0;
        for (int64_t i = 0; i < p->size; i++) {
            double d = (double)a[i] - (double)b[i];
            s += d * d;
        }
        *(T *)(*out)->data = (T)(s / (double)p->size);
    });
    return AD_OK;
}

/* L = (1/N) sum_i (p_i - t_i)^2:  dp = dy 2 (p - t) / N;  t is not differentiated */
static ad_status mse_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                              const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)y;
    const ad_tensor *p = in[0], *t = in[1];
    if (!din[0] || p->size == 0)
        return AD_OK;
    AD_TYPED(p->dtype, {
        const T *a = p->data, *b = t->data;
        const T c = (T)(2.0 * *(const T *)dy->data / (double)p->size);
        T *d = din[0]->data;
        AD_PUT_EACH(d, p->size, beta[0], i, c * (a[i] - b[i]));
    });
    return AD_OK;
}

const ad_rule ad_rule_mse = {
    .name = "mse", .pullback = mse_pullback, .n_inputs = 2, .nondiff = AD_INPUT(1),
    .unread = AD_OUTPUT};

/* ---- softmax cross-entropy ---- */

/* One label per row, each naming one of the k classes; checked before any output. */
static ad_status ce_check(const ad_tensor *z, const ad_tensor *labels)
{
    int64_t n = z->shape[0], k = z->shape[1];
    if (labels->shape[0] != n) {
        char dz[64], dl[64];
        return ad_fail(AD_ERR_SHAPE, "softmax_cross_entropy: labels %s do not give one "
                       "label per row of logits %s", ad_tensor_describe(labels, dl, sizeof dl),
                       ad_tensor_describe(z, dz, sizeof dz));
    }
    const int32_t *l = labels->data;
    for (int64_t i = 0; i < n; i++)
        if (l[i] < 0 || l[i] >= k)
            return ad_fail(AD_ERR_INVALID, "softmax_cross_entropy: row %lld has label %d, "
                           "outside the %lld classes 0..%lld", (long long)i, (int)l[i],
                           (long long)k, (long long)(k - 1));
    return AD_OK;
}

/*
** Sum over rows of logsumexp(z_i) - z_i[l_i], with logsumexp = m + log sum_j e^(z_ij - m)
** and m the row max, so every exponent is <= 0 and nothing overflows. When p is not
** NULL the row's softmax e^(z_ij - m) / s is written there for the pullback.
*/
#define DEFINE_CE_ROWS(T, suffix)                                                       \
    static double ce_rows_##suffix(const T *z, const int32_t *l, int64_t n, int64_t k,  \
                                   T *p)                                                \
    {                                                                                   \
        double total = 0.0;                                                             \
        for (int64_t i = 0; i < n; i++) {                                               \
            const T *row = z + i * k;                                                   \
            double m = row[0], s = 0.0;                                                 \
            for (int64_t j = 1; j < k; j++)                                             \
                m = row[j] > m ? row[j] : m;                                            \
            for (int64_t j = 0; j < k; j++)                                             \
                s += exp((double)row[j] - m);                                           \
            total += m + log(s) - (double)row[l[i]];                                    \
            for (int64_t j = 0; p && j < k; j++)                                        \
                p[i * k + j] = (T)(exp((double)row[j] - m) / s);                        \
        }                                                                               \
        return total;                                                                   \
    }
DEFINE_CE_ROWS(float, f32)
DEFINE_CE_ROWS(double, f64)

ad_status ad_op_softmax_cross_entropy(ad_ctx *cx, const ad_tensor *const in[],
                                      ad_tensor **out)
{
    const ad_tensor *z = in[0], *labels = in[1];
    int64_t n = z->shape[0], k = z->shape[1];
    ad_tensor *p = NULL;
    ad_status rc = ce_check(z, labels);
    if (rc || (rc = ad_out(cx, z->dtype, 0, NULL, out)))
        return rc;
    if (ad_ctx_saving(cx) && (rc = ad_save(cx, z->dtype, 2, z->shape, &p)))
        return rc;
    double total;
    if (z->dtype == AD_F32)
        total = ce_rows_f32(z->data, labels->data, n, k, p ? p->data : NULL);
    else
        total = ce_rows_f64(z->data, labels->data, n, k, p ? p->data : NULL);
    AD_TYPED(z->dtype, { *(T *)(*out)->data = (T)(total / (double)n); });
    return AD_OK;
}

/* L = (1/n) sum_i -log softmax(z_i)[l_i]:  dz = dy (softmax(z) - onehot(l)) / n */
static ad_status ce_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                             const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)y;
    const ad_tensor *p = ad_saved(cx);
    int64_t n = in[0]->shape[0], k = in[0]->shape[1];
    if (!din[0] || n == 0)
        return AD_OK;
    if (!p)
        return ad_fail(AD_ERR_NO_GRAD, "softmax_cross_entropy: no softmax was saved "
                       "(the call was recorded in forward-only mode)");
    const int32_t *l = in[1]->data;
    AD_TYPED(p->dtype, {
        const T *ps = p->data;
        const T c = (T)(*(const T *)dy->data / (double)n);
        T *d = din[0]->data;
        for (int64_t i = 0; i < n; i++)
            AD_PUT_EACH(d + i * k, k, beta[0], j, c * (ps[i * k + j] - (T)(j == l[i])));
    });
    return AD_OK;
}

const ad_rule ad_rule_softmax_cross_entropy = {
    .name = "softmax_cross_entropy",
    .pullback = ce_pullback,
    .n_inputs = 2,
    .inputs = {{AD_ACCEPT_FLOAT, AD_RANK(2)}, {AD_ACCEPT_I32, AD_RANK(1)}},
    .nondiff = AD_INPUT(1),
    .unread = AD_INPUT(0) | AD_OUTPUT, /* reads the saved softmax and the labels */
};

/* ---- typed wrappers ---- */

ad_var ad_mse(ad_tape *t, ad_var pred, ad_var target)
{
    return ad_call_as(t, ad_op_mse, "ad_mse", (const ad_var[]){pred, target}, 2, NULL, 0);
}

ad_var ad_softmax_cross_entropy(ad_tape *t, ad_var logits, ad_var labels)
{
    return ad_call_as(t, ad_op_softmax_cross_entropy, "ad_softmax_cross_entropy",
                      (const ad_var[]){logits, labels}, 2, NULL, 0);
}
