/*
** pool_max.c: max_pool2d, NCHW, as PyTorch's CPU kernel: padding is -infinity, the
** first maximum of a window in row-major order wins, a NaN is always taken.
**
** The primal saves its argmax (int32 positions in the plane) so that the pullback is a
** scatter that reads neither x nor y, and a memory-saving sweep may reuse both.
*/
#include <math.h>
#include <stdint.h>

#include "pool_internal.h"
#include "../base/parallel.h"

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

/* One window of the 2x2 stride-2 case: a, b on row r0, c, d below; the same scan. */
#define MAX_2X2_ONE(T, r0, r1, ow, base, W, yr, ir)                                    \
    do {                                                                               \
        T m_ = (r0)[2 * (ow)];                                                         \
        int32_t i0_ = (base) + (int32_t)(2 * (ow)), mi_ = i0_;                         \
        T b_ = (r0)[2 * (ow) + 1], c_ = (r1)[2 * (ow)], d_ = (r1)[2 * (ow) + 1];       \
        if (b_ > m_ || isnan(b_))                                                      \
            m_ = b_, mi_ = i0_ + 1;                                                    \
        if (c_ > m_ || isnan(c_))                                                      \
            m_ = c_, mi_ = i0_ + (W);                                                  \
        if (d_ > m_ || isnan(d_))                                                      \
            m_ = d_, mi_ = i0_ + (W) + 1;                                              \
        (yr)[ow] = m_;                                                                 \
        if (ir)                                                                        \
            (ir)[ow] = mi_;                                                            \
    } while (0)

#if defined(__SSE2__)
#include <emmintrin.h>

/* Lanes where v is taken: v > m or v is NaN (unordered with itself). */
static inline __m128 take(__m128 v, __m128 m)
{
    return _mm_or_ps(_mm_cmpgt_ps(v, m), _mm_cmpunord_ps(v, v));
}

static inline __m128 pick_ps(__m128 t, __m128 a, __m128 b)
{
    return _mm_or_ps(_mm_and_ps(t, a), _mm_andnot_ps(t, b));
}

static inline __m128i pick_i32(__m128 t, __m128i a, __m128i b)
{
    __m128i ti = _mm_castps_si128(t);
    return _mm_or_si128(_mm_and_si128(ti, a), _mm_andnot_si128(ti, b));
}

/*
** Four windows of one f32 output row at a time, with SSE2 (every x86-64 has it): the
** same comparisons in the same order as the scalar scan, as selects instead of
** branches, whose outcome on real activations is a coin toss (the scalar loop spent
** 20% of a LeNet step mispredicting them). Returns how many windows it did.
*/
static int64_t max_row_2x2_f32(const float *r0, const float *r1, int64_t Wo, int32_t base,
                               int32_t W, float *yr, int32_t *ir)
{
    const __m128i lanes = _mm_set_epi32(6, 4, 2, 0), one = _mm_set1_epi32(1);
    const __m128i below = _mm_set1_epi32(W);
    int64_t ow = 0;
    for (; ow + 4 <= Wo; ow += 4) {
        __m128 p0 = _mm_loadu_ps(r0 + 2 * ow), p1 = _mm_loadu_ps(r0 + 2 * ow + 4);
        __m128 q0 = _mm_loadu_ps(r1 + 2 * ow), q1 = _mm_loadu_ps(r1 + 2 * ow + 4);
        __m128 m = _mm_shuffle_ps(p0, p1, _MM_SHUFFLE(2, 0, 2, 0));
        __m128 b = _mm_shuffle_ps(p0, p1, _MM_SHUFFLE(3, 1, 3, 1));
        __m128 c = _mm_shuffle_ps(q0, q1, _MM_SHUFFLE(2, 0, 2, 0));
        __m128 d = _mm_shuffle_ps(q0, q1, _MM_SHUFFLE(3, 1, 3, 1));
        __m128i ia = _mm_add_epi32(_mm_set1_epi32(base + (int32_t)(2 * ow)), lanes);
        __m128i ic = _mm_add_epi32(ia, below), mi = ia;
        __m128 t = take(b, m);
        m = pick_ps(t, b, m), mi = pick_i32(t, _mm_add_epi32(ia, one), mi);
        t = take(c, m);
        m = pick_ps(t, c, m), mi = pick_i32(t, ic, mi);
        t = take(d, m);
        m = pick_ps(t, d, m), mi = pick_i32(t, _mm_add_epi32(ic, one), mi);
        _mm_storeu_ps(yr + ow, m);
        if (ir)
            _mm_storeu_si128((__m128i *)(void *)(ir + ow), mi);
    }
    return ow;
}
#else
static int64_t max_row_2x2_f32(const float *r0, const float *r1, int64_t Wo, int32_t base,
                               int32_t W, float *yr, int32_t *ir)
{
    (void)r0, (void)r1, (void)Wo, (void)base, (void)W, (void)yr, (void)ir;
    return 0;
}
#endif

/* One 2x2 pooling call, for its planes to be split over threads. */
typedef struct pool_job {
    const adi_pool_plan *p;
    ad_dtype dt;
    const void *x;
    void *y;
    int32_t *idx;
} pool_job;

/* Planes pl_lo .. pl_hi of the 2x2 stride-2 case of max_forward (W fits int32: the
** plan checked H*W); each plane writes only its own y and argmax. */
static void max_planes_2x2(void *arg, int64_t pl_lo, int64_t pl_hi)
{
    const pool_job *jb = arg;
    const adi_pool_plan *p = jb->p;
    const ad_dtype dt = jb->dt;
    const void *x = jb->x;
    void *y = jb->y;
    int32_t *idx = jb->idx;
    const int64_t H = p->h, W = p->w, Ho = p->ho, Wo = p->wo;
    const int32_t W32 = (int32_t)W;
    AD_DISPATCH_FLOAT(dt, T, {
        for (int64_t pl = pl_lo; pl < pl_hi; pl++) {
            const T *xs = (const T *)x + pl * H * W;
            for (int64_t oh = 0; oh < Ho; oh++) {
                const T *r0 = xs + 2 * oh * W, *r1 = r0 + W;
                T *yr = (T *)y + (pl * Ho + oh) * Wo;
                int32_t *ir = idx ? idx + (pl * Ho + oh) * Wo : NULL;
                int32_t base = (int32_t)(2 * oh * W);
                int64_t ow = 0;
                if (dt == AD_F32)
                    ow = max_row_2x2_f32((const float *)r0, (const float *)r1, Wo, base, W32,
                                         (float *)yr, ir);
                for (; ow < Wo; ow++)
                    MAX_2X2_ONE(T, r0, r1, ow, base, W32, yr, ir);
            }
        }
    });
}

static void max_forward_2x2(const adi_pool_plan *p, ad_dtype dt, const void *x, void *y,
                            int32_t *idx)
{
    pool_job jb = {p, dt, x, y, idx};
    int64_t per_plane = p->h * p->w;
    adi_parallel_for(p->planes, 32768 / (per_plane ? per_plane : 1), max_planes_2x2, &jb);
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
    if (adi_pool_is_2x2_s2(&p) && p.h * p.w <= INT32_MAX) /* its positions are int32 */
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
