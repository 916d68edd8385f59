/*
** init.c: weight initialisers (Glorot/Xavier, He/Kaiming, uniform, zeros).
**
** Each fills a float32 or float64 tensor in row-major order, one draw per element
** (a normal draw takes two generator words), computing in double and rounding once to
** the tensor's dtype, then bumps the version. The formulas are those of
** torch.nn.init's xavier_uniform_, xavier_normal_, kaiming_uniform_ and
** kaiming_normal_ with their defaults (gain 1; relu gain sqrt(2), mode fan_in).
*/
#include <math.h>

#include "../base/base.h"
#include "ad_feedback.h"
#include "ad_nn.h"

typedef struct fans {
    double in, out;
} fans;

/*
** Rank 2 (out x in): fan_in = in, fan_out = out; rank 1: both the length, as ad_nn.h
** documents. Rank 3 and 4 follow torch.nn.init (a convolution kernel out x in x k...):
** both fans are multiplied by the receptive field, the product of the trailing
** extents. A scalar has fans of 1.
*/
static fans fans_of(const ad_tensor *t)
{
    if (t->ndim == 0)
        return (fans){1.0, 1.0};
    if (t->ndim == 1)
        return (fans){(double)t->shape[0], (double)t->shape[0]};
    double field = 1.0;
    for (int i = 2; i < t->ndim; i++)
        field *= (double)t->shape[i];
    return (fans){(double)t->shape[1] * field, (double)t->shape[0] * field};
}

double ad_usf_scale(const ad_tensor *w)
{
    if (!w)
        return NAN;
    fans f = fans_of(w);
    return sqrt(2.0 / (f.in + f.out));
}

static ad_status check_float(const char *what, const ad_tensor *t, const ad_rng *r,
                             bool needs_rng)
{
    if (!t || (needs_rng && !r))
        return ad_fail(AD_ERR_NULL, "%s: %s is NULL", what, t ? "generator" : "tensor");
    if (t->dtype != AD_F32 && t->dtype != AD_F64)
        return ad_fail(AD_ERR_DTYPE, "%s: needs an f32 or f64 tensor, not %s", what,
                       ad_dtype_name(t->dtype));
    return AD_OK;
}

/* lo + (hi - lo) u per element. In f32 the rounding may reach hi itself. */
static void fill_uniform(ad_tensor *t, ad_rng *r, double lo, double hi)
{
    double span = hi - lo;
    if (t->dtype == AD_F32) {
        float *x = t->data;
        for (int64_t i = 0; i < t->size; i++)
            x[i] = (float)(lo + span * ad_rng_uniform(r));
    } else {
        double *x = t->data;
        for (int64_t i = 0; i < t->size; i++)
            x[i] = lo + span * ad_rng_uniform(r);
    }
    ad_tensor_touch(t);
}

static void fill_normal(ad_tensor *t, ad_rng *r, double std)
{
    if (t->dtype == AD_F32) {
        float *x = t->data;
        for (int64_t i = 0; i < t->size; i++)
            x[i] = (float)(std * ad_rng_normal(r));
    } else {
        double *x = t->data;
        for (int64_t i = 0; i < t->size; i++)
            x[i] = std * ad_rng_normal(r);
    }
    ad_tensor_touch(t);
}

/* U(-a, a), a = sqrt(6 / (fan_in + fan_out)): variance 2 / (fan_in + fan_out). */
ad_status ad_init_glorot_uniform(ad_tensor *t, ad_rng *r)
{
    ad_status rc = check_float("ad_init_glorot_uniform", t, r, true);
    if (rc)
        return rc;
    fans f = fans_of(t);
    double a = t->size > 0 ? sqrt(6.0 / (f.in + f.out)) : 0.0;
    fill_uniform(t, r, -a, a);
    return AD_OK;
}

ad_status ad_init_glorot_normal(ad_tensor *t, ad_rng *r)
{
    ad_status rc = check_float("ad_init_glorot_normal", t, r, true);
    if (rc)
        return rc;
    fans f = fans_of(t);
    fill_normal(t, r, t->size > 0 ? sqrt(2.0 / (f.in + f.out)) : 0.0);
    return AD_OK;
}

/* U(-a, a), a = sqrt(6 / fan_in): variance 2 / fan_in, kept through a relu. */
ad_status ad_init_he_uniform(ad_tensor *t, ad_rng *r)
{
    ad_status rc = check_float("ad_init_he_uniform", t, r, true);
    if (rc)
        return rc;
    double a = t->size > 0 ? sqrt(6.0 / fans_of(t).in) : 0.0;
    fill_uniform(t, r, -a, a);
    return AD_OK;
}

ad_status ad_init_he_normal(ad_tensor *t, ad_rng *r)
{
    ad_status rc = check_float("ad_init_he_normal", t, r, true);
    if (rc)
        return rc;
    fill_normal(t, r, t->size > 0 ? sqrt(2.0 / fans_of(t).in) : 0.0);
    return AD_OK;
}

/* Like torch.nn.init.uniform_, which also refuses lo > hi; NaN bounds are refused too
** so a typo cannot fill a weight with NaN. */
ad_status ad_init_uniform(ad_tensor *t, ad_rng *r, double lo, double hi)
{
    ad_status rc = check_float("ad_init_uniform", t, r, true);
    if (rc)
        return rc;
    if (!(lo <= hi) || !isfinite(lo) || !isfinite(hi))
        return ad_fail(AD_ERR_INVALID, "ad_init_uniform: bounds [%g, %g) are not finite "
                       "with lo <= hi", lo, hi);
    fill_uniform(t, r, lo, hi);
    return AD_OK;
}

ad_status ad_init_zeros(ad_tensor *t)
{
    ad_status rc = check_float("ad_init_zeros", t, NULL, false);
    if (rc)
        return rc;
    return ad_tensor_fill(t, 0.0);
}
