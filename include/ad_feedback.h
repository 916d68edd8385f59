/*
** ad_feedback.h: dense layers whose backward pass is deliberately not backprop, and
** the metrics that say how far from backprop they are.
**
** Every layer here computes Y = X W' (W: out x in, X: batch x in, Y: batch x out) and
** gives dW = dY' X as backprop does; they differ in what they send to the input:
**   FA    dX = dY B          B fixed random, W's shape (Lillicrap et al. 2016)
**   uSF   dX = dY sign(W)    sign symmetry, tracking W as it changes
**   SF    dX = dY (sign(W) .* |M|)   sign-concordant feedback with magnitudes M:
**                            brSF redraws M every batch, frSF keeps it (BioTorch)
**   KP    dX = dY B and dB = dW      Kolen-Pollack: B is a parameter too and receives
**                            W's update; with the same weight decay B converges to W
** Each is a registered rule with backprop's pullback as its reference, so
** ad_backward_ex(..., use_reference) on the same tape gives backprop's answer.
**
** DFA (direct feedback alignment, Nokland 2016) sends the output error e = dL/dY_out
** straight to every hidden layer through its own fixed B_l (hidden x outputs):
**
** Example (fragment):
**     ad_var a1 = ad_bias_add(t, ad_matmul(t, x, w1, 0, 1), b1);
**     ad_var h1 = ad_dfa_hidden(t, &dfa, ad_tanh(t, a1), ad_use(t, &B1)); // after tanh
**     ad_var a2 = ad_bias_add(t, ad_matmul(t, h1, w2, 0, 1), b2);
**     ad_var out = ad_dfa_output(t, &dfa, a2);         // the output pre-activation
**     ad_var loss = ad_softmax_cross_entropy(t, out, labels);
**
** ad_dfa_output is the identity forward; its pullback stores e in the tape's arena and
** passes it on. ad_dfa_hidden is the identity forward; its pullback ignores the
** cotangent from above (AD_RULE_IGNORES_DY) and writes e B_l' instead, so the
** activation's own pullback turns it into (e B_l') .* f'(a_l). Because the hidden rule
** declares that it ignores dy, the sweep never computes the layer above's dX product.
** The struct ad_dfa ties the two: the caller owns it (zero-initialised) and it must
** outlive the sweep. The hidden rule has the identity as reference (the output rule is
** the identity's own pullback). ad_rule_check checks ad_op_dfa_hidden alone, given as
** attrs a pointer to an ad_dfa (what ad_dfa_hidden passes): its signal hook lets the
** checker seed e, and hands it back when the check ends.
*/
#ifndef AD_FEEDBACK_H
#define AD_FEEDBACK_H

#include "ad_nn.h"
#include "ad_ops.h"

#ifdef __cplusplus
extern "C" {
#endif

AD_API ad_status ad_op_dense_fa(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_status ad_op_dense_usf(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_status ad_op_dense_sf(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_status ad_op_dense_kp(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);

AD_API ad_var ad_dense_fa(ad_tape *t, ad_var w, ad_var x, ad_var b);
AD_API ad_var ad_dense_usf(ad_tape *t, ad_var w, ad_var x);
AD_API ad_var ad_dense_sf(ad_tape *t, ad_var w, ad_var x, ad_var magnitudes);
AD_API ad_var ad_dense_kp(ad_tape *t, ad_var w, ad_var x, ad_var b);

/*
** Convolutional FA (the conv form of Lillicrap et al.'s rule, as BioTorch's Conv2d
** "fa" layer): y = conv2d(x, w) (+ b), exactly ad_conv2d's forward and attributes;
** dW and db as backprop; dX = the transposed convolution of dY with B, B fixed random
** of w's shape (Cout x Cin/groups x kh x kw), where backprop would use w. Inputs
** (x, w, B) and (x, w, b, B); B is never differentiated. The pullbacks read x (for dW)
** and B (for dX), never w, b or y. Reference: conv2d's backprop pullback. Errors as
** ad_conv2d's, and AD_ERR_SHAPE when B's shape is not w's (both named).
*/
AD_API ad_status ad_op_conv2d_fa(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_status ad_op_conv2d_bias_fa(ad_ctx *cx, const ad_tensor *const in[],
                                      ad_tensor **out);
AD_API ad_var ad_conv2d_fa(ad_tape *t, ad_var x, ad_var w, ad_var fb,
                           const ad_conv2d_attrs *attrs);
AD_API ad_var ad_conv2d_bias_fa(ad_tape *t, ad_var x, ad_var w, ad_var b, ad_var fb,
                                const ad_conv2d_attrs *attrs);

/*
** Convolutional uSF (sign symmetry, as BioTorch's Conv2d "usf"): y = conv2d(x, w) (+ b),
** ad_conv2d's forward and attributes; dW and db as backprop; dX = the transposed
** convolution of dY with sign(w) (w: Cout x Cin/groups x kh x kw), built from w at
** pullback time so it tracks w as it changes; sign(0) = 0, as ad_dense_usf. Inputs
** (x, w) and (x, w, b). The pullbacks read x (for dW) and w (for dX), never b or y.
** Reference: conv2d's backprop pullback. Errors as ad_conv2d's.
*/
AD_API ad_status ad_op_conv2d_usf(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_status ad_op_conv2d_bias_usf(ad_ctx *cx, const ad_tensor *const in[],
                                       ad_tensor **out);
AD_API ad_var ad_conv2d_usf(ad_tape *t, ad_var x, ad_var w, const ad_conv2d_attrs *attrs);
AD_API ad_var ad_conv2d_bias_usf(ad_tape *t, ad_var x, ad_var w, ad_var b,
                                 const ad_conv2d_attrs *attrs);

/*
** Scaled uSF, BioTorch's "scaling" option of its usf layers (dense and conv): as
** ad_dense_usf and ad_conv2d(_bias)_usf in everything (inputs, forward, dW, db, what
** the pullbacks read, reference, errors) but the feedback, which is s sign(W) with
** s = ad_usf_scale(W), the standard deviation of Xavier's initialisation for W's shape.
** Unscaled sign(W) has entries of magnitude 1, about 1 / s times the weights' (20x on
** LeNet's layers), so the error signal grows by that factor at every layer.
*/
AD_API ad_status ad_op_dense_usf_scaled(ad_ctx *cx, const ad_tensor *const in[],
                                        ad_tensor **out);
AD_API ad_status ad_op_conv2d_usf_scaled(ad_ctx *cx, const ad_tensor *const in[],
                                         ad_tensor **out);
AD_API ad_status ad_op_conv2d_bias_usf_scaled(ad_ctx *cx, const ad_tensor *const in[],
                                              ad_tensor **out);
AD_API ad_var ad_dense_usf_scaled(ad_tape *t, ad_var w, ad_var x);
AD_API ad_var ad_conv2d_usf_scaled(ad_tape *t, ad_var x, ad_var w,
                                   const ad_conv2d_attrs *attrs);
AD_API ad_var ad_conv2d_bias_usf_scaled(ad_tape *t, ad_var x, ad_var w, ad_var b,
                                        const ad_conv2d_attrs *attrs);

/* sqrt(2 / (fan_in + fan_out)) with ad_nn.h's fans (PyTorch's: a conv kernel's both
** multiplied by kh * kw), the scale of scaled uSF; NaN for NULL. */
AD_API double ad_usf_scale(const ad_tensor *w);

/*
** Convolutional sign-concordant feedback (BioTorch's Conv2d "brsf"/"frsf"): as uSF,
** but dX = the transposed convolution of dY with |M| .* sign(w), M a magnitudes tensor
** of w's shape (ad_sf_draw_magnitudes: before every batch for brSF, once for frSF).
** Inputs (x, w, M) and (x, w, b, M); M is never differentiated. The pullbacks read x,
** w and M, never b or y. Reference: conv2d's backprop pullback. Errors as
** ad_conv2d's, and AD_ERR_SHAPE when M's shape is not w's (both named).
*/
AD_API ad_status ad_op_conv2d_sf(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_status ad_op_conv2d_bias_sf(ad_ctx *cx, const ad_tensor *const in[],
                                      ad_tensor **out);
AD_API ad_var ad_conv2d_sf(ad_tape *t, ad_var x, ad_var w, ad_var magnitudes,
                           const ad_conv2d_attrs *attrs);
AD_API ad_var ad_conv2d_bias_sf(ad_tape *t, ad_var x, ad_var w, ad_var b, ad_var magnitudes,
                                const ad_conv2d_attrs *attrs);

/*
** Convolutional Kolen-Pollack: the forward, dX, dW and db of conv FA (dX = the
** transposed convolution of dY with B, B of w's shape), and dB = dW: B is a parameter
** too and receives w's update (not its gradient, which is 0), as ad_dense_kp. Inputs
** (x, w, B) and (x, w, b, B). The pullbacks read x (for dW, dB) and B (for dX), never
** w, b or y. Reference: conv2d's backprop pullback, and 0 for B. Errors as ad_conv2d's,
** and AD_ERR_SHAPE when B's shape is not w's (both named).
*/
AD_API ad_status ad_op_conv2d_kp(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_status ad_op_conv2d_bias_kp(ad_ctx *cx, const ad_tensor *const in[],
                                      ad_tensor **out);
AD_API ad_var ad_conv2d_kp(ad_tape *t, ad_var x, ad_var w, ad_var fb,
                           const ad_conv2d_attrs *attrs);
AD_API ad_var ad_conv2d_bias_kp(ad_tape *t, ad_var x, ad_var w, ad_var b, ad_var fb,
                                const ad_conv2d_attrs *attrs);

typedef struct ad_dfa {
    const ad_tensor *error_; /* private: e from the last sweep, in the tape's arena */
} ad_dfa;

AD_API ad_status ad_op_dfa_output(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_status ad_op_dfa_hidden(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_var ad_dfa_output(ad_tape *t, ad_dfa *dfa, ad_var y);
AD_API ad_var ad_dfa_hidden(ad_tape *t, ad_dfa *dfa, ad_var h, ad_var b);

/*
** DFA into a conv layer, in BioTorch's form (the form its benchmark table used):
** placed on a conv layer's input x (N x Cin x H x W), the identity forward; its
** pullback ignores dy and writes dx = conv_transpose(E, B) under the layer's attributes,
** where E[n,k,i,j] = e[n,k] for every position (i, j) of the Ho x Wo grid that a conv
** of x with B's kernel and those attributes gives, and B (outputs x Cin/groups x kh x
** kw) is fixed, never differentiated. So the layer below receives what backprop would
** send if the conv's output cotangent were e broadcast over its grid and its weights
** were B. e must be N x outputs (the output pre-activation of a classifier; a rank-4
** output is not supported). Give the conv's own attributes (attrs NULL: conv2d's
** defaults) so the grid matches the layer it feeds. For a dense layer the same form is
** dh = e B_l with B_l outputs x in: ad_dfa_hidden with its B (in x outputs) = B_l'.
**
** Noekland's form (a full matrix from the outputs to the layer's C*H*W units) needs no
** rule of its own: it is ad_dfa_hidden on a flattened view,
** Example (text):
**     h = ad_reshape(t, ad_dfa_hidden(t, &dfa, ad_flatten(t, x), B), 4, x_shape)
** with B (C*H*W) x outputs, since flatten and reshape only relabel elements.
**
** Reference: the identity (dense DFA's). ad_rule_check checks ad_op_dfa_conv_hidden
** given a pointer to an ad_dfa_conv_attrs as attrs; its signal hook seeds e (N x
** outputs). Errors at record time: AD_ERR_NULL (no ad_dfa), AD_ERR_RANK (x or B not
** rank 4), and as ad_conv2d's for x and B (AD_ERR_SHAPE: B's Cin/groups not x's
** channels, outputs not divisible by groups, a kernel larger than the padded input;
** AD_ERR_INVALID: an attribute below its minimum; AD_ERR_OVERFLOW), named with
** "dfa_conv_hidden" and the shapes. In the sweep: AD_ERR_INVALID when no ad_dfa_output
** with the same ad_dfa ran first (as ad_dfa_hidden), AD_ERR_SHAPE when e is not N x
** outputs of B, AD_ERR_DTYPE when e's dtype is not x's.
*/
typedef struct ad_dfa_conv_attrs {
    ad_conv2d_attrs conv; /* the conv layer's stride, padding, dilation, groups */
    ad_dfa *dfa;          /* required; the caller's, as ad_dfa_hidden's */
} ad_dfa_conv_attrs;

AD_API ad_status ad_op_dfa_conv_hidden(ad_ctx *cx, const ad_tensor *const in[],
                                       ad_tensor **out);
AD_API ad_var ad_dfa_conv_hidden(ad_tape *t, ad_dfa *dfa, ad_var x, ad_var b,
                                 const ad_conv2d_attrs *attrs);

/*
** Gradient clamping, as BioTorch's training option clamps each layer's input gradient:
** the identity forward on a float tensor of any rank; the pullback writes dy clamped
** elementwise to [lo, hi] (a NaN in dy stays NaN, as torch.clamp keeps it), so the
** layer below receives a bounded signal. Place it on a layer's input. Its reference is
** the identity (the true gradient), and a reference sweep (use_reference) ignores the
** clamp. Input 0 is marked not_gradient, so ad_rule_check judges it structurally; it
** passes given bounds its cotangents stay inside (e.g. [-4, 4]), and fails LINEAR at
** [-1, 1], since a clamping pullback is not linear in dy. The pullback reads dy alone.
** attrs NULL: AD_CLAMP_GRAD_ATTRS_DEFAULT, [-1, 1]. Bounds are compared in the tensor's
** dtype (float32 rounds them). Errors at record time: AD_ERR_INVALID when lo > hi or a
** bound is NaN (infinite bounds are allowed).
*/
typedef struct ad_clamp_grad_attrs {
    double lo, hi;
} ad_clamp_grad_attrs;
#define AD_CLAMP_GRAD_ATTRS_DEFAULT ((ad_clamp_grad_attrs){.lo = -1.0, .hi = 1.0})

AD_API ad_status ad_op_clamp_grad(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_var ad_clamp_grad(ad_tape *t, ad_var x, const ad_clamp_grad_attrs *attrs);

/* The angle in degrees between two tensors of one size seen as flat vectors, or NaN
** when either is all zeros or the sizes differ. 90 for unrelated random signals. */
AD_API double ad_angle_degrees(const ad_tensor *a, const ad_tensor *b);

/* Fills m with |u| for u drawn like Glorot-uniform for m's shape: the magnitudes of
** sign-concordant feedback (brSF: call before every batch; frSF: once). */
AD_API ad_status ad_sf_draw_magnitudes(ad_tensor *m, ad_rng *r);

#ifdef __cplusplus
}
#endif
#endif /* AD_FEEDBACK_H */
