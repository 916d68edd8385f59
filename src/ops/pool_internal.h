/*
** pool_internal.h (internal): what the pooling files share: the checked geometry of a
** call (pool.c) and the window arithmetic of the loops (pool_max.c, pool_avg.c).
*/
#ifndef AD_POOL_INTERNAL_H
#define AD_POOL_INTERNAL_H

#include "ops_internal.h"

/* Checked geometry: planes = N*C images of h x w, pooled by kh x kw windows with
** strides sh, sw and paddings ph, pw into ho x wo. */
typedef struct adi_pool_plan {
    int64_t planes, h, w, ho, wo, kh, kw, sh, sw, ph, pw;
} adi_pool_plan;

/* The common LeNet window (2x2, stride 2, no padding), with loops of its own. */
static inline bool adi_pool_is_2x2_s2(const adi_pool_plan *p)
{
    return p->kh == 2 && p->kw == 2 && p->sh == 2 && p->sw == 2 && p->ph == 0 && p->pw == 0;
}

/* Window [*lo, *hi) along one axis for output position o, clipped to [0, in). */
static inline void adi_pool_window(int64_t o, int64_t s, int64_t pad, int64_t k, int64_t in,
                                   int64_t *lo, int64_t *hi)
{
    int64_t a = o * s - pad, b = a + k;
    *lo = a < 0 ? 0 : a;
    *hi = b > in ? in : b;
}

/* The plane count of x (rank 4, N x C x H x W) and its plane's element count, or an
** error naming op and x: AD_ERR_RANK, AD_ERR_SHAPE (an empty plane), AD_ERR_OVERFLOW. */
ad_status adi_pool_plane_sizes(const char *op, const ad_tensor *x, int64_t *planes,
                               int64_t *hw);

/* Checks x against the node's ad_pool2d_attrs and fills the plan; `index`: the plane's
** positions must fit int32 (max pool's saved argmax). */
ad_status adi_pool_plan_make(const char *op, const ad_ctx *cx, const ad_tensor *x,
                             bool index, adi_pool_plan *p);

/* The output, N x C x ho x wo of x's dtype. */
ad_status adi_pool_out(ad_ctx *cx, const ad_tensor *x, const adi_pool_plan *p,
                       ad_tensor **out);

#endif /* AD_POOL_INTERNAL_H */
