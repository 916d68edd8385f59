/*
** conv_feedback.c: conv2d layers with feedback alignment (ad_feedback.h). The forward
** pass is conv2d's; dW and db are backprop's; dX is the transposed convolution of dY
** with the feedback tensor B (W's shape) instead of W. The arithmetic is conv.c's own
** (adi_conv_forward, adi_conv_pullback with B as the tensor dX goes through), so FA
** and backprop differ in nothing but which tensor that is, and run at the same speed.
*/
#include "../ops/ops_internal.h"
#include "ad_feedback.h"

/* B must have W's shape exactly (Cout x Cin/groups x kh x kw). */
static ad_status check_feedback(const char *op, const ad_tensor *w, const ad_tensor *fb)
{
    char dw[64], dfb[64];
    if (fb->ndim != 4 || memcmp(fb->shape, w->shape, 4 * sizeof w->shape[0]))
        return ad_fail(AD_ERR_SHAPE, "%s: feedback B %s must have w's shape %s", op,
                       ad_tensor_describe(fb, dfb, sizeof dfb),
                       ad_tensor_describe(w, dw, sizeof dw));
    return AD_OK;
}

/* Inputs (x, w, B). */
ad_status ad_op_conv2d_fa(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    ad_status rc = check_feedback("conv2d_fa", in[1], in[2]);
    return rc ? rc : adi_conv_forward("conv2d_fa", cx, in[0], in[1], NULL, out);
}

/* Inputs (x, w, b, B). */
ad_status ad_op_conv2d_bias_fa(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    ad_status rc = check_feedback("conv2d_bias_fa", in[1], in[3]);
    return rc ? rc : adi_conv_forward("conv2d_bias_fa", cx, in[0], in[1], in[2], out);
}

/* dX = conv_transpose(dY, B) (reads B, not w), dW = dY im2col(x)' (reads x). */
static ad_status conv2d_fa_pullback(ad_ctx *cx, const ad_tensor *dy,
                                    const ad_tensor *const in[], const ad_tensor *y,
                                    ad_tensor *const din[], const float beta[])
{
    (void)y;
    return adi_conv_pullback("conv2d_fa", cx, dy, in[0], in[1], NULL, in[2], din, beta);
}

/* As above, and db = sum of dY over N, Hout and Wout. */
static ad_status conv2d_bias_fa_pullback(ad_ctx *cx, const ad_tensor *dy,
                                         const ad_tensor *const in[], const ad_tensor *y,
                                         ad_tensor *const din[], const float beta[])
{
    (void)y;
    return adi_conv_pullback("conv2d_bias_fa", cx, dy, in[0], in[1], in[2], in[3], din, beta);
}

/* The references: backprop's conv2d pullback (dX through w); B's slot is nondiff. */
static ad_status conv2d_fa_reference(ad_ctx *cx, const ad_tensor *dy,
                                     const ad_tensor *const in[], const ad_tensor *y,
                                     ad_tensor *const din[], const float beta[])
{
    (void)y;
    return adi_conv_pullback("conv2d_fa", cx, dy, in[0], in[1], NULL, in[1], din, beta);
}

static ad_status conv2d_bias_fa_reference(ad_ctx *cx, const ad_tensor *dy,
                                          const ad_tensor *const in[], const ad_tensor *y,
                                          ad_tensor *const din[], const float beta[])
{
    (void)y;
    return adi_conv_pullback("conv2d_bias_fa", cx, dy, in[0], in[1], in[2], in[1], din, beta);
}

#define RANK4 {0, AD_RANK(4)}

static const ad_rule rule_conv2d_fa = {
    .name = "conv2d (feedback alignment)",
    .pullback = conv2d_fa_pullback,
    .reference = conv2d_fa_reference,
    .n_inputs = 3,
    .inputs = {RANK4, RANK4, RANK4},
    .nondiff = AD_INPUT(2),
    .not_gradient = AD_INPUT(0),
    .unread = AD_OUTPUT | AD_INPUT(1), /* dX reads B, dW reads x: w and y never */
    .attrs_size = sizeof(ad_conv2d_attrs),
    .attrs_default = &AD_CONV2D_ATTRS_DEFAULT,
};

static const ad_rule rule_conv2d_bias_fa = {
    .name = "conv2d_bias (feedback alignment)",
    .pullback = conv2d_bias_fa_pullback,
    .reference = conv2d_bias_fa_reference,
    .n_inputs = 4,
    .inputs = {RANK4, RANK4, {0, AD_RANK(1)}, RANK4},
    .nondiff = AD_INPUT(3),
    .not_gradient = AD_INPUT(0),
    .unread = AD_OUTPUT | AD_INPUT(1) | AD_INPUT(2),
    .attrs_size = sizeof(ad_conv2d_attrs),
    .attrs_default = &AD_CONV2D_ATTRS_DEFAULT,
};

ad_var ad_conv2d_fa(ad_tape *t, ad_var x, ad_var w, ad_var fb, const ad_conv2d_attrs *attrs)
{
    return ad_call_as(t, ad_op_conv2d_fa, "ad_conv2d_fa", (const ad_var[]){x, w, fb}, 3,
                      attrs, attrs ? sizeof *attrs : 0);
}

ad_var ad_conv2d_bias_fa(ad_tape *t, ad_var x, ad_var w, ad_var b, ad_var fb,
                         const ad_conv2d_attrs *attrs)
{
    return ad_call_as(t, ad_op_conv2d_bias_fa, "ad_conv2d_bias_fa",
                      (const ad_var[]){x, w, b, fb}, 4, attrs, attrs ? sizeof *attrs : 0);
}

ADI_RULE_FAMILY(adi_family_conv_feedback, "conv_feedback",
                ADI_SEED(ad_op_conv2d_fa, rule_conv2d_fa),
                ADI_SEED(ad_op_conv2d_bias_fa, rule_conv2d_bias_fa));
