/*
** ad_ops_extra.h: more built-in ops, in the manner of ad_ops.h (which it includes, and
** which had no room for them under the 300 lines of a public header): exp, log,
** softplus, leaky relu and stop_gradient; binary cross-entropy from logits; concat,
** slice and pad. Every op takes float32 or float64 (all float inputs of one call share
** one dtype); wrappers return a poisoned handle on error, as ad_call does.
**
** Example (fragment):
**     ad_var h = ad_leaky_relu(t, ad_matmul(t, x, w, 0, 1), NULL);  // slope 0.01
**     ad_var e = ad_exp(t, ad_stop_gradient(t, h));                  // no gradient
*/
#ifndef AD_OPS_EXTRA_H
#define AD_OPS_EXTRA_H

#include "ad_ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
** Elementwise, any rank, y of x's shape:
**   exp       y = e^x; the pullback reads y: dx = dy y.
**   log       y = log x, as C's log: NaN for x < 0, -inf at 0 (in anomaly mode either is
**             AD_ERR_NONFINITE at record time, naming ad_log); reads x: dx = dy / x.
**   softplus  y = log(1 + e^x), as torch.nn.functional.softplus (beta 1, threshold 20):
**             y = x for x > 20, else log1p(e^x), which neither overflows nor loses the
**             small values of very negative x; reads x: dx = dy e^x / (e^x + 1), and
**             dx = dy for x > 20.
*/
AD_API ad_status ad_op_exp(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_status ad_op_log(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_status ad_op_softplus(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_var ad_exp(ad_tape *t, ad_var x);
AD_API ad_var ad_log(ad_tape *t, ad_var x);
AD_API ad_var ad_softplus(ad_tape *t, ad_var x);

/*
** Leaky relu, elementwise, as torch.nn.functional.leaky_relu: y = x for x > 0, else
** negative_slope x; reads x: dx = dy for x > 0, else negative_slope dy (at x = 0 too).
** Attributes optional: NULL gives AD_LEAKY_RELU_ATTRS_DEFAULT (slope 0.01, PyTorch's).
*/
typedef struct ad_leaky_relu_attrs {
    double negative_slope; /* any value; applied in the tensor's dtype */
} ad_leaky_relu_attrs;
#define AD_LEAKY_RELU_ATTRS_DEFAULT ((ad_leaky_relu_attrs){.negative_slope = 0.01})
AD_API ad_status ad_op_leaky_relu(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_var ad_leaky_relu(ad_tape *t, ad_var x, const ad_leaky_relu_attrs *attrs);

/*
** The identity forward (a view of x: no copy; never write through it) that lets no
** gradient through, like PyTorch's detach: its input is nondiff, so a sweep gives x no
** cotangent from this path, and parameters behind it get nothing from it. A parameter
** reached only through stop_gradient gets no gradient at all (ad_grads_get: NULL, the
** library's "zero"; its pullback never runs). Reads neither x nor y.
*/
AD_API ad_status ad_op_stop_gradient(ad_ctx *cx, const ad_tensor *const in[],
                                     ad_tensor **out);
AD_API ad_var ad_stop_gradient(ad_tape *t, ad_var x);

/*
** Binary cross-entropy from logits x and float targets z of x's shape (any rank, each
** target any value in [0, 1]), as torch.nn.BCEWithLogitsLoss: per element
**   l = max(x, 0) - x z + log1p(e^-|x|),
** finite for any finite x (x = +-1000 included), then reduced as ad_reduction says
** over every element: none keeps l (x's shape), mean gives sum l / N (rank 0; NaN for
** N = 0, like PyTorch), sum sum l. Reads x, z and dy, never y:
** dx = c (sigmoid(x) - z) with c = dy (none: elementwise), dy / N (mean) or dy (sum).
** The targets are not differentiated. ad_bce_with_logits is the mean; the _ex form
** takes the reduction; ad_op_bce_with_logits's attributes are optional (default mean).
** Errors: AD_ERR_SHAPE (z not of x's shape, both named), AD_ERR_INVALID (a reduction
** other than the three), AD_ERR_DTYPE (targets of another dtype).
*/
typedef struct ad_bce_attrs {
    ad_reduction reduction;
} ad_bce_attrs;
#define AD_BCE_ATTRS_DEFAULT ((ad_bce_attrs){.reduction = AD_REDUCTION_MEAN})
AD_API ad_status ad_op_bce_with_logits(ad_ctx *cx, const ad_tensor *const in[],
                                       ad_tensor **out);
AD_API ad_var ad_bce_with_logits(ad_tape *t, ad_var logits, ad_var targets);
AD_API ad_var ad_bce_with_logits_ex(ad_tape *t, ad_var logits, ad_var targets,
                                    ad_reduction reduction);

#ifdef __cplusplus
}
#endif
#endif /* AD_OPS_EXTRA_H */
