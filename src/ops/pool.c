/*
** pool.c: 2-D pooling, NCHW, as PyTorch: max_pool2d (padding is -infinity; the first
** maximum of a window in row-major order wins, a NaN is always taken), avg_pool2d
** (count_include_pad: every window divides by kh*kw, padding counts as zeros) and
** global_avg_pool2d (adaptive_avg_pool2d(x, 1)). ceil_mode off, dilation 1.
**
** Why direct loops and no im2col: a pooling window does one compare or add per
** element, so the cost is the passes over memory; each plane (one image's channel) is
** walked once, in order, windows clipped to the image once per output row and column.
** Max pool saves its argmax (int32 positions in the plane) so that its pullback is a
** scatter that reads neither x nor y, and a memory-saving sweep may reuse both. The
** 2x2 stride-2 unpadded window of LeNet-style nets has its own loops.
*/
#include <limits.h>
#include <math.h>

#include "ops_internal.h"

/* Checked geometry: planes = N*C images of h x w, pooled by kh x kw windows with
** strides sh, sw and paddings ph, pw into ho x wo. */
typedef struct pool_plan {
    int64_t planes, h, w, ho, wo, kh, kw, sh, sw, ph, pw;
} pool_plan;

/* The common LeNet window, with loops of its own. */
static bool is_2x2_s2(const pool_plan *p)
{
    return p->kh == 2 && p->kw == 2 && p->sh == 2 && p->sw == 2 && p->ph == 0 && p->pw == 0;
}

static ad_status check_attrs(const char *op, const ad_pool2d_attrs *at)
{
    const struct { const char *name; int v, min, max; } f[] = {
        {"kernel_h", at->kernel_h, 1, INT_MAX}, {"kernel_w", at->kernel_w, 1, INT_MAX},
        {"stride_h", at->stride_h, 1, INT_MAX}, {"stride_w", at->stride_w, 1, INT_MAX},
        {"pad_h", at->pad_h, 0, at->kernel_h / 2}, {"pad_w", at->pad_w, 0, at->kernel_w / 2},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        if (f[i].v < f[i].min)
            return ad_fail(AD_ERR_INVALID, "%s: %s is %d, must be >= %d (zero is not a "
                           "default: start from AD_POOL2D_ATTRS)", op, f[i].name, f[i].v,
                           f[i].min);
        if (f[i].v > f[i].max)
            return ad_fail(AD_ERR_INVALID, "%s: %s is %d, must be at most half the kernel "
                           "(%d), as PyTorch", op, f[i].name, f[i].v, f[i].max);
    }
    return AD_OK;
}

/* One output extent, (in + 2 pad - k) / stride + 1, or an error naming x. */
static ad_status out_extent(const char *op, const ad_tensor *x, int axis, int k, int pad,
                            int stride, int64_t *out)
{
    char dx[64];
    int64_t in = x->shape[2 + axis];
    if (in > INT64_MAX - 2 * (int64_t)pad)
        return ad_fail(AD_ERR_OVERFLOW, "%s: x %s padded by %d overflows", op,
                       ad_tensor_describe(x, dx, sizeof dx), pad);
    int64_t room = in + 2 * (int64_t)pad - k;
    if (room < 0)
        return ad_fail(AD_ERR_SHAPE, "%s: kernel %s %d does not fit x %s padded by %d: "
                       "output extent below 1", op, axis ? "width" : "height", k,
                       ad_tensor_describe(x, dx, sizeof dx), pad);
    *out = room / stride + 1;
    return AD_OK;
}

/* The plane count of x and its plane's element count, checked for overflow. */
static ad_status plane_sizes(const char *op, const ad_tensor *x, int64_t *planes,
                             int64_t *hw)
{
    char dx[64];
    if (x->ndim != 4)
        return ad_fail(AD_ERR_RANK, "%s: x %s must be rank 4 (N x C x H x W)", op,
                       ad_tensor_describe(x, dx, sizeof dx));
    if (x->shape[2] == 0 || x->shape[3] == 0)
        return ad_fail(AD_ERR_SHAPE, "%s: x %s has an empty plane", op,
                       ad_tensor_describe(x, dx, sizeof dx));
    int64_t n = x->shape[0], c = x->shape[1], h = x->shape[2], w = x->shape[3];
    if ((c != 0 && n > INT64_MAX / c) || w > INT64_MAX / h)
        return ad_fail(AD_ERR_OVERFLOW, "%s: x %s: sizes overflow", op,
                       ad_tensor_describe(x, dx, sizeof dx));
    *planes = n * c, *hw = h * w;
    return AD_OK;
}

/* Checks x against the node's attributes and fills the plan; `index`: the plane's
** positions must fit int32 (max pool's saved argmax). */
static ad_status pool_plan_make(const char *op, const ad_ctx *cx, const ad_tensor *x,
                                bool index, pool_plan *p)
{
    const ad_pool2d_attrs *at = ad_attrs(cx);
    if (!at)
        return ad_fail(AD_ERR_NULL, "%s: no context (primals run through ad_call)", op);
    int64_t planes = 0, hw = 0, ho = 0, wo = 0;
    ad_status rc = check_attrs(op, at);
    if (rc || (rc = plane_sizes(op, x, &planes, &hw)) ||
        (rc = out_extent(op, x, 0, at->kernel_h, at->pad_h, at->stride_h, &ho)) ||
        (rc = out_extent(op, x, 1, at->kernel_w, at->pad_w, at->stride_w, &wo)))
        return rc;
    if (index && hw > INT32_MAX) {
        char dx[64];
        return ad_fail(AD_ERR_OVERFLOW, "%s: x %s: a plane of %lld positions is beyond "
                       "the int32 argmax", op, ad_tensor_describe(x, dx, sizeof dx),
                       (long long)hw);
    }
    *p = (pool_plan){.planes = planes, .h = x->shape[2], .w = x->shape[3], .ho = ho,
                     .wo = wo, .kh = at->kernel_h, .kw = at->kernel_w, .sh = at->stride_h,
                     .sw = at->stride_w, .ph = at->pad_h, .pw = at->pad_w};
    return AD_OK;
}

/* Window [*lo, *hi) along one axis for output position o, clipped to [0, in). */
static inline void window(int64_t o, int64_t s, int64_t pad, int64_t k, int64_t in,
                          int64_t *lo, int64_t *hi)
{
    int64_t a = o * s - pad, b = a + k;
    *lo = a < 0 ? 0 : a;
    *hi = b > in ? in : b;
}

static ad_status pool_out(ad_ctx *cx, const ad_tensor *x, const pool_plan *p,
                          ad_tensor **out)
{
    return ad_out(cx, x->dtype, 4, (int64_t[]){x->shape[0], x->shape[1], p->ho, p->wo}, out);
}

/* ---- max_pool2d ---- */

/*
** y = max over each window, idx = its position ih*W + iw in the plane (when saving).
** PyTorch's CPU scan: start at -inf with the window's first position, take v when
** v > max or v is NaN; so ties go to the first in row-major order, NaN propagates.
*/
static void max_forward(const pool_plan *p, ad_dtype dt, const void *x, void *y,
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
                window(oh, p->sh, p->ph, p->kh, H, &h0, &h1);
                for (int64_t ow = 0; ow < Wo; ow++) {
                    int64_t w0, w1;
                    window(ow, p->sw, p->pw, p->kw, W, &w0, &w1);
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
static void max_forward_2x2(const pool_plan *p, ad_dtype dt, const void *x, void *y,
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
    pool_plan p;
    ad_tensor *idx = NULL;
    ad_status rc = pool_plan_make("max_pool2d", cx, x, true, &p);
    if (rc || (rc = pool_out(cx, x, &p, out)))
        return rc;
    if (ad_ctx_saving(cx) && (rc = ad_save(cx, AD_I32, 4, (*out)->shape, &idx)))
        return rc;
    int32_t *is = idx ? idx->data : NULL;
    if (is_2x2_s2(&p))
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

/* ---- avg_pool2d ---- */

/* y = sum over each window / (kh*kw), in double; padding adds nothing but counts. */
static void avg_forward(const pool_plan *p, ad_dtype dt, const void *x, void *y)
{
    const int64_t H = p->h, W = p->w, Ho = p->ho, Wo = p->wo;
    const double div = (double)(p->kh * p->kw);
    bool fast = is_2x2_s2(p);
    AD_DISPATCH_FLOAT(dt, T, {
        for (int64_t pl = 0; pl < p->planes; pl++) {
            const T *xs = (const T *)x + pl * H * W;
            T *ys = (T *)y + pl * Ho * Wo;
            for (int64_t oh = 0; oh < Ho; oh++) {
                int64_t h0, h1;
                window(oh, p->sh, p->ph, p->kh, H, &h0, &h1);
                for (int64_t ow = 0; ow < Wo; ow++) {
                    double s = 0;
                    if (fast) {
                        const T *r = xs + 2 * oh * W + 2 * ow;
                        s = (double)r[0] + (double)r[1] + (double)r[W] + (double)r[W + 1];
                    } else {
                        int64_t w0, w1;
                        window(ow, p->sw, p->pw, p->kw, W, &w0, &w1);
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
    pool_plan p;
    ad_status rc = pool_plan_make("avg_pool2d", cx, x, false, &p);
    if (rc || (rc = pool_out(cx, x, &p, out)))
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
    pool_plan p;
    ad_status rc;
    if (!dx)
        return AD_OK;
    if ((rc = pool_plan_make("avg_pool2d", cx, in[0], false, &p)))
        return rc;
    if (beta[0] == 0.0f && dx->size)
        memset(dx->data, 0, (size_t)dx->size * ad_dtype_size(dx->dtype));
    const int64_t H = p.h, W = p.w, Ho = p.ho, Wo = p.wo;
    bool fast = is_2x2_s2(&p);
    AD_DISPATCH_FLOAT(dy->dtype, T, {
        const T div = (T)(p.kh * p.kw);
        for (int64_t pl = 0; pl < p.planes; pl++) {
            const T *gs = (const T *)dy->data + pl * Ho * Wo;
            T *ds = (T *)dx->data + pl * H * W;
            for (int64_t oh = 0; oh < Ho; oh++) {
                int64_t h0, h1;
                window(oh, p.sh, p.ph, p.kh, H, &h0, &h1);
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
                    window(ow, p.sw, p.pw, p.kw, W, &w0, &w1);
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
    ad_status rc = plane_sizes("global_avg_pool2d", x, &planes, &hw);
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

static const ad_rule rule_max_pool2d = {
    .name = "max_pool2d",
    .pullback = max_pool2d_pullback,
    .n_inputs = 1,
    .inputs = {{0, AD_RANK(4)}},
    .unread = AD_INPUT(0) | AD_OUTPUT, /* scatters dy to the saved argmax */
    .attrs_size = sizeof(ad_pool2d_attrs),
};

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

ad_var ad_max_pool2d(ad_tape *t, ad_var x, const ad_pool2d_attrs *attrs)
{
    return ad_call_as(t, ad_op_max_pool2d, "ad_max_pool2d", (const ad_var[]){x}, 1, attrs,
                      attrs ? sizeof *attrs : 0);
}

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

ADI_RULE_FAMILY(adi_family_pool, "pool",
                ADI_SEED(ad_op_max_pool2d, rule_max_pool2d),
                ADI_SEED(ad_op_avg_pool2d, rule_avg_pool2d),
                ADI_SEED(ad_op_global_avg_pool2d, rule_global_avg_pool2d));
