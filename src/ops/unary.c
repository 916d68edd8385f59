/*
** unary.c: exp, log, softplus, leaky relu and stop_gradient, elementwise.
**
** Kernels are written once over T (AD_DISPATCH_FLOAT); <tgmath.h> makes exp, log and
** log1p resolve to expf/logf/log1pf for float. What each pullback reads: exp its output
** y (dx = dy y), log, softplus and leaky relu their input x. stop_gradient declares its
** input nondiff, so the sweep never gives it a cotangent buffer and nothing flows back.
*/
#include <tgmath.h>

#include "ops_internal.h"

static ad_status unary_out(ad_ctx *cx, const ad_tensor *x, ad_tensor **out)
{
    return ad_out(cx, x->dtype, x->ndim, x->shape, out);
}

/* ---- exp ---- */

ad_status ad_op_exp(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    ad_status rc = unary_out(cx, in[0], out);
    if (rc)
        return rc;
    AD_DISPATCH_FLOAT(in[0]->dtype, T, {
        const T *x = in[0]->data;
        T *y = (*out)->data;
        for (int64_t i = 0; i < in[0]->size; i++)
            y[i] = exp(x[i]);
    });
    return AD_OK;
}

/* y = e^x:  dx = dy y */
static ad_status exp_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                              const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)in;
    if (!din[0])
        return AD_OK;
    AD_DISPATCH_FLOAT(y->dtype, T, {
        const T *g = dy->data, *ys = y->data;
        T *dx = din[0]->data;
        AD_PUT_EACH(dx, y->size, beta[0], i, g[i] * ys[i]);
    });
    return AD_OK;
}

static const ad_rule rule_exp = {.name = "exp", .pullback = exp_pullback, .n_inputs = 1,
                                 .unread = AD_INPUT(0)}; /* reads y */

/* ---- log ---- */

/* As C's log: NaN below 0, -inf at 0; anomaly mode reports either at record time. */
ad_status ad_op_log(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    ad_status rc = unary_out(cx, in[0], out);
    if (rc)
        return rc;
    AD_DISPATCH_FLOAT(in[0]->dtype, T, {
        const T *x = in[0]->data;
        T *y = (*out)->data;
        for (int64_t i = 0; i < in[0]->size; i++)
            y[i] = log(x[i]);
    });
    return AD_OK;
}

/* y = log x:  dx = dy / x */
static ad_status log_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                              const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)y;
    if (!din[0])
        return AD_OK;
    AD_DISPATCH_FLOAT(dy->dtype, T, {
        const T *g = dy->data, *x = in[0]->data;
        T *dx = din[0]->data;
        AD_PUT_EACH(dx, dy->size, beta[0], i, g[i] / x[i]);
    });
    return AD_OK;
}

static const ad_rule rule_log = {.name = "log", .pullback = log_pullback, .n_inputs = 1,
                                 .unread = AD_OUTPUT}; /* reads x */

/* ---- softplus ---- */

/*
** PyTorch's softplus with beta 1 and threshold 20: x itself above the threshold, where
** log1p(e^x) equals x to within e^-20, else log1p(e^x), which never overflows there
** (e^20 is finite in float) and keeps every digit of small results for very negative x.
*/
#define SOFTPLUS_THRESHOLD 20

ad_status ad_op_softplus(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    ad_status rc = unary_out(cx, in[0], out);
    if (rc)
        return rc;
    AD_DISPATCH_FLOAT(in[0]->dtype, T, {
        const T *x = in[0]->data;
        T *y = (*out)->data;
        for (int64_t i = 0; i < in[0]->size; i++)
            y[i] = x[i] > SOFTPLUS_THRESHOLD ? x[i] : log1p(exp(x[i]));
    });
    return AD_OK;
}

/* y = log(1 + e^x):  dx = dy e^x / (e^x + 1), and dx = dy above the threshold (PyTorch) */
static ad_status softplus_pullback(ad_ctx *cx, const ad_tensor *dy,
                                   const ad_tensor *const in[], const ad_tensor *y,
                                   ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)y;
    if (!din[0])
        return AD_OK;
    AD_DISPATCH_FLOAT(dy->dtype, T, {
        const T *g = dy->data, *x = in[0]->data;
        T *dx = din[0]->data;
        AD_PUT_EACH(dx, dy->size, beta[0], i,
                    x[i] > SOFTPLUS_THRESHOLD ? g[i]
                                              : g[i] * (exp(x[i]) / (exp(x[i]) + 1)));
    });
    return AD_OK;
}

static const ad_rule rule_softplus = {
    .name = "softplus", .pullback = softplus_pullback, .n_inputs = 1,
    .unread = AD_OUTPUT}; /* reads x */

/* ---- leaky relu ---- */

ad_status ad_op_leaky_relu(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    const ad_leaky_relu_attrs *at = ad_attrs(cx);
    if (!at)
        return ad_fail(AD_ERR_NULL, "leaky_relu: no context (primals run through ad_call)");
    ad_status rc = unary_out(cx, in[0], out);
    if (rc)
        return rc;
    AD_DISPATCH_FLOAT(in[0]->dtype, T, {
        const T *x = in[0]->data, a = (T)at->negative_slope;
        T *y = (*out)->data;
        for (int64_t i = 0; i < in[0]->size; i++)
            y[i] = x[i] > 0 ? x[i] : a * x[i]; /* NaN stays NaN */
    });
    return AD_OK;
}

/* y = x for x > 0, else a x:  dx = dy where x > 0, else a dy (PyTorch's a at x = 0) */
static ad_status leaky_relu_pullback(ad_ctx *cx, const ad_tensor *dy,
                                     const ad_tensor *const in[], const ad_tensor *y,
                                     ad_tensor *const din[], const float beta[])
{
    (void)y;
    if (!din[0])
        return AD_OK;
    const ad_leaky_relu_attrs *at = ad_attrs(cx);
    AD_DISPATCH_FLOAT(dy->dtype, T, {
        const T *g = dy->data, *x = in[0]->data, a = (T)at->negative_slope;
        T *dx = din[0]->data;
        AD_PUT_EACH(dx, dy->size, beta[0], i, x[i] > 0 ? g[i] : a * g[i]);
    });
    return AD_OK;
}

static const ad_rule rule_leaky_relu = {
    .name = "leaky_relu",
    .pullback = leaky_relu_pullback,
    .n_inputs = 1,
    .unread = AD_OUTPUT, /* reads x */
    .attrs_size = sizeof(ad_leaky_relu_attrs),
    .attrs_default = &AD_LEAKY_RELU_ATTRS_DEFAULT,
};

/* ---- stop_gradient ---- */

/* The identity, as a view of x: nothing is copied. */
ad_status ad_op_stop_gradient(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    return ad_out_view(cx, 0, in[0]->ndim, in[0]->shape, out);
}

/*
** Never called by a sweep: the input is nondiff, so its din is always NULL and the
** node's output never depends on a parameter. It exists because a rule needs one.
*/
static ad_status stop_gradient_pullback(ad_ctx *cx, const ad_tensor *dy,
                                        const ad_tensor *const in[], const ad_tensor *y,
                                        ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)dy, (void)in, (void)y, (void)din, (void)beta;
    return AD_OK;
}

static const ad_rule rule_stop_gradient = {
    .name = "stop_gradient", .pullback = stop_gradient_pullback, .n_inputs = 1,
    .nondiff = AD_INPUT(0), .unread = AD_INPUT(0) | AD_OUTPUT};

/* ---- typed wrappers ---- */

ad_var ad_exp(ad_tape *t, ad_var x)
{
    return ad_call_as(t, ad_op_exp, "ad_exp", (const ad_var[]){x}, 1, NULL, 0);
}

ad_var ad_log(ad_tape *t, ad_var x)
{
    return ad_call_as(t, ad_op_log, "ad_log", (const ad_var[]){x}, 1, NULL, 0);
}

ad_var ad_softplus(ad_tape *t, ad_var x)
{
    return ad_call_as(t, ad_op_softplus, "ad_softplus", (const ad_var[]){x}, 1, NULL, 0);
}

/* NULL attributes: the rule's default slope. */
ad_var ad_leaky_relu(ad_tape *t, ad_var x, const ad_leaky_relu_attrs *attrs)
{
    return ad_call_as(t, ad_op_leaky_relu, "ad_leaky_relu", (const ad_var[]){x}, 1, attrs,
                      attrs ? sizeof *attrs : 0);
}

ad_var ad_stop_gradient(ad_tape *t, ad_var x)
{
    return ad_call_as(t, ad_op_stop_gradient, "ad_stop_gradient", (const ad_var[]){x}, 1,
                      NULL, 0);
}

ADI_RULE_FAMILY(adi_family_unary, "unary",
                ADI_SEED(ad_op_exp, rule_exp),
                ADI_SEED(ad_op_log, rule_log),
                ADI_SEED(ad_op_softplus, rule_softplus),
                ADI_SEED(ad_op_leaky_relu, rule_leaky_relu),
                ADI_SEED(ad_op_stop_gradient, rule_stop_gradient));
