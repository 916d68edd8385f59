/*
** images.c: image transforms on N x C x H x W float tensors: bilinear resizing,
** per-channel normalisation, random crop and flip.
*/
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "../base/base.h"
#include "ad_io.h"

/* A 4-D float tensor, or the error naming `what`. */
static ad_status check_nchw(const char *what, const char *name, const ad_tensor *t)
{
    if (t->ndim != 4)
        return ad_fail(AD_ERR_RANK, "%s: %s has rank %d, expected 4 (N x C x H x W)", what,
                       name, t->ndim);
    if (t->dtype != AD_F32 && t->dtype != AD_F64)
        return ad_fail(AD_ERR_DTYPE, "%s: %s is %s, expected f32 or f64", what, name,
                       ad_dtype_name(t->dtype));
    return AD_OK;
}

ad_status ad_normalize_channels(ad_tensor *images, const double *mean, const double *std)
{
    static const char what[] = "ad_normalize_channels";
    if (!images || !mean || !std)
        return ad_fail(AD_ERR_NULL, "%s: %s is NULL", what,
                       !images ? "images" : !mean ? "mean" : "std");
    ad_status rc = check_nchw(what, "images", images);
    if (rc)
        return rc;
    int64_t n = images->shape[0], c = images->shape[1];
    int64_t plane = images->shape[2] * images->shape[3];
    /* every channel's values checked before the first write */
    for (int64_t k = 0; k < c; k++)
        if (!isfinite(mean[k]) || !isfinite(std[k]) || !(std[k] > 0))
            return ad_fail(AD_ERR_INVALID, "%s: channel %" PRId64 ": mean %g, std %g (the "
                           "mean must be finite, the std finite and > 0)", what, k, mean[k],
                           std[k]);
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = 0; k < c; k++) {
            int64_t at = (i * c + k) * plane;
            /* divide, not multiply by 1 / std: the same rounding as PyTorch's Normalize */
            if (images->dtype == AD_F32) {
                float *p = (float *)images->data + at;
                float m = (float)mean[k], s = (float)std[k];
                for (int64_t j = 0; j < plane; j++)
                    p[j] = (p[j] - m) / s;
            } else {
                double *p = (double *)images->data + at;
                for (int64_t j = 0; j < plane; j++)
                    p[j] = (p[j] - mean[k]) / std[k];
            }
        }
    ad_tensor_touch(images);
    return AD_OK;
}

/*
** One channel plane: dst[h][w] = padded src[oy + h][ox + w] (mirrored: column
** W - 1 - w of the window), zero outside the image. Rows of the window that miss the
** image are zeroed whole.
*/
#define CROP_PLANE(T)                                                                   \
    do {                                                                                \
        const T *s = (const T *)src_plane;                                              \
        T *d = (T *)dst_plane;                                                          \
        for (int64_t h = 0; h < H; h++) {                                               \
            int64_t sh = oy + h - pad;                                                  \
            T *row = d + h * W;                                                         \
            for (int64_t w = 0; w < W; w++) {                                           \
                int64_t sw = ox + (flip ? W - 1 - w : w) - pad;                         \
                row[w] = sh >= 0 && sh < H && sw >= 0 && sw < W ? s[sh * W + sw] : 0;   \
            }                                                                           \
        }                                                                               \
    } while (0)

ad_status ad_random_crop_flip(const ad_tensor *src, ad_tensor *dst, int pad, ad_rng *rng)
{
    static const char what[] = "ad_random_crop_flip";
    if (!src || !dst || !rng)
        return ad_fail(AD_ERR_NULL, "%s: %s is NULL", what,
                       !src ? "src" : !dst ? "dst" : "rng");
    ad_status rc = check_nchw(what, "src", src);
    if (!rc)
        rc = check_nchw(what, "dst", dst);
    if (rc)
        return rc;
    char a[64], b[64];
    if (src->dtype != dst->dtype)
        return ad_fail(AD_ERR_DTYPE, "%s: src is %s but dst is %s", what,
                       ad_dtype_name(src->dtype), ad_dtype_name(dst->dtype));
    if (!adi_same_shape(src, dst))
        return ad_fail(AD_ERR_SHAPE, "%s: src is %s but dst is %s", what,
                       ad_tensor_describe(src, a, sizeof a),
                       ad_tensor_describe(dst, b, sizeof b));
    if (pad < 0)
        return ad_fail(AD_ERR_INVALID, "%s: pad is %d, must be >= 0", what, pad);
    size_t bytes = (size_t)src->size * ad_dtype_size(src->dtype);
    const char *s0 = src->data, *d0 = dst->data;
    /* the crop reads pixels the loop has already written: dst must not overlap src */
    if (bytes > 0 && s0 < d0 + bytes && d0 < s0 + bytes)
        return ad_fail(AD_ERR_INVALID, "%s: src and dst share memory", what);
    int64_t N = src->shape[0], C = src->shape[1], H = src->shape[2], W = src->shape[3];
    uint64_t span = 2 * (uint64_t)pad + 1;
    size_t plane_bytes = (size_t)(H * W) * ad_dtype_size(src->dtype);
    for (int64_t i = 0; i < N; i++) {
        /* the documented order: row offset, column offset, flip */
        int64_t oy = (int64_t)(ad_rng_u64(rng) % span);
        int64_t ox = (int64_t)(ad_rng_u64(rng) % span);
        int flip = (int)(ad_rng_u64(rng) >> 63); /* the top bit: the low ones are weakest */
        for (int64_t k = 0; k < C; k++) {
            const char *src_plane = s0 + (size_t)(i * C + k) * plane_bytes;
            char *dst_plane = (char *)d0 + (size_t)(i * C + k) * plane_bytes;
            if (src->dtype == AD_F32)
                CROP_PLANE(float);
            else
                CROP_PLANE(double);
        }
    }
    ad_tensor_touch(dst);
    return AD_OK;
}

/* One output coordinate's two source taps and the weight of the second, as PyTorch's
** bilinear interpolation with align_corners=False: the source coordinate is
** (o + 0.5) in / out - 0.5, clamped at 0 (the last tap repeats at the far edge). */
static void bilinear_tap(int64_t o, int64_t in, int64_t out, int64_t *i0, int64_t *i1,
                         double *frac)
{
    double src = ((double)o + 0.5) * (double)in / (double)out - 0.5;
    if (src < 0)
        src = 0;
    *i0 = (int64_t)src;
    if (*i0 > in - 1)
        *i0 = in - 1;
    *i1 = *i0 + 1 < in ? *i0 + 1 : in - 1;
    *frac = src - (double)*i0;
}

#define RESIZE_PLANE(T)                                                                 \
    do {                                                                                \
        const T *s = (const T *)src_plane;                                              \
        T *d = (T *)dst_plane;                                                          \
        for (int64_t r = 0; r < Ho; r++) {                                              \
            int64_t r0, r1, c0, c1;                                                     \
            double fr, fc;                                                              \
            bilinear_tap(r, H, Ho, &r0, &r1, &fr);                                      \
            for (int64_t c = 0; c < Wo; c++) {                                          \
                bilinear_tap(c, W, Wo, &c0, &c1, &fc);                                  \
                double top = s[r0 * W + c0] * (1 - fc) + s[r0 * W + c1] * fc;           \
                double bot = s[r1 * W + c0] * (1 - fc) + s[r1 * W + c1] * fc;           \
                d[r * Wo + c] = (T)(top * (1 - fr) + bot * fr);                         \
            }                                                                           \
        }                                                                               \
    } while (0)

ad_status ad_resize_bilinear(const ad_tensor *src, ad_tensor *dst)
{
    static const char what[] = "ad_resize_bilinear";
    char a[64], b[64];
    if (!src || !dst)
        return ad_fail(AD_ERR_NULL, "%s: %s is NULL", what, !src ? "src" : "dst");
    ad_status rc = check_nchw(what, "src", src);
    if (!rc)
        rc = check_nchw(what, "dst", dst);
    if (rc)
        return rc;
    if (src->dtype != dst->dtype)
        return ad_fail(AD_ERR_DTYPE, "%s: src is %s but dst is %s", what,
                       ad_dtype_name(src->dtype), ad_dtype_name(dst->dtype));
    int64_t N = src->shape[0], C = src->shape[1], H = src->shape[2], W = src->shape[3];
    int64_t Ho = dst->shape[2], Wo = dst->shape[3];
    if (dst->shape[0] != N || dst->shape[1] != C || (dst->size > 0 && (H == 0 || W == 0)))
        return ad_fail(AD_ERR_SHAPE, "%s: src %s and dst %s must agree in images and "
                       "channels, and a non-empty dst needs a non-empty src", what,
                       ad_tensor_describe(src, a, sizeof a),
                       ad_tensor_describe(dst, b, sizeof b));
    size_t es = ad_dtype_size(src->dtype);
    size_t sb = (size_t)src->size * es, db = (size_t)dst->size * es;
    const char *s0 = src->data, *d0 = dst->data;
    if (sb > 0 && db > 0 && s0 < d0 + db && d0 < s0 + sb)
        return ad_fail(AD_ERR_INVALID, "%s: src and dst share memory", what);
    for (int64_t p = 0; p < N * C && Ho * Wo > 0; p++) {
        const char *src_plane = s0 + (size_t)(p * H * W) * es;
        char *dst_plane = (char *)d0 + (size_t)(p * Ho * Wo) * es;
        if (src->dtype == AD_F32)
            RESIZE_PLANE(float);
        else
            RESIZE_PLANE(double);
    }
    ad_tensor_touch(dst);
    return AD_OK;
}
