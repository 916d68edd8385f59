/*
** pool_avg.c: avg_pool2d (count_include_pad, as PyTorch's default: every window
** divides by kh*kw, padding counts as zeros) and global_avg_pool2d
** (adaptive_avg_pool2d(x, 1)), NCHW; sums in double. Both pullbacks read dy alone.
*/
#include "pool_internal.h"

/* y = sum over each window / (kh*kw), in double; padding adds nothing but counts. */
static void avg_forward(const adi_pool_plan *p, ad_dtype dt, const void *x, void *y)
{
    const int64_t H = p->h, W = p->w, Ho = p->ho, Wo = p->wo;
    const double div = (double)(p->kh * p->kw);
    bool fast = adi_pool_is_2x2_s2(p);
    AD_DISPATCH_FLOAT(dt, T, {
        for (int64_t pl = 0; pl < p->planes; pl++) {
            const T *xs = (const T *)x + pl * H * W;
            T *ys = (T *)y + pl * Ho * Wo;
            for (int64_t oh = 0; oh < Ho; oh++) {
                int64_t h0, h1;
                adi_pool_window(oh, p->sh, p->ph, p->kh, H, &h0, &h1);
                for (int64_t ow = 0; ow < Wo; ow++) {
                    double s = 0;
                    if (fast) {
                        const T *r = xs + 2 * oh * W + 2 * ow;
                        s = (double)r[0] + (double)r[1] + (double)r[W] + (double)r[W + 1];
                    } else {
                        int64_t w0, w1;
                        adi_pool_window(ow, p->sw, p->pw, p->kw, W, &w0, &w1);
                        for (int64_t ih = h0; ih < h1; ih++)
                            for (int64_t iw = w0; iw < w1; iw++)
                                s += (double)xs[ih * W + iw];
                    }
                    ys[oh * Wo + ow] = (T)(s / div);
                }
            }
        }
    });
}

ad_status ad_op_avg_pool2d(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    const ad_tensor *x = in[0];
    adi_pool_plan p;
    ad_status rc = adi_pool_plan_make("avg_pool2d", cx, x, false, &p);
    if (rc || (rc = adi_pool_out(cx, x, &p, out)))
        return rc;
    avg_forward(&p, x->dtype, x->data, (*out)->data);
    return AD_OK;
}

/* y = mean of each window:  dX[window] += dY / (kh*kw)  (reads dy alone). */
static ad_status avg_pool2d_pullback(ad_ctx *cx, const ad_tensor *dy,
                                     const ad_tensor *const in[], const ad_tensor *y,
                                     ad_tensor *const din[], const float beta[])
{
    (void)y;
    ad_tensor *dx = din[0];
    adi_pool_plan p;
    ad_status rc;
    if (!dx)
        return AD_OK;
    if ((rc = adi_pool_plan_make("avg_pool2d", cx, in[0], false, &p)))
        return rc;
    if (beta[0] == 0.0f && dx->size)
        memset(dx->data, 0, (size_t)dx->size * ad_dtype_size(dx->dtype));
    const int64_t H = p.h, W = p.w, Ho = p.ho, Wo = p.wo;
    bool fast = adi_pool_is_2x2_s2(&p);
    AD_DISPATCH_FLOAT(dy->dtype, T, {
        const T div = (T)(p.kh * p.kw);
        for (int64_t pl = 0; pl < p.planes; pl++) {
            const T *gs = (const T *)dy->data + pl * Ho * Wo;
            T *ds = (T *)dx->data + pl * H * W;
            for (int64_t oh = 0; oh < Ho; oh++) {
                int64_t h0, h1;
                adi_pool_window(oh, p.sh, p.ph, p.kh, H, &h0, &h1);
                if (fast) {
                    T *r0 = ds + 2 * oh * W, *r1 = r0 + W;
                    for (int64_t ow = 0; ow < Wo; ow++) {
                        T g = gs[oh * Wo + ow] / div;
                        r0[2 * ow] += g, r0[2 * ow + 1] += g;
                        r1[2 * ow] += g, r1[2 * ow + 1] += g;
                    }
                    continue;
                }
                for (int64_t ow = 0; ow < Wo; ow++) {
                    int64_t w0, w1;
                    adi_pool_window(ow, p.sw, p.pw, p.kw, W, &w0, &w1);
                    T g = gs[oh * Wo + ow] / div;
                    for (int64_t ih = h0; ih < h1; ih++)
                        for (int64_t iw = w0; iw < w1; iw++)
                            ds[ih * W + iw] += g;
                }
            }
        }
    });
    return AD_OK;
}

/* ---- global_avg_pool2d ---- */

ad_status ad_op_global_avg_pool2d(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    const ad_tensor *x = in[0];
    int64_t planes, hw;
    ad_status rc = adi_pool_plane_sizes("global_avg_pool2d", x, &planes, &hw);
    if (rc || (rc = ad_out(cx, x->dtype, 4, (int64_t[]){x->shape[0], x->shape[1], 1, 1},
                           out)))
        return rc;
    AD_DISPATCH_FLOAT(x->dtype, T, {
        const T *xs = x->data;
        T *ys = (*out)->data;
        for (int64_t pl = 0; pl < planes; pl++) {
            double s = 0;
            for (int64_t i = 0; i < hw; i++)
                s += (double)xs[pl * hw + i];
            ys[pl] = (T)(s / (double)hw);
        }
    });
    return AD_OK;
}

/* y[n, c] = mean of the plane:  dX[n, c, ., .] = dY[n, c] / (H*W)  (reads dy alone). */
static ad_status global_avg_pool2d_pullback(ad_ctx *cx, const ad_tensor *dy,
                                            const ad_tensor *const in[],
                                            const ad_tensor *y, ad_tensor *const din[],
                                            const float beta[])
{
    (void)cx, (void)y;
    if (!din[0])
        return AD_OK;
    const int64_t hw = in[0]->shape[2] * in[0]->shape[3], planes = dy->size;
    AD_DISPATCH_FLOAT(dy->dtype, T, {
        const T *gs = dy->data;
        T *d = din[0]->data;
        for (int64_t pl = 0; pl < planes; pl++) {
            const T g = (T)((double)gs[pl] / (double)hw);
            T *dp = d + pl * hw;
            AD_PUT_EACH(dp, hw, beta[0], i, g);
        }
    });
    return AD_OK;
}

static const ad_rule rule_avg_pool2d = {
    .name = "avg_pool2d",
    .pullback = avg_pool2d_pullback,
    .n_inputs = 1,
    .inputs = {{0, AD_RANK(4)}},
    .unread = AD_INPUT(0) | AD_OUTPUT, /* dy alone, x's shape */
    .attrs_size = sizeof(ad_pool2d_attrs),
};

static const ad_rule rule_global_avg_pool2d = {
    .name = "global_avg_pool2d",
    .pullback = global_avg_pool2d_pullback,
    .n_inputs = 1,
    .inputs = {{0, AD_RANK(4)}},
    .unread = AD_INPUT(0) | AD_OUTPUT,
};

ad_var ad_avg_pool2d(ad_tape *t, ad_var x, const ad_pool2d_attrs *attrs)
{
    return ad_call_as(t, ad_op_avg_pool2d, "ad_avg_pool2d", (const ad_var[]){x}, 1, attrs,
                      attrs ? sizeof *attrs : 0);
}

ad_var ad_global_avg_pool2d(ad_tape *t, ad_var x)
{
    return ad_call_as(t, ad_op_global_avg_pool2d, "ad_global_avg_pool2d",
                      (const ad_var[]){x}, 1, NULL, 0);
}

ADI_RULE_FAMILY(adi_family_avg_pool, "avg_pool",
                ADI_SEED(ad_op_avg_pool2d, rule_avg_pool2d),
                ADI_SEED(ad_op_global_avg_pool2d, rule_global_avg_pool2d));
