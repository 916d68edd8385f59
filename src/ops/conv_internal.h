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

#endif /* AD_CONV_INTERNAL_H */
