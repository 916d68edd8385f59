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

#ifdef __cplusplus
}
#endif
#endif /* AD_OPS_EXTRA_H */
