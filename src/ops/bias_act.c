/*
** bias_act.c: the fused path of a dense layer's tail, y = act(X + 1 b'), for relu and
** tanh: one pass forward and one backward instead of bias_add's and the activation's
** own (plain path: elementwise.c and activations.c, which stay for testing and for
** models that need the pre-activation).
**
** Why: after the GEMMs, a layer's step is memory traffic. Unfused, the forward reads
** and writes the batch twice; the backward reads dY and X for the activation, copies
** the result for bias_add's dX and reads it again for db. Fused, the backward reads dY
** and y once, writes dX and sums db from registers (profile of W3, 784-1024-1024-10
** relu: these passes were 2.2% of the step; tests/test_bias_act.c checks that the
** fused gradients are bitwise those of the plain ops).
**
** Same arithmetic as the plain ops, element for element: y = act(x + b) with x + b
** rounded to T first; relu's derivative tests y > 0 (equivalent to x + b > 0, NaN
** included); db sums in double, row by row, as bias_add's pullback does.
*/
#include <tgmath.h>

#include "ops_internal.h"

static ad_status bias_act_out(const char *op, ad_ctx *cx, const ad_tensor *const in[],
                              ad_tensor **out)
{
    ad_status rc = adi_require_bias_shape(op, in[0], in[1]);
    return rc ? rc : ad_out(cx, in[0]->dtype, 2, in[0]->shape, out);
}

/* Rows and columns; [2^40 x 0] has no rows to visit. */
static void extents(const ad_tensor *t, int64_t *n, int64_t *m)
{
    *m = t->shape[1];
    *n = *m ? t->shape[0] : 0;
}

ad_status ad_op_bias_relu(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    ad_status rc = bias_act_out("bias_relu", cx, in, out);
    if (rc)
        return rc;
    int64_t n, m;
    extents(in[0], &n, &m);
    AD_DISPATCH_FLOAT(in[0]->dtype, T, {
        const T *xs = in[0]->data, *bs = in[1]->data;
        T *ys = (*out)->data;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < m; j++) {
                T v = xs[i * m + j] + bs[j];
                ys[i * m + j] = v < 0 ? (T)0 : v; /* NaN stays NaN, as relu */
            }
    });
    return AD_OK;
}

ad_status ad_op_bias_tanh(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    ad_status rc = bias_act_out("bias_tanh", cx, in, out);
    if (rc)
        return rc;
    int64_t n, m;
    extents(in[0], &n, &m);
    AD_DISPATCH_FLOAT(in[0]->dtype, T, {
        const T *xs = in[0]->data, *bs = in[1]->data;
        T *ys = (*out)->data;
        for (int64_t i = 0; i < n; i++) {
            T *row = ys + i * m;
            for (int64_t j = 0; j < m; j++)
                row[j] = xs[i * m + j] + bs[j];
            /* While the row is in L1; the float kernel is elementwise, so the bits do
            ** not depend on how the array is split. */
            if (sizeof(T) == sizeof(float))
                adi_tanh_f32((const float *)row, (float *)row, m);
            else
                for (int64_t j = 0; j < m; j++)
                    row[j] = tanh(row[j]);
        }
    });
    return AD_OK;
}

/*
** One pass over dY and y: v = act'(y) dY for each element, written to dX (with beta)
** and added to the column's double accumulator. GRAD(g, y) gives v.
*/
#define BIAS_ACT_PULLBACK(T, GRAD)                                                      \
    do {                                                                                \
        const T *g = dy->data, *ys = y->data;                                           \
        T *dx = din[0] ? (T *)din[0]->data : NULL;                                      \
        for (int64_t i = 0; i < n; i++) {                                               \
            const T *gr = g + i * m, *yr = ys + i * m;                                  \
            if (!dx)                                                                    \
                for (int64_t j = 0; j < m; j++)                                         \
                    s[j] += GRAD(gr[j], yr[j]);                                         \
            else if (beta[0] != 0.0f)                                                   \
                for (int64_t j = 0; j < m; j++) {                                       \
                    T v = GRAD(gr[j], yr[j]);                                           \
                    dx[i * m + j] += v;                                                 \
                    s[j] += v;                                                          \
                }                                                                       \
            else                                                                        \
                for (int64_t j = 0; j < m; j++) {                                       \
                    T v = GRAD(gr[j], yr[j]);                                           \
                    dx[i * m + j] = v;                                                  \
                    s[j] += v;                                                          \
                }                                                                       \
        }                                                                               \
        if (din[1]) {                                                                   \
            T *db = din[1]->data;                                                       \
            AD_PUT_EACH(db, m, beta[1], j, (T)s[j]);                                    \
        }                                                                               \
    } while (0)

#define TANH_GRAD(g, y) ((g) * (1 - (y) * (y)))

/* A pullback body for one activation: the accumulators, then the pass. */
static ad_status bias_act_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *y,
                                   ad_tensor *const din[], const float beta[], int relu)
{
    if (!din[0] && !din[1])
        return AD_OK;
    int64_t n, m;
    extents(y, &n, &m);
    ad_tensor *acc;
    ad_status rc = ad_scratch(cx, AD_F64, 1, &m, &acc);
    if (rc)
        return rc;
    double *s = acc->data;
    memset(s, 0, (size_t)m * sizeof *s);
    if (relu && y->dtype == AD_F32)
        BIAS_ACT_PULLBACK(float, adi_relu_grad_f32);
    else if (relu)
        BIAS_ACT_PULLBACK(double, adi_relu_grad_f64);
    else if (y->dtype == AD_F32)
        BIAS_ACT_PULLBACK(float, TANH_GRAD);
    else
        BIAS_ACT_PULLBACK(double, TANH_GRAD);
    return AD_OK;
}

/* y = relu(x + b):  dx = dy where y > 0, else 0;  db = column sums of dx */
static ad_status bias_relu_pullback(ad_ctx *cx, const ad_tensor *dy,
                                    const ad_tensor *const in[], const ad_tensor *y,
                                    ad_tensor *const din[], const float beta[])
{
    (void)in;
    return bias_act_pullback(cx, dy, y, din, beta, 1);
}

/* y = tanh(x + b):  dx = dy (1 - y^2);  db = column sums of dx */
static ad_status bias_tanh_pullback(ad_ctx *cx, const ad_tensor *dy,
                                    const ad_tensor *const in[], const ad_tensor *y,
                                    ad_tensor *const din[], const float beta[])
{
    (void)in;
    return bias_act_pullback(cx, dy, y, din, beta, 0);
}

static const ad_rule rule_bias_relu = {
    .name = "bias_relu",
    .pullback = bias_relu_pullback,
    .n_inputs = 2,
    .inputs = {{0, AD_RANK(2)}, {0, AD_RANK(1)}},
    .unread = AD_INPUT(0) | AD_INPUT(1), /* reads y */
};

static const ad_rule rule_bias_tanh = {
    .name = "bias_tanh",
    .pullback = bias_tanh_pullback,
    .n_inputs = 2,
    .inputs = {{0, AD_RANK(2)}, {0, AD_RANK(1)}},
    .unread = AD_INPUT(0) | AD_INPUT(1), /* reads y */
};

ad_var ad_bias_relu(ad_tape *t, ad_var x, ad_var b)
{
    return ad_call_as(t, ad_op_bias_relu, "ad_bias_relu", (const ad_var[]){x, b}, 2, NULL, 0);
}

ad_var ad_bias_tanh(ad_tape *t, ad_var x, ad_var b)
{
    return ad_call_as(t, ad_op_bias_tanh, "ad_bias_tanh", (const ad_var[]){x, b}, 2, NULL, 0);
}

ADI_RULE_FAMILY(adi_family_bias_act, "bias_act",
                ADI_SEED(ad_op_bias_relu, rule_bias_relu),
                ADI_SEED(ad_op_bias_tanh, rule_bias_tanh));
