/*
** conv_feedback.c: conv2d layers with feedback rules (ad_feedback.h): FA, uSF, SF
** (brSF/frSF) and Kolen-Pollack. The forward pass is conv2d's; dW and db are
** backprop's; dX is the transposed convolution of dY with a feedback tensor F of W's
** shape instead of W: B (FA, KP), sign(W) (uSF) or |M| .* sign(W) (SF), the last two
** built from W at pullback time in scratch. The arithmetic is conv.c's own
** (adi_conv_forward, adi_conv_pullback with F as the tensor dX goes through), so the
** rules and backprop differ in nothing but which tensor that is.
*/
#include <math.h>

#include "../ops/ops_internal.h"
#include "ad_feedback.h"
#include "feedback_internal.h"

/* A feedback tensor (what: "feedback B" or "magnitudes M") must have W's shape
** exactly (Cout x Cin/groups x kh x kw). */
static ad_status check_shape(const char *op, const char *what, const ad_tensor *w,
                             const ad_tensor *fb)
{
    char dw[64], dfb[64];
    if (fb->ndim != 4 || memcmp(fb->shape, w->shape, 4 * sizeof w->shape[0]))
        return ad_fail(AD_ERR_SHAPE, "%s: %s %s must have w's shape %s", op, what,
                       ad_tensor_describe(fb, dfb, sizeof dfb),
                       ad_tensor_describe(w, dw, sizeof dw));
    return AD_OK;
}

static ad_status check_feedback(const char *op, const ad_tensor *w, const ad_tensor *fb)
{
    return check_shape(op, "feedback B", w, fb);
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

/* ---- sign symmetry: uSF (x, w), (x, w, b); SF (x, w, M), (x, w, b, M) ---- */

ad_status ad_op_conv2d_usf(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    return adi_conv_forward("conv2d_usf", cx, in[0], in[1], NULL, out);
}

ad_status ad_op_conv2d_bias_usf(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    return adi_conv_forward("conv2d_bias_usf", cx, in[0], in[1], in[2], out);
}

ad_status ad_op_conv2d_sf(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    ad_status rc = check_shape("conv2d_sf", "magnitudes M", in[1], in[2]);
    return rc ? rc : adi_conv_forward("conv2d_sf", cx, in[0], in[1], NULL, out);
}

ad_status ad_op_conv2d_bias_sf(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    ad_status rc = check_shape("conv2d_bias_sf", "magnitudes M", in[1], in[3]);
    return rc ? rc : adi_conv_forward("conv2d_bias_sf", cx, in[0], in[1], in[2], out);
}

/* dX = conv_transpose(dY, F) (reads w, and m for SF), dW as backprop (reads x), db
** with b. F is built only when dX is wanted. */
static ad_status sign_pullback(const char *op, ad_ctx *cx, const ad_tensor *dy,
                               const ad_tensor *x, const ad_tensor *w, const ad_tensor *b,
                               const ad_tensor *m, ad_tensor *const din[], const float beta[])
{
    ad_tensor *f = NULL;
    ad_status rc = din[0] ? adi_sign_feedback(cx, w, m, &f) : AD_OK;
    return rc ? rc : adi_conv_pullback(op, cx, dy, x, w, b, f ? f : w, din, beta);
}

static ad_status conv2d_usf_pullback(ad_ctx *cx, const ad_tensor *dy,
                                     const ad_tensor *const in[], const ad_tensor *y,
                                     ad_tensor *const din[], const float beta[])
{
    (void)y;
    return sign_pullback("conv2d_usf", cx, dy, in[0], in[1], NULL, NULL, din, beta);
}

static ad_status conv2d_bias_usf_pullback(ad_ctx *cx, const ad_tensor *dy,
                                          const ad_tensor *const in[], const ad_tensor *y,
                                          ad_tensor *const din[], const float beta[])
{
    (void)y;
    return sign_pullback("conv2d_bias_usf", cx, dy, in[0], in[1], in[2], NULL, din, beta);
}

static ad_status conv2d_sf_pullback(ad_ctx *cx, const ad_tensor *dy,
                                    const ad_tensor *const in[], const ad_tensor *y,
                                    ad_tensor *const din[], const float beta[])
{
    (void)y;
    return sign_pullback("conv2d_sf", cx, dy, in[0], in[1], NULL, in[2], din, beta);
}

static ad_status conv2d_bias_sf_pullback(ad_ctx *cx, const ad_tensor *dy,
                                         const ad_tensor *const in[], const ad_tensor *y,
                                         ad_tensor *const din[], const float beta[])
{
    (void)y;
    return sign_pullback("conv2d_bias_sf", cx, dy, in[0], in[1], in[2], in[3], din, beta);
}

/* uSF's and SF's references: conv2d's backprop, dX through w (M's slot is nondiff). */
ad_status adi_conv_sign_reference(ad_ctx *cx, const ad_tensor *dy,
                                       const ad_tensor *const in[], const ad_tensor *y,
                                       ad_tensor *const din[], const float beta[])
{
    (void)y;
    return adi_conv_pullback("conv2d_usf/sf", cx, dy, in[0], in[1], NULL, in[1], din, beta);
}

ad_status adi_conv_bias_sign_reference(ad_ctx *cx, const ad_tensor *dy,
                                            const ad_tensor *const in[], const ad_tensor *y,
                                            ad_tensor *const din[], const float beta[])
{
    (void)y;
    return adi_conv_pullback("conv2d_bias_usf/sf", cx, dy, in[0], in[1], in[2], in[1], din,
                             beta);
}

/* ---- Kolen-Pollack: (x, w, B), (x, w, b, B) ---- */

ad_status ad_op_conv2d_kp(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    ad_status rc = check_feedback("conv2d_kp", in[1], in[2]);
    return rc ? rc : adi_conv_forward("conv2d_kp", cx, in[0], in[1], NULL, out);
}

ad_status ad_op_conv2d_bias_kp(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    ad_status rc = check_feedback("conv2d_bias_kp", in[1], in[3]);
    return rc ? rc : adi_conv_forward("conv2d_bias_kp", cx, in[0], in[1], in[2], out);
}

/* FA's dX, dW (and db), and dB = dW: the same update as w (not B's gradient, 0), as
** the dense KP rule; dB is computed by a second dW pass into B's slot. Reads x and B. */
static ad_status kp_pullback(const char *op, ad_ctx *cx, const ad_tensor *dy,
                             const ad_tensor *x, const ad_tensor *w, const ad_tensor *b,
                             const ad_tensor *fb, ad_tensor *const din[], const float beta[],
                             int slot)
{
    ad_status rc = adi_conv_pullback(op, cx, dy, x, w, b, fb, din, beta);
    if (rc == AD_OK && din[slot])
        rc = adi_conv_pullback(op, cx, dy, x, w, NULL, fb,
                               (ad_tensor *const[]){NULL, din[slot], NULL},
                               (const float[]){0.0f, beta[slot], 0.0f});
    return rc;
}

static ad_status conv2d_kp_pullback(ad_ctx *cx, const ad_tensor *dy,
                                    const ad_tensor *const in[], const ad_tensor *y,
                                    ad_tensor *const din[], const float beta[])
{
    (void)y;
    return kp_pullback("conv2d_kp", cx, dy, in[0], in[1], NULL, in[2], din, beta, 2);
}

static ad_status conv2d_bias_kp_pullback(ad_ctx *cx, const ad_tensor *dy,
                                         const ad_tensor *const in[], const ad_tensor *y,
                                         ad_tensor *const din[], const float beta[])
{
    (void)y;
    return kp_pullback("conv2d_bias_kp", cx, dy, in[0], in[1], in[2], in[3], din, beta, 3);
}

/* Backprop for KP's inputs: conv2d's true gradient (dX through w), and 0 for B. */
static ad_status kp_reference(const char *op, ad_ctx *cx, const ad_tensor *dy,
                              const ad_tensor *const in[], const ad_tensor *b,
                              ad_tensor *const din[], const float beta[], int slot)
{
    ad_status rc = adi_conv_pullback(op, cx, dy, in[0], in[1], b, in[1], din, beta);
    if (rc == AD_OK && din[slot] && beta[slot] == 0.0f)
        memset(din[slot]->data, 0, (size_t)din[slot]->size * ad_dtype_size(din[slot]->dtype));
    return rc;
}

static ad_status conv2d_kp_reference(ad_ctx *cx, const ad_tensor *dy,
                                     const ad_tensor *const in[], const ad_tensor *y,
                                     ad_tensor *const din[], const float beta[])
{
    (void)y;
    return kp_reference("conv2d_kp", cx, dy, in, NULL, din, beta, 2);
}

static ad_status conv2d_bias_kp_reference(ad_ctx *cx, const ad_tensor *dy,
                                          const ad_tensor *const in[], const ad_tensor *y,
                                          ad_tensor *const din[], const float beta[])
{
    (void)y;
    return kp_reference("conv2d_bias_kp", cx, dy, in, in[2], din, beta, 3);
}

#define CONV_ATTRS .attrs_size = sizeof(ad_conv2d_attrs), .attrs_default = &AD_CONV2D_ATTRS_DEFAULT

static const ad_rule rule_conv2d_usf = {
    .name = "conv2d (uSF sign symmetry)", .pullback = conv2d_usf_pullback,
    .reference = adi_conv_sign_reference, .n_inputs = 2, .inputs = {RANK4, RANK4},
    .not_gradient = AD_INPUT(0),
    .unread = AD_OUTPUT, /* dX reads w (its sign), dW reads x: y never */
    CONV_ATTRS};

static const ad_rule rule_conv2d_bias_usf = {
    .name = "conv2d_bias (uSF sign symmetry)", .pullback = conv2d_bias_usf_pullback,
    .reference = adi_conv_bias_sign_reference, .n_inputs = 3,
    .inputs = {RANK4, RANK4, {0, AD_RANK(1)}}, .not_gradient = AD_INPUT(0),
    .unread = AD_OUTPUT | AD_INPUT(2), CONV_ATTRS};

static const ad_rule rule_conv2d_sf = {
    .name = "conv2d (sign-concordant feedback)", .pullback = conv2d_sf_pullback,
    .reference = adi_conv_sign_reference, .n_inputs = 3, .inputs = {RANK4, RANK4, RANK4},
    .nondiff = AD_INPUT(2), .not_gradient = AD_INPUT(0),
    .unread = AD_OUTPUT, /* dX reads w and M, dW reads x: y never */
    CONV_ATTRS};

static const ad_rule rule_conv2d_bias_sf = {
    .name = "conv2d_bias (sign-concordant feedback)", .pullback = conv2d_bias_sf_pullback,
    .reference = adi_conv_bias_sign_reference, .n_inputs = 4,
    .inputs = {RANK4, RANK4, {0, AD_RANK(1)}, RANK4}, .nondiff = AD_INPUT(3),
    .not_gradient = AD_INPUT(0), .unread = AD_OUTPUT | AD_INPUT(2), CONV_ATTRS};

static const ad_rule rule_conv2d_kp = {
    .name = "conv2d (Kolen-Pollack)", .pullback = conv2d_kp_pullback,
    .reference = conv2d_kp_reference, .n_inputs = 3, .inputs = {RANK4, RANK4, RANK4},
    .not_gradient = AD_INPUT(0) | AD_INPUT(2),
    .unread = AD_OUTPUT | AD_INPUT(1), /* dX reads B, dW and dB read x: w and y never */
    CONV_ATTRS};

static const ad_rule rule_conv2d_bias_kp = {
    .name = "conv2d_bias (Kolen-Pollack)", .pullback = conv2d_bias_kp_pullback,
    .reference = conv2d_bias_kp_reference, .n_inputs = 4,
    .inputs = {RANK4, RANK4, {0, AD_RANK(1)}, RANK4},
    .not_gradient = AD_INPUT(0) | AD_INPUT(3),
    .unread = AD_OUTPUT | AD_INPUT(1) | AD_INPUT(2), CONV_ATTRS};

#define ATTRS attrs, attrs ? sizeof *attrs : 0

ad_var ad_conv2d_usf(ad_tape *t, ad_var x, ad_var w, const ad_conv2d_attrs *attrs)
{
    return ad_call_as(t, ad_op_conv2d_usf, "ad_conv2d_usf", (const ad_var[]){x, w}, 2, ATTRS);
}

ad_var ad_conv2d_bias_usf(ad_tape *t, ad_var x, ad_var w, ad_var b,
                          const ad_conv2d_attrs *attrs)
{
    return ad_call_as(t, ad_op_conv2d_bias_usf, "ad_conv2d_bias_usf",
                      (const ad_var[]){x, w, b}, 3, ATTRS);
}

ad_var ad_conv2d_sf(ad_tape *t, ad_var x, ad_var w, ad_var magnitudes,
                    const ad_conv2d_attrs *attrs)
{
    return ad_call_as(t, ad_op_conv2d_sf, "ad_conv2d_sf", (const ad_var[]){x, w, magnitudes},
                      3, ATTRS);
}

ad_var ad_conv2d_bias_sf(ad_tape *t, ad_var x, ad_var w, ad_var b, ad_var magnitudes,
                         const ad_conv2d_attrs *attrs)
{
    return ad_call_as(t, ad_op_conv2d_bias_sf, "ad_conv2d_bias_sf",
                      (const ad_var[]){x, w, b, magnitudes}, 4, ATTRS);
}

ad_var ad_conv2d_kp(ad_tape *t, ad_var x, ad_var w, ad_var fb, const ad_conv2d_attrs *attrs)
{
    return ad_call_as(t, ad_op_conv2d_kp, "ad_conv2d_kp", (const ad_var[]){x, w, fb}, 3, ATTRS);
}

ad_var ad_conv2d_bias_kp(ad_tape *t, ad_var x, ad_var w, ad_var b, ad_var fb,
                         const ad_conv2d_attrs *attrs)
{
    return ad_call_as(t, ad_op_conv2d_bias_kp, "ad_conv2d_bias_kp",
                      (const ad_var[]){x, w, b, fb}, 4, ATTRS);
}

ADI_RULE_FAMILY(adi_family_conv_feedback, "conv_feedback",
                ADI_SEED(ad_op_conv2d_fa, rule_conv2d_fa),
                ADI_SEED(ad_op_conv2d_bias_fa, rule_conv2d_bias_fa),
                ADI_SEED(ad_op_conv2d_usf, rule_conv2d_usf),
                ADI_SEED(ad_op_conv2d_bias_usf, rule_conv2d_bias_usf),
                ADI_SEED(ad_op_conv2d_sf, rule_conv2d_sf),
                ADI_SEED(ad_op_conv2d_bias_sf, rule_conv2d_bias_sf),
                ADI_SEED(ad_op_conv2d_kp, rule_conv2d_kp),
                ADI_SEED(ad_op_conv2d_bias_kp, rule_conv2d_bias_kp));
