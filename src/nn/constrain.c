/*
** constrain.c: the weight-norm constraint (see ad_nn.h): weights rescaled after every
** step to their initial Frobenius norms, which live in a caller's float64 tensor so
** checkpoints carry them like any buffer.
*/
#include <math.h>

#include "../base/base.h"
#include "ad_nn.h"

static double frobenius(const ad_tensor *w)
{
    double s = 0.0;
    if (w->dtype == AD_F32) {
        const float *x = w->data;
        for (int64_t k = 0; k < w->size; k++)
            s += (double)x[k] * (double)x[k];
    } else {
        const double *x = w->data;
        for (int64_t k = 0; k < w->size; k++)
            s += x[k] * x[k];
    }
    return sqrt(s);
}

/* Everything both calls need before they write anything. */
static ad_status check_args(const char *what, ad_tensor *const weights[], int n,
                            const ad_tensor *norms)
{
    char d[64];
    if (!weights || !norms)
        return ad_fail(AD_ERR_NULL, "%s: %s is NULL", what, weights ? "norms" : "weights");
    if (n < 0)
        return ad_fail(AD_ERR_INVALID, "%s: n = %d is negative", what, n);
    if (norms->dtype != AD_F64)
        return ad_fail(AD_ERR_DTYPE, "%s: norms %s must be float64", what,
                       ad_tensor_describe(norms, d, sizeof d));
    if (norms->ndim != 1 || norms->shape[0] != n)
        return ad_fail(AD_ERR_SHAPE, "%s: norms %s must be rank 1 of %d elements", what,
                       ad_tensor_describe(norms, d, sizeof d), n);
    for (int i = 0; i < n; i++) {
        if (!weights[i])
            return ad_fail(AD_ERR_NULL, "%s: weights[%d] is NULL", what, i);
        if (weights[i]->dtype != AD_F32 && weights[i]->dtype != AD_F64)
            return ad_fail(AD_ERR_DTYPE, "%s: weights[%d] %s is not a float tensor", what,
                           i, ad_tensor_describe(weights[i], d, sizeof d));
    }
    return AD_OK;
}

ad_status ad_weight_norms_record(ad_tensor *const weights[], int n, ad_tensor *norms)
{
    ad_status rc = check_args("ad_weight_norms_record", weights, n, norms);
    if (rc)
        return rc;
    for (int i = 0; i < n; i++)
        ((double *)norms->data)[i] = frobenius(weights[i]);
    ad_tensor_touch(norms);
    return AD_OK;
}

/* w *= n0 / ||w||, the factor in double, each product rounded to w's dtype. */
ad_status ad_constrain_weights(ad_tensor *const weights[], int n, const ad_tensor *norms)
{
    ad_status rc = check_args("ad_constrain_weights", weights, n, norms);
    if (rc)
        return rc;
    const double *n0 = norms->data;
    for (int i = 0; i < n; i++)
        if (!(n0[i] >= 0.0 && isfinite(n0[i])))
            return ad_fail(AD_ERR_INVALID, "ad_constrain_weights: norms[%d] = %g is not a "
                           "norm (negative or not finite)", i, n0[i]);
    for (int i = 0; i < n; i++) {
        ad_tensor *w = weights[i];
        double now = frobenius(w);
        if (!(now > 0.0 && isfinite(now)))
            continue;
        double f = n0[i] / now;
        if (w->dtype == AD_F32) {
            float *x = w->data;
            for (int64_t k = 0; k < w->size; k++)
                x[k] = (float)((double)x[k] * f);
        } else {
            double *x = w->data;
            for (int64_t k = 0; k < w->size; k++)
                x[k] *= f;
        }
        ad_tensor_touch(w);
    }
    return AD_OK;
}
