/*
** usf_scaled.c: BioTorch's scaled uSF (the "scaling" option of its usf layers), dense
** and conv. The feedback is s sign(W), s = ad_usf_scale(W) = sqrt(2 / (fan_in +
** fan_out)), the standard deviation of Xavier's initialisation for the layer, so
** the feedback has the magnitude of the weights it was initialised near: plain
** sign(W) is about 1 / s (20x on LeNet's layers) larger, which makes deep uSF networks
** diverge at learning rates where backprop trains. Forward, dW and db are the unscaled
** rules'; s is computed from W's shape at pullback time, so nothing is stored.
*/
#include <math.h>

#include "../ops/ops_internal.h"
#include "../rules/builtin.h"
#include "ad_feedback.h"
#include "feedback_internal.h"

/* F = s sign(W) in arena scratch of w's shape. */
static ad_status scaled_sign(ad_ctx *cx, const ad_tensor *w, ad_tensor **f)
{
    ad_status rc = adi_sign_feedback(cx, w, NULL, f);
    if (rc)
        return rc;
    double s = ad_usf_scale(w);
    for (int64_t i = 0; i < w->size; i++) {
        if (w->dtype == AD_F32)
            ((float *)(*f)->data)[i] *= (float)s;
        else
            ((double *)(*f)->data)[i] *= s;
    }
    return AD_OK;
}

/* Inputs (w, x): ad_dense_usf's forward, checks and errors. */
ad_status ad_op_dense_usf_scaled(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    return ad_op_dense_usf(cx, in, out);
}

/* dW = dY' X (reads x);  dX = dY (s sign(W)) (reads w). */
static ad_status dense_usf_scaled_pullback(ad_ctx *cx, const ad_tensor *dy,
                                           const ad_tensor *const in[], const ad_tensor *y,
                                           ad_tensor *const din[], const float beta[])
{
    (void)y;
    ad_tensor *f;
    ad_status rc = AD_OK;
    if (din[1] && (rc = scaled_sign(cx, in[0], &f)) == AD_OK)
        rc = ad_gemm_tensors(dy, 0, f, 0, 1.0, beta[1], din[1]);
    if (rc == AD_OK && din[0])
        rc = ad_gemm_tensors(dy, 1, in[1], 0, 1.0, beta[0], din[0]);
    return rc;
}

/* Inputs (x, w) and (x, w, b): conv2d's forward, attributes and errors. */
ad_status ad_op_conv2d_usf_scaled(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    return adi_conv_forward("conv2d_usf_scaled", cx, in[0], in[1], NULL, out);
}

ad_status ad_op_conv2d_bias_usf_scaled(ad_ctx *cx, const ad_tensor *const in[],
                                       ad_tensor **out)
{
    return adi_conv_forward("conv2d_bias_usf_scaled", cx, in[0], in[1], in[2], out);
}

/* dX = conv_transpose(dY, s sign(w)) (reads w), dW as backprop (reads x), db with b.
** F is built only when dX is wanted. */
static ad_status conv_scaled_pullback(const char *op, ad_ctx *cx, const ad_tensor *dy,
                                      const ad_tensor *const in[], const ad_tensor *b,
                                      ad_tensor *const din[], const float beta[])
{
    ad_tensor *f = NULL;
    ad_status rc = din[0] ? scaled_sign(cx, in[1], &f) : AD_OK;
    return rc ? rc : adi_conv_pullback(op, cx, dy, in[0], in[1], b, f ? f : in[1], din, beta);
}

static ad_status conv2d_usf_scaled_pullback(ad_ctx *cx, const ad_tensor *dy,
                                            const ad_tensor *const in[], const ad_tensor *y,
                                            ad_tensor *const din[], const float beta[])
{
    (void)y;
    return conv_scaled_pullback("conv2d_usf_scaled", cx, dy, in, NULL, din, beta);
}

static ad_status conv2d_bias_usf_scaled_pullback(ad_ctx *cx, const ad_tensor *dy,
                                                 const ad_tensor *const in[],
                                                 const ad_tensor *y, ad_tensor *const din[],
                                                 const float beta[])
{
    (void)y;
    return conv_scaled_pullback("conv2d_bias_usf_scaled", cx, dy, in, in[2], din, beta);
}

#define CONV_ATTRS .attrs_size = sizeof(ad_conv2d_attrs), .attrs_default = &AD_CONV2D_ATTRS_DEFAULT

static const ad_rule rule_dense_usf_scaled = {
    .name = "dense (scaled uSF sign symmetry)", .pullback = dense_usf_scaled_pullback,
    .reference = ad_dense_backprop_pullback, .n_inputs = 2,
    .inputs = {{0, AD_RANK(2)}, {0, AD_RANK(2)}}, .not_gradient = AD_INPUT(1),
    .unread = AD_OUTPUT};

static const ad_rule rule_conv2d_usf_scaled = {
    .name = "conv2d (scaled uSF sign symmetry)", .pullback = conv2d_usf_scaled_pullback,
    .reference = adi_conv_sign_reference, .n_inputs = 2,
    .inputs = {{0, AD_RANK(4)}, {0, AD_RANK(4)}}, .not_gradient = AD_INPUT(0),
    .unread = AD_OUTPUT, CONV_ATTRS};

static const ad_rule rule_conv2d_bias_usf_scaled = {
    .name = "conv2d_bias (scaled uSF sign symmetry)",
    .pullback = conv2d_bias_usf_scaled_pullback,
    .reference = adi_conv_bias_sign_reference, .n_inputs = 3,
    .inputs = {{0, AD_RANK(4)}, {0, AD_RANK(4)}, {0, AD_RANK(1)}},
    .not_gradient = AD_INPUT(0), .unread = AD_OUTPUT | AD_INPUT(2), CONV_ATTRS};

ad_var ad_dense_usf_scaled(ad_tape *t, ad_var w, ad_var x)
{
    return ad_call_as(t, ad_op_dense_usf_scaled, "ad_dense_usf_scaled", (const ad_var[]){w, x},
                      2, NULL, 0);
}

ad_var ad_conv2d_usf_scaled(ad_tape *t, ad_var x, ad_var w, const ad_conv2d_attrs *attrs)
{
    return ad_call_as(t, ad_op_conv2d_usf_scaled, "ad_conv2d_usf_scaled",
                      (const ad_var[]){x, w}, 2, attrs, attrs ? sizeof *attrs : 0);
}

ad_var ad_conv2d_bias_usf_scaled(ad_tape *t, ad_var x, ad_var w, ad_var b,
                                 const ad_conv2d_attrs *attrs)
{
    return ad_call_as(t, ad_op_conv2d_bias_usf_scaled, "ad_conv2d_bias_usf_scaled",
                      (const ad_var[]){x, w, b}, 3, attrs, attrs ? sizeof *attrs : 0);
}

ADI_RULE_FAMILY(adi_family_usf_scaled, "usf_scaled",
                ADI_SEED(ad_op_dense_usf_scaled, rule_dense_usf_scaled),
                ADI_SEED(ad_op_conv2d_usf_scaled, rule_conv2d_usf_scaled),
                ADI_SEED(ad_op_conv2d_bias_usf_scaled, rule_conv2d_bias_usf_scaled));
