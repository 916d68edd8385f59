/*
** conv_internal.h (internal): conv2d's direct path (conv_direct.c) and the switch that
** chooses between it and im2col + GEMM (conv.c).
*/
#ifndef AD_CONV_INTERNAL_H
#define AD_CONV_INTERNAL_H

#include "ops_internal.h"

/* Which path conv2d takes: AUTO lets the geometry decide; IM2COL forces im2col + GEMM
** everywhere; DIRECT is AUTO (where the direct path's limits exclude a layer, it takes
** another path). Process-wide, for tests that compare the paths; AUTO unless a test
** sets it. DENSE is not a setting but a path: a kernel that covers the whole unpadded
** image (a 1 x 1 output, groups 1), whose im2col would be a transpose of x, runs as
** plain GEMMs on x (conv.c). */
enum { ADI_CONV_AUTO, ADI_CONV_IM2COL, ADI_CONV_DIRECT, ADI_CONV_DENSE };
void adi_conv_set_path(int path);

/* The path (ADI_CONV_IM2COL, _DIRECT or _DENSE) a float conv of dtype dt with co output
** channels in `groups` groups over geometry g takes under the current switch. */
int adi_conv_path(ad_dtype dt, int64_t co, int64_t groups, const adi_conv_geometry *g);

/* The direct path, float32 only, on a geometry adi_conv_path sends to it: y (N x co x
** ho x wo) = conv(x, w) + b (b NULL: none), and dw (co x c x kh x kw) += dY im2col(x)'.
** Scratch comes from cx (the tape's arena); the only error is AD_ERR_NOMEM from it,
** before any output is written. */
ad_status adi_conv_direct_forward(ad_ctx *cx, const adi_conv_geometry *g, int64_t co,
                                  const float *x, const float *w, const float *b, float *y);
ad_status adi_conv_direct_dw(ad_ctx *cx, const adi_conv_geometry *g, int64_t co,
                             const float *x, const float *dy, float *dw);

/* A conv's plan (conv.c): the geometry, Cout, the groups, Cout and Cin*kh*kw per group,
** and the images per im2col block (a block has about FOLD_COLUMNS columns). */
typedef struct adi_conv_plan {
    adi_conv_geometry g;
    int64_t co, groups, cog, kg;
    int64_t nb;
} adi_conv_plan;

/* rows x cols elements of dt from cx's arena. */
ad_status adi_conv_scratch(ad_ctx *cx, ad_dtype dt, int64_t rows, int64_t cols, void **out);

/* The im2col path (conv_blocks.c), its blocks shared over adtape's threads: y = conv(x, w)
** (+ b). Its only error is AD_ERR_NOMEM, before y is written. */
ad_status adi_conv_blocks_forward(ad_ctx *cx, const adi_conv_plan *p, const ad_tensor *x,
                                  const ad_tensor *w, const ad_tensor *b, ad_tensor *y);

/* The backward in two steps, so that a caller can take all scratch before it writes
** any gradient: prepare takes it (AD_ERR_NOMEM is its only error); run adds
** col2im(F' dY) to dx and dY im2col(x)' to dw, each skipped when NULL. */
typedef struct adi_conv_blocks {
    const adi_conv_plan *p;
    const ad_tensor *x, *w, *b; /* forward: w, b; backward: w is F (w, or FA's B) */
    const void *dy;
    void *y;
    ad_tensor *dx, *dw;
    char *cols, *blk; /* per part: cols_bytes, blk_bytes apart */
    size_t cols_bytes, blk_bytes;
    char *partial;    /* per group of blocks: dW's partial sum, co x kg */
    int64_t n_blocks, n_groups;
    int64_t parts, max_parts; /* parts of the region; the scratch is for max_parts */
} adi_conv_blocks;
ad_status adi_conv_blocks_backward_prepare(ad_ctx *cx, const adi_conv_plan *p,
                                           const ad_tensor *x, const ad_tensor *fb,
                                           const ad_tensor *dy, ad_tensor *dx,
                                           ad_tensor *dw, adi_conv_blocks *j);
void adi_conv_blocks_backward(adi_conv_blocks *j);

#endif /* AD_CONV_INTERNAL_H */
