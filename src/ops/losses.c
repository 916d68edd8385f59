/*
** losses.c: mean squared error, and softmax cross-entropy from logits and int32
** class labels. MSE reduces to a rank-0 value; cross-entropy to its mean or sum over
** rows, or keeps one loss per row (ad_softmax_ce_attrs). Sums accumulate in double.
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
    AD_DISPATCH_FLOAT(p->dtype, T, {
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
    AD_DISPATCH_FLOAT(p->dtype, T, {
        const T *a = p->data, *b = t->data;
        const T c = (T)(2.0 * *(const T *)dy->data / (double)p->size);
        T *d = din[0]->data;
        AD_PUT_EACH(d, p->size, beta[0], i, c * (a[i] - b[i]));
    });
    return AD_OK;
}

static const ad_rule rule_mse = {
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
** and m the row max, so every exponent is <= 0 and nothing overflows. When loss is not
** NULL each row's loss is written there (reduction none); when p is not NULL the row's
** softmax e^(z_ij - m) / s is written there for the pullback.
*/
#define DEFINE_CE_ROWS(T, suffix)                                                       \
    static double ce_rows_##suffix(const T *z, const int32_t *l, int64_t n, int64_t k,  \
                                   T *loss, T *p)                                       \
    {                                                                                   \
        double total = 0.0;                                                             \
        for (int64_t i = 0; i < n; i++) {                                               \
            const T *row = z + i * k;                                                   \
            double m = row[0], s = 0.0;                                                 \
            for (int64_t j = 1; j < k; j++)                                             \
                m = row[j] > m ? row[j] : m;                                            \
            for (int64_t j = 0; j < k; j++)                                             \
                s += exp((double)row[j] - m);                                           \
            double li = m + log(s) - (double)row[l[i]];                                 \
            total += li;                                                                \
            if (loss)                                                                   \
                loss[i] = (T)li;                                                        \
            for (int64_t j = 0; p && j < k; j++)                                        \
                p[i * k + j] = (T)(exp((double)row[j] - m) / s);                        \
        }                                                                               \
        return total;                                                                   \
    }
DEFINE_CE_ROWS(float, f32)
DEFINE_CE_ROWS(double, f64)

/* The reduction from the node's attributes (the caller's, or the rule's default of
** mean). Values outside the enum are refused, zero included: a zeroed struct is a
** forgotten AD_SOFTMAX_CE_ATTRS_DEFAULT, not a request for some reduction. */
static ad_status ce_reduction(const ad_ctx *cx, ad_reduction *out)
{
    const ad_softmax_ce_attrs *at = ad_attrs(cx);
    if (!at)
        return ad_fail(AD_ERR_NULL, "softmax_cross_entropy: no context (primals run "
                       "through ad_call)");
    if (at->reduction != AD_REDUCTION_NONE && at->reduction != AD_REDUCTION_MEAN &&
        at->reduction != AD_REDUCTION_SUM)
        return ad_fail(AD_ERR_INVALID, "softmax_cross_entropy: reduction %d is not "
                       "AD_REDUCTION_NONE (%d), _MEAN (%d) or _SUM (%d)", (int)at->reduction,
                       AD_REDUCTION_NONE, AD_REDUCTION_MEAN, AD_REDUCTION_SUM);
    *out = at->reduction;
    return AD_OK;
}

ad_status ad_op_softmax_cross_entropy(ad_ctx *cx, const ad_tensor *const in[],
                                      ad_tensor **out)
{
    const ad_tensor *z = in[0], *labels = in[1];
    int64_t n = z->shape[0], k = z->shape[1];
    ad_tensor *p = NULL;
    ad_reduction red = AD_REDUCTION_MEAN;
    ad_status rc = ce_reduction(cx, &red);
    if (rc || (rc = ce_check(z, labels)))
        return rc;
    bool per_row = red == AD_REDUCTION_NONE;
    if ((rc = ad_out(cx, z->dtype, per_row ? 1 : 0, &n, out)))
        return rc;
    if (ad_ctx_saving(cx) && (rc = ad_save(cx, z->dtype, 2, z->shape, &p)))
        return rc;
    void *loss = per_row ? (*out)->data : NULL, *ps = p ? p->data : NULL;
    double total;
    if (z->dtype == AD_F32)
        total = ce_rows_f32(z->data, labels->data, n, k, loss, ps);
    else
        total = ce_rows_f64(z->data, labels->data, n, k, loss, ps);
    if (!per_row)
        AD_DISPATCH_FLOAT(z->dtype, T, {
            *(T *)(*out)->data = (T)(red == AD_REDUCTION_MEAN ? total / (double)n : total);
        });
    return AD_OK;
}

/*
** L_i = -log softmax(z_i)[l_i]:  dz_i = c_i (softmax(z_i) - onehot(l_i)), with
** c_i = dy_i (none: dy holds one value per row), dy / n (mean), dy (sum).
*/
static ad_status ce_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                             const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)y;
    const ad_tensor *p = ad_saved(cx);
    ad_reduction red = ((const ad_softmax_ce_attrs *)ad_attrs(cx))->reduction;
    int64_t n = in[0]->shape[0], k = in[0]->shape[1];
    if (!din[0] || n == 0)
        return AD_OK;
    if (!p)
        return ad_fail(AD_ERR_NO_GRAD, "softmax_cross_entropy: no softmax was saved "
                       "(the call was recorded in forward-only mode)");
    const int32_t *l = in[1]->data;
    AD_DISPATCH_FLOAT(p->dtype, T, {
        const T *ps = p->data, *g = dy->data;
        const T scale = red == AD_REDUCTION_MEAN ? (T)(g[0] / (double)n) : g[0];
        T *d = din[0]->data;
        for (int64_t i = 0; i < n; i++) {
            const T c = red == AD_REDUCTION_NONE ? g[i] : scale;
            AD_PUT_EACH(d + i * k, k, beta[0], j, c * (ps[i * k + j] - (T)(j == l[i])));
        }
    });
    return AD_OK;
}

static const ad_rule rule_softmax_cross_entropy = {
    .name = "softmax_cross_entropy",
    .pullback = ce_pullback,
    .n_inputs = 2,
    .inputs = {{AD_ACCEPT_FLOAT, AD_RANK(2)}, {AD_ACCEPT_I32, AD_RANK(1)}},
    .nondiff = AD_INPUT(1),
    .unread = AD_INPUT(0) | AD_OUTPUT, /* reads the saved softmax, the labels and dy */
    .attrs_size = sizeof(ad_softmax_ce_attrs),
    .attrs_default = &AD_SOFTMAX_CE_ATTRS_DEFAULT,
};

/* ---- typed wrappers ---- */

ad_var ad_mse(ad_tape *t, ad_var pred, ad_var target)
{
    return ad_call_as(t, ad_op_mse, "ad_mse", (const ad_var[]){pred, target}, 2, NULL, 0);
}

/* Both wrappers pass the reduction explicitly; `name` is the one the caller spelled. */
static ad_var record_ce(ad_tape *t, const char *name, ad_var logits, ad_var labels,
                        ad_reduction reduction)
{
    ad_softmax_ce_attrs at = AD_SOFTMAX_CE_ATTRS_DEFAULT;
    at.reduction = reduction;
    return ad_call_as(t, ad_op_softmax_cross_entropy, name, (const ad_var[]){logits, labels},
                      2, &at, sizeof at);
}

ad_var ad_softmax_cross_entropy(ad_tape *t, ad_var logits, ad_var labels)
{
    return record_ce(t, "ad_softmax_cross_entropy", logits, labels, AD_REDUCTION_MEAN);
}

ad_var ad_softmax_cross_entropy_ex(ad_tape *t, ad_var logits, ad_var labels,
                                   ad_reduction reduction)
{
    return record_ce(t, "ad_softmax_cross_entropy_ex", logits, labels, reduction);
}

ADI_RULE_FAMILY(adi_family_losses, "losses",
                ADI_SEED(ad_op_mse, rule_mse),
                ADI_SEED(ad_op_softmax_cross_entropy, rule_softmax_cross_entropy));
