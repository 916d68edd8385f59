/*
** pool_max.c: max_pool2d, NCHW, as PyTorch's CPU kernel: padding is -infinity, the
** first maximum of a window in row-major order wins, a NaN is always taken.
**
** The primal saves its argmax (int32 positions in the plane) so that the pullback is a
** scatter that reads neither x nor y, and a memory-saving sweep may reuse both.
*/
#include <math.h>

#include "pool_internal.h"

/*
** y = max over each window, idx = its position ih*W + iw in the plane (when saving).
** PyTorch's CPU scan: start at -inf with the window's first position, take v when
** v > max or v is NaN; so ties go to the first in row-major order, NaN propagates.
*/
static void max_forward(const adi_pool_plan *p, ad_dtype dt, const void *x, void *y,
                        int32_t *idx)
{
    const int64_t H = p->h, W = p->w, Ho = p->ho, Wo = p->wo;
    AD_DISPATCH_FLOAT(dt, T, {
        for (int64_t pl = 0; pl < p->planes; pl++) {
            const T *xs = (const T *)x + pl * H * W;
            T *ys = (T *)y + pl * Ho * Wo;
            int32_t *is = idx ? idx + pl * Ho * Wo : NULL;
            for (int64_t oh = 0; oh < Ho; oh++) {
                int64_t h0, h1;
                adi_pool_window(oh, p->sh, p->ph, p->kh, H, &h0, &h1);
                for (int64_t ow = 0; ow < Wo; ow++) {
                    int64_t w0, w1;
                    adi_pool_window(ow, p->sw, p->pw, p->kw, W, &w0, &w1);
                    T m = (T)-INFINITY;
                    int64_t mi = h0 * W + w0;
                    for (int64_t ih = h0; ih < h1; ih++)
                        for (int64_t iw = w0; iw < w1; iw++) {
                            T v = xs[ih * W + iw];
                            if (v > m || isnan(v))
                                m = v, mi = ih * W + iw;
                        }
                    ys[oh * Wo + ow] = m;
                    if (is)
                        is[oh * Wo + ow] = (int32_t)mi;
                }
            }
        }
    });
}

/* The 2x2 stride-2 case of max_forward: the same scan over the four positions. */
static void max_forward_2x2(const adi_pool_plan *p, ad_dtype dt, const void *x, void *y,
                            int32_t *idx)
{
    const int64_t H = p->h, W = p->w, Ho = p->ho, Wo = p->wo;
    AD_DISPATCH_FLOAT(dt, T, {
        for (int64_t pl = 0; pl < p->planes; pl++) {
            const T *xs = (const T *)x + pl * H * W;
            T *ys = (T *)y + pl * Ho * Wo;
            int32_t *is = idx ? idx + pl * Ho * Wo : NULL;
            for (int64_t oh = 0; oh < Ho; oh++)
                for (int64_t ow = 0; ow < Wo; ow++) {
                    int64_t at[4] = {2 * oh * W + 2 * ow, 2 * oh * W + 2 * ow + 1,
                                     (2 * oh + 1) * W + 2 * ow, (2 * oh + 1) * W + 2 * ow + 1};
                    T m = xs[at[0]];
                    int64_t mi = at[0];
                    for (int k = 1; k < 4; k++) {
                        T v = xs[at[k]];
                        if (v > m || isnan(v))
                            m = v, mi = at[k];
                    }
                    ys[oh * Wo + ow] = m;
                    if (is)
                        is[oh * Wo + ow] = (int32_t)mi;
                }
        }
    });
}

ad_status ad_op_max_pool2d(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    const ad_tensor *x = in[0];
    adi_pool_plan p;
    ad_tensor *idx = NULL;
    ad_status rc = adi_pool_plan_make("max_pool2d", cx, x, true, &p);
    if (rc || (rc = adi_pool_out(cx, x, &p, out)))
        return rc;
    if (ad_ctx_saving(cx) && (rc = ad_save(cx, AD_I32, 4, (*out)->shape, &idx)))
        return rc;
    int32_t *is = idx ? idx->data : NULL;
    if (adi_pool_is_2x2_s2(&p))
        max_forward_2x2(&p, x->dtype, x->data, (*out)->data, is);
    else
        max_forward(&p, x->dtype, x->data, (*out)->data, is);
    return AD_OK;
}

/* y = x[argmax]:  dX[argmax] += dY  (reads the saved argmax, neither x nor y). */
static ad_status max_pool2d_pullback(ad_ctx *cx, const ad_tensor *dy,
                                     const ad_tensor *const in[], const ad_tensor *y,
                                     ad_tensor *const din[], const float beta[])
{
    (void)y;
    const ad_tensor *ix = ad_saved(cx);
    ad_tensor *dx = din[0];
    if (!dx)
        return AD_OK;
    if (!ix)
        return ad_fail(AD_ERR_NO_GRAD, "max_pool2d: no argmax was saved (the call was "
                       "recorded in forward-only mode)");
    if (beta[0] == 0.0f && dx->size)
        memset(dx->data, 0, (size_t)dx->size * ad_dtype_size(dx->dtype));
    const int64_t hw = in[0]->shape[2] * in[0]->shape[3], P = dy->shape[2] * dy->shape[3];
    const int64_t planes = in[0]->shape[0] * in[0]->shape[1];
    const int32_t *idx = ix->data;
    AD_DISPATCH_FLOAT(dy->dtype, T, {
        const T *g = dy->data;
        T *d = dx->data;
        for (int64_t pl = 0; pl < planes; pl++) {
            T *dp = d + pl * hw;
            const T *gp = g + pl * P;
            const int32_t *ip = idx + pl * P;
            for (int64_t o = 0; o < P; o++)
                dp[ip[o]] += gp[o];
        }
    });
    return AD_OK;
}

static const ad_rule rule_max_pool2d = {
    .name = "max_pool2d",
    .pullback = max_pool2d_pullback,
    .n_inputs = 1,
    .inputs = {{0, AD_RANK(4)}},
    .unread = AD_INPUT(0) | AD_OUTPUT, /* scatters dy to the saved argmax */
    .attrs_size = sizeof(ad_pool2d_attrs),
};

ad_var ad_max_pool2d(ad_tape *t, ad_var x, const ad_pool2d_attrs *attrs)
{
    return ad_call_as(t, ad_op_max_pool2d, "ad_max_pool2d", (const ad_var[]){x}, 1, attrs,
                      attrs ? sizeof *attrs : 0);
}

ADI_RULE_FAMILY(adi_family_max_pool, "max_pool", ADI_SEED(ad_op_max_pool2d, rule_max_pool2d));
