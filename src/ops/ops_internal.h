/*
** ops_internal.h (internal): what the op families share: the BLAS entry points, shape
** checks, and the rule family each file exports to the built-in table.
*/
#ifndef AD_OPS_INTERNAL_H
#define AD_OPS_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "ad.h"
#include "../base/base.h"
#include "../base/blas.h"
#include "../rules/builtin.h"

/* Kernels are written once over T with AD_DISPATCH_FLOAT and put with AD_PUT_EACH,
** the macros ad_rule.h offers every rule writer. */

/* y[i] = tanh(x[i]) for float, vectorisable, within 2 ulp of glibc (tanh_f32.c). */
void adi_tanh_f32(const float *x, float *y, int64_t n);

/* Two tensors of one shape, or AD_ERR_SHAPE naming both (`op` names the op). */
ad_status adi_require_same_shape(const char *op, const ad_tensor *a, const ad_tensor *b);

/* A bias b (m) for the columns of x (n x m), or AD_ERR_SHAPE naming both. */
ad_status adi_require_bias_shape(const char *op, const ad_tensor *x, const ad_tensor *b);

/* relu's pullback for one element: g where x > 0, else +0, by masking g's bits: a ?:
** here would become a branch once AD_PUT_EACH adds it to d[i], and a branch stops
** vectorisation. Shared by relu and the fused bias + relu, so both give the same bits. */
static inline float adi_relu_grad_f32(float g, float x)
{
    uint32_t b;
    memcpy(&b, &g, sizeof b);
    b &= -(uint32_t)(x > 0);
    memcpy(&g, &b, sizeof g);
    return g;
}

static inline double adi_relu_grad_f64(double g, double x)
{
    uint64_t b;
    memcpy(&b, &g, sizeof b);
    b &= -(uint64_t)(x > 0);
    memcpy(&g, &b, sizeof g);
    return g;
}

/* conv2d's geometry, checked by conv.c: x is N x c x h x w, the kernel kh x kw with
** strides sh, sw, paddings ph, pw and dilations dh, dw; the output ho x wo. */
typedef struct adi_conv_geometry {
    int64_t n, c, h, w, kh, kw, ho, wo, sh, sw, ph, pw, dh, dw;
} adi_conv_geometry;

/* conv_im2col.c: im2col of images n0 .. n0+nb into cols (c*kh*kw rows of ld), its
** adjoint (added into dx), and the copy between N x k x P and a k x nb*P block. */
void adi_conv_im2col(ad_dtype dt, const adi_conv_geometry *geo, const void *x, int64_t n0,
                     int64_t nb, void *cols, int64_t ld);
void adi_conv_col2im_add(ad_dtype dt, const adi_conv_geometry *geo, const void *cols,
                         int64_t ld, int64_t n0, int64_t nb, void *dx);
void adi_conv_gather_block(ad_dtype dt, int64_t k, int64_t P, int64_t n0, int64_t nb,
                           const void *a, void *blk);
void adi_conv_scatter_block(ad_dtype dt, int64_t k, int64_t P, int64_t n0, int64_t nb,
                            const void *blk, void *a);

/* conv.c: conv2d's primal on x and w (b NULL: no bias) under the attributes of cx,
** and its pullback with dX taken through fb (w for backprop, a feedback tensor of w's
** shape for FA; the caller checks that shape). din[0..2] are dX, dW and db (db only
** with b); NULL slots are skipped. op names the op in errors. */
ad_status adi_conv_forward(const char *op, ad_ctx *cx, const ad_tensor *x,
                           const ad_tensor *w, const ad_tensor *b, ad_tensor **out);
ad_status adi_conv_pullback(const char *op, ad_ctx *cx, const ad_tensor *dy,
                            const ad_tensor *x, const ad_tensor *w, const ad_tensor *b,
                            const ad_tensor *fb, ad_tensor *const din[], const float beta[]);

#endif /* AD_OPS_INTERNAL_H */
