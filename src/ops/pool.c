/*
** pool.c: 2-D pooling, NCHW, as PyTorch: max_pool2d (pool_max.c), avg_pool2d and
** global_avg_pool2d (pool_avg.c); ceil_mode off, dilation 1. This file checks a call's
** attributes and shapes into the plan the loops of both files walk (pool_internal.h).
**
** Why direct loops and no im2col: a pooling window does one compare or add per
** element, so the cost is the passes over memory; each plane (one image's channel) is
** walked once, in order, windows clipped to the image once per output row and column.
** The 2x2 stride-2 unpadded window of LeNet-style nets has its own loops.
*/
#include <limits.h>

#include "pool_internal.h"

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

ad_status adi_pool_plane_sizes(const char *op, const ad_tensor *x, int64_t *planes,
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

ad_status adi_pool_plan_make(const char *op, const ad_ctx *cx, const ad_tensor *x,
                             bool index, adi_pool_plan *p)
{
    const ad_pool2d_attrs *at = ad_attrs(cx);
    if (!at)
        return ad_fail(AD_ERR_NULL, "%s: no context (primals run through ad_call)", op);
    int64_t planes = 0, hw = 0, ho = 0, wo = 0;
    ad_status rc = check_attrs(op, at);
    if (rc || (rc = adi_pool_plane_sizes(op, x, &planes, &hw)) ||
        (rc = out_extent(op, x, 0, at->kernel_h, at->pad_h, at->stride_h, &ho)) ||
        (rc = out_extent(op, x, 1, at->kernel_w, at->pad_w, at->stride_w, &wo)))
        return rc;
    if (index && hw > INT32_MAX) {
        char dx[64];
        return ad_fail(AD_ERR_OVERFLOW, "%s: x %s: a plane of %lld positions is beyond "
                       "the int32 argmax", op, ad_tensor_describe(x, dx, sizeof dx),
                       (long long)hw);
    }
    *p = (adi_pool_plan){.planes = planes, .h = x->shape[2], .w = x->shape[3], .ho = ho,
                         .wo = wo, .kh = at->kernel_h, .kw = at->kernel_w,
                         .sh = at->stride_h, .sw = at->stride_w, .ph = at->pad_h,
                         .pw = at->pad_w};
    return AD_OK;
}

ad_status adi_pool_out(ad_ctx *cx, const ad_tensor *x, const adi_pool_plan *p,
                       ad_tensor **out)
{
    return ad_out(cx, x->dtype, 4, (int64_t[]){x->shape[0], x->shape[1], p->ho, p->wo}, out);
}
