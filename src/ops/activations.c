/*
** activations.c: tanh, relu and the logistic sigmoid, elementwise.
**
** Kernels are written once over T (float or double, by AD_DISPATCH_FLOAT); <tgmath.h>
** makes tanh and exp resolve to tanhf/expf for float, so float stays float. The
** tanh and sigmoid pullbacks use the saved output y, relu reads its input x.
*/
#include <string.h>
#include <tgmath.h>

#include "ops_internal.h"

static ad_status unary_out(ad_ctx *cx, const ad_tensor *x, ad_tensor **out)
{
    return ad_out(cx, x->dtype, x->ndim, x->shape, out);
}

/* ---- tanh ---- */

ad_status ad_op_tanh(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    ad_status rc = unary_out(cx, in[0], out);
    if (rc)
        return rc;
    if (in[0]->dtype == AD_F32) { /* glibc's tanhf is scalar: see tanh_f32.c */
        adi_tanh_f32(in[0]->data, (*out)->data, in[0]->size);
        return AD_OK;
    }
    const double *x = in[0]->data;
    double *y = (*out)->data;
    for (int64_t i = 0; i < in[0]->size; i++)
        y[i] = tanh(x[i]);
    return AD_OK;
}

/* y = tanh(x):  dx = dy (1 - y^2) */
static ad_status tanh_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                               const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)in;
    if (!din[0])
        return AD_OK;
    AD_DISPATCH_FLOAT(y->dtype, T, {
        const T *g = dy->data, *ys = y->data;
        T *dx = din[0]->data;
        AD_PUT_EACH(dx, y->size, beta[0], i, g[i] * (1 - ys[i] * ys[i]));
    });
    return AD_OK;
}

static const ad_rule rule_tanh = {.name = "tanh", .pullback = tanh_pullback, .n_inputs = 1,
                              .unread = AD_INPUT(0)}; /* reads y */

/* ---- relu ---- */

ad_status ad_op_relu(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    ad_status rc = unary_out(cx, in[0], out);
    if (rc)
        return rc;
    AD_DISPATCH_FLOAT(in[0]->dtype, T, {
        const T *x = in[0]->data;
        T *y = (*out)->data;
        for (int64_t i = 0; i < in[0]->size; i++)
            y[i] = x[i] < 0 ? (T)0 : x[i]; /* NaN stays NaN */
    });
    return AD_OK;
}

/* y = max(x, 0):  dx = dy where x > 0, else 0 (the subgradient 0 at x = 0) */
static ad_status relu_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                               const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)y;
    if (!din[0])
        return AD_OK;
    if (dy->dtype == AD_F32) {
        const float *g = dy->data, *x = in[0]->data;
        float *dx = din[0]->data;
        AD_PUT_EACH(dx, dy->size, beta[0], i, adi_relu_grad_f32(g[i], x[i]));
    } else {
        const double *g = dy->data, *x = in[0]->data;
        double *dx = din[0]->data;
        AD_PUT_EACH(dx, dy->size, beta[0], i, adi_relu_grad_f64(g[i], x[i]));
    }
    return AD_OK;
}

static const ad_rule rule_relu = {.name = "relu", .pullback = relu_pullback, .n_inputs = 1,
                              .unread = AD_OUTPUT}; /* reads x */

/* ---- sigmoid ---- */

/*
** 1 / (1 + e^-x) overflows e^-x for very negative x; the form e^x / (1 + e^x) for
** x < 0 keeps every exponent non-positive, so no intermediate overflows.
*/
ad_status ad_op_sigmoid(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    ad_status rc = unary_out(cx, in[0], out);
    if (rc)
        return rc;
    AD_DISPATCH_FLOAT(in[0]->dtype, T, {
        const T *x = in[0]->data;
        T *y = (*out)->data;
        for (int64_t i = 0; i < in[0]->size; i++) {
            T e = exp(-fabs(x[i]));
            y[i] = x[i] >= 0 ? 1 / (1 + e) : e / (1 + e);
        }
    });
    return AD_OK;
}

/* y = 1 / (1 + e^-x):  dx = dy y (1 - y) */
static ad_status sigmoid_pullback(ad_ctx *cx, const ad_tensor *dy,
                                  const ad_tensor *const in[], const ad_tensor *y,
                                  ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)in;
    if (!din[0])
        return AD_OK;
    AD_DISPATCH_FLOAT(y->dtype, T, {
        const T *g = dy->data, *ys = y->data;
        T *dx = din[0]->data;
        AD_PUT_EACH(dx, y->size, beta[0], i, g[i] * ys[i] * (1 - ys[i]));
    });
    return AD_OK;
}

static const ad_rule rule_sigmoid = {
    .name = "sigmoid", .pullback = sigmoid_pullback, .n_inputs = 1,
    .unread = AD_INPUT(0)}; /* reads y */

/* ---- typed wrappers ---- */

ad_var ad_tanh(ad_tape *t, ad_var x)
{
    return ad_call_as(t, ad_op_tanh, "ad_tanh", (const ad_var[]){x}, 1, NULL, 0);
}

ad_var ad_relu(ad_tape *t, ad_var x)
{
    return ad_call_as(t, ad_op_relu, "ad_relu", (const ad_var[]){x}, 1, NULL, 0);
}

ad_var ad_sigmoid(ad_tape *t, ad_var x)
{
    return ad_call_as(t, ad_op_sigmoid, "ad_sigmoid", (const ad_var[]){x}, 1, NULL, 0);
}

ADI_RULE_FAMILY(adi_family_activations, "activations",
                ADI_SEED(ad_op_tanh, rule_tanh),
                ADI_SEED(ad_op_relu, rule_relu),
                ADI_SEED(ad_op_sigmoid, rule_sigmoid));
