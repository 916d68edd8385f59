/*
** bce.c: binary cross-entropy from logits, as torch.nn.BCEWithLogitsLoss, with the
** three reductions of ad_reduction over every element. Sums accumulate in double.
*/
#include <tgmath.h>

#include "ops_internal.h"

/* The reduction from the node's attributes (the caller's or the default of mean);
** values outside the enum, zero included, are refused. */
static ad_status bce_reduction(const ad_ctx *cx, ad_reduction *out)
{
    const ad_bce_attrs *at = ad_attrs(cx);
    if (!at)
        return ad_fail(AD_ERR_NULL, "bce_with_logits: no context (primals run through "
                       "ad_call)");
    if (at->reduction != AD_REDUCTION_NONE && at->reduction != AD_REDUCTION_MEAN &&
        at->reduction != AD_REDUCTION_SUM)
        return ad_fail(AD_ERR_INVALID, "bce_with_logits: reduction %d is not "
                       "AD_REDUCTION_NONE (%d), _MEAN (%d) or _SUM (%d)", (int)at->reduction,
                       AD_REDUCTION_NONE, AD_REDUCTION_MEAN, AD_REDUCTION_SUM);
    *out = at->reduction;
    return AD_OK;
}

/*
** l = max(x, 0) - x z + log1p(e^-|x|): the exponent is never positive, so nothing
** overflows, and for |x| large the log1p term vanishes instead of cancelling.
*/
ad_status ad_op_bce_with_logits(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    const ad_tensor *x = in[0], *z = in[1];
    ad_reduction red = AD_REDUCTION_MEAN;
    ad_status rc = bce_reduction(cx, &red);
    if (rc || (rc = adi_require_same_shape("bce_with_logits", x, z)))
        return rc;
    bool keep = red == AD_REDUCTION_NONE;
    if ((rc = ad_out(cx, x->dtype, keep ? x->ndim : 0, x->shape, out)))
        return rc;
    AD_DISPATCH_FLOAT(x->dtype, T, {
        const T *xs = x->data, *zs = z->data;
        T *y = (*out)->data;
        double total = 0.0;
        for (int64_t i = 0; i < x->size; i++) {
            T l = (xs[i] > 0 ? xs[i] : 0) - xs[i] * zs[i] + log1p(exp(-fabs(xs[i])));
            if (keep)
                y[i] = l;
            total += (double)l;
        }
        if (!keep)
            *y = (T)(red == AD_REDUCTION_MEAN ? total / (double)x->size : total);
    });
    return AD_OK;
}

/* l = BCE(x, z):  dx = c (sigmoid(x) - z), c = dy (none, elementwise), dy / N, dy */
static ad_status bce_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                              const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)y;
    const ad_tensor *x = in[0], *z = in[1];
    if (!din[0] || x->size == 0)
        return AD_OK;
    ad_reduction red = ((const ad_bce_attrs *)ad_attrs(cx))->reduction;
    AD_DISPATCH_FLOAT(x->dtype, T, {
        const T *xs = x->data, *zs = z->data, *g = dy->data;
        const T c = red == AD_REDUCTION_MEAN ? (T)(g[0] / (double)x->size) : g[0];
        T *d = din[0]->data;
        for (int64_t i = 0; i < x->size; i++) {
            T e = exp(-fabs(xs[i]));
            T s = xs[i] >= 0 ? 1 / (1 + e) : e / (1 + e); /* sigmoid, no overflow */
            T v = (red == AD_REDUCTION_NONE ? g[i] : c) * (s - zs[i]);
            d[i] = beta[0] != 0.0f ? d[i] + v : v;
        }
    });
    return AD_OK;
}

static const ad_rule rule_bce_with_logits = {
    .name = "bce_with_logits",
    .pullback = bce_pullback,
    .n_inputs = 2,
    .nondiff = AD_INPUT(1),
    .unread = AD_OUTPUT, /* reads x, z and dy */
    .attrs_size = sizeof(ad_bce_attrs),
    .attrs_default = &AD_BCE_ATTRS_DEFAULT,
};

/* Both wrappers pass the reduction explicitly; `name` is the one the caller spelled. */
static ad_var record_bce(ad_tape *t, const char *name, ad_var logits, ad_var targets,
                         ad_reduction reduction)
{
    ad_bce_attrs at = AD_BCE_ATTRS_DEFAULT;
    at.reduction = reduction;
    return ad_call_as(t, ad_op_bce_with_logits, name, (const ad_var[]){logits, targets}, 2,
                      &at, sizeof at);
}

ad_var ad_bce_with_logits(ad_tape *t, ad_var logits, ad_var targets)
{
    return record_bce(t, "ad_bce_with_logits", logits, targets, AD_REDUCTION_MEAN);
}

ad_var ad_bce_with_logits_ex(ad_tape *t, ad_var logits, ad_var targets,
                             ad_reduction reduction)
{
    return record_bce(t, "ad_bce_with_logits_ex", logits, targets, reduction);
}

ADI_RULE_FAMILY(adi_family_bce, "bce",
                ADI_SEED(ad_op_bce_with_logits, rule_bce_with_logits));
