/*
** elementwise.c: a + b, a - b, a * b, alpha a, and X + b with b added to every row.
**
** Each kernel is written once over an element type T and run as float or double by
** TYPED. Pullbacks honour the beta contract of ad_rule.h through PUT: beta 0 means
** the buffer holds garbage and is overwritten, beta 1 means add to what is there.
*/
#include <string.h>

#include "ops_internal.h"

/* d = alpha s, or d += alpha s; d and s have one dtype and size. */
static void put_scaled(ad_tensor *d, float beta, double alpha, const ad_tensor *s)
{
    AD_DISPATCH_FLOAT(d->dtype, T, {
        T *o = d->data;
        const T *x = s->data, a = (T)alpha;
        AD_PUT_EACH(o, d->size, beta, i, a * x[i]);
    });
}

/* d = s u, or d += s u, elementwise. */
static void put_product(ad_tensor *d, float beta, const ad_tensor *s, const ad_tensor *u)
{
    AD_DISPATCH_FLOAT(d->dtype, T, {
        T *o = d->data;
        const T *x = s->data, *y = u->data;
        AD_PUT_EACH(o, d->size, beta, i, x[i] * y[i]);
    });
}

typedef enum binary_kind { BIN_ADD, BIN_SUB, BIN_MUL } binary_kind;

static ad_status binary(ad_ctx *cx, const char *op, binary_kind kind,
                        const ad_tensor *const in[], ad_tensor **out)
{
    const ad_tensor *a = in[0], *b = in[1];
    ad_status rc = adi_require_same_shape(op, a, b);
    if (rc || (rc = ad_out(cx, a->dtype, a->ndim, a->shape, out)))
        return rc;
    int64_t n = a->size;
    AD_DISPATCH_FLOAT(a->dtype, T, {
        const T *x = a->data, *y = b->data;
        T *z = (*out)->data;
        switch (kind) {
        case BIN_ADD: for (int64_t i = 0; i < n; i++) z[i] = x[i] + y[i]; break;
        case BIN_SUB: for (int64_t i = 0; i < n; i++) z[i] = x[i] - y[i]; break;
        case BIN_MUL: for (int64_t i = 0; i < n; i++) z[i] = x[i] * y[i]; break;
        }
    });
    return AD_OK;
}

/* ---- add ---- */

ad_status ad_op_add(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    return binary(cx, "add", BIN_ADD, in, out);
}

/* y = a + b:  da = dy;  db = dy */
static ad_status add_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                              const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)in, (void)y;
    for (int i = 0; i < 2; i++)
        if (din[i])
            put_scaled(din[i], beta[i], 1.0, dy);
    return AD_OK;
}

static const ad_rule rule_add = {.name = "add", .pullback = add_pullback, .n_inputs = 2,
                             .unread = AD_INPUT(0) | AD_INPUT(1) | AD_OUTPUT};

/* ---- sub ---- */

ad_status ad_op_sub(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    return binary(cx, "sub", BIN_SUB, in, out);
}

/* y = a - b:  da = dy;  db = -dy */
static ad_status sub_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                              const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)in, (void)y;
    if (din[0])
        put_scaled(din[0], beta[0], 1.0, dy);
    if (din[1])
        put_scaled(din[1], beta[1], -1.0, dy);
    return AD_OK;
}

static const ad_rule rule_sub = {.name = "sub", .pullback = sub_pullback, .n_inputs = 2,
                             .unread = AD_INPUT(0) | AD_INPUT(1) | AD_OUTPUT};

/* ---- mul ---- */

ad_status ad_op_mul(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    return binary(cx, "mul", BIN_MUL, in, out);
}

/* y = a b (elementwise):  da = dy b;  db = dy a */
static ad_status mul_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                              const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)y;
    if (din[0])
        put_product(din[0], beta[0], dy, in[1]);
    if (din[1])
        put_product(din[1], beta[1], dy, in[0]);
    return AD_OK;
}

static const ad_rule rule_mul = {.name = "mul", .pullback = mul_pullback, .n_inputs = 2,
                             .unread = AD_OUTPUT};

/* ---- scale ---- */

/* The attributes are required (the rule has no defaults), so recording refuses a call
** without them; only a primal called by hand, without a context, finds none. */
ad_status ad_op_scale(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    const ad_tensor *a = in[0];
    const ad_scale_attrs *at = ad_attrs(cx);
    if (!at)
        return ad_fail(AD_ERR_NULL, "scale: no context (primals run through ad_call)");
    ad_status rc = ad_out(cx, a->dtype, a->ndim, a->shape, out);
    if (rc)
        return rc;
    put_scaled(*out, 0.0f, at->alpha, a);
    return AD_OK;
}

/* y = alpha a:  da = alpha dy */
static ad_status scale_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                                const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)in, (void)y;
    const ad_scale_attrs *at = ad_attrs(cx);
    if (din[0])
        put_scaled(din[0], beta[0], at->alpha, dy);
    return AD_OK;
}

static const ad_rule rule_scale = {.name = "scale", .pullback = scale_pullback, .n_inputs = 1,
                                   .unread = AD_INPUT(0) | AD_OUTPUT,
                                   .attrs_size = sizeof(ad_scale_attrs)};

/* ---- bias_add ---- */

ad_status adi_require_bias_shape(const char *op, const ad_tensor *x, const ad_tensor *b)
{
    if (b->shape[0] == x->shape[1])
        return AD_OK;
    char dx[64], db[64];
    return ad_fail(AD_ERR_SHAPE, "%s: bias %s does not match the columns of %s", op,
                   ad_tensor_describe(b, db, sizeof db), ad_tensor_describe(x, dx, sizeof dx));
}

ad_status ad_op_bias_add(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    const ad_tensor *x = in[0], *b = in[1];
    ad_status rc = adi_require_bias_shape("bias_add", x, b);
    if (rc)
        return rc;
    rc = ad_out(cx, x->dtype, 2, x->shape, out);
    if (rc)
        return rc;
    int64_t m = x->shape[1], n = m ? x->shape[0] : 0; /* [2^40 x 0]: no 2^40 rows */
    AD_DISPATCH_FLOAT(x->dtype, T, {
        const T *xs = x->data, *bs = b->data;
        T *ys = (*out)->data;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < m; j++)
                ys[i * m + j] = xs[i * m + j] + bs[j];
    });
    return AD_OK;
}

/* Y = X + 1 b':  dX = dY;  db = column sums of dY (summed in double) */
static ad_status bias_add_pullback(ad_ctx *cx, const ad_tensor *dy,
                                   const ad_tensor *const in[], const ad_tensor *y,
                                   ad_tensor *const din[], const float beta[])
{
    (void)in;
    int64_t m = y->shape[1], n = m ? y->shape[0] : 0; /* [2^40 x 0]: no 2^40 rows */
    if (din[0])
        put_scaled(din[0], beta[0], 1.0, dy);
    if (!din[1])
        return AD_OK;
    /* Row by row into double accumulators: contiguous and vectorisable, where summing
    ** one column at a time strides through memory; each column's order is the same. */
    ad_tensor *acc;
    ad_status rc = ad_scratch(cx, AD_F64, 1, &m, &acc);
    if (rc)
        return rc;
    double *s = acc->data;
    memset(s, 0, (size_t)m * sizeof *s);
    AD_DISPATCH_FLOAT(dy->dtype, T, {
        const T *g = dy->data;
        T *db = din[1]->data;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < m; j++)
                s[j] += g[i * m + j];
        AD_PUT_EACH(db, m, beta[1], j, (T)s[j]);
    });
    return AD_OK;
}

static const ad_rule rule_bias_add = {
    .name = "bias_add",
    .pullback = bias_add_pullback,
    .n_inputs = 2,
    .inputs = {{0, AD_RANK(2)}, {0, AD_RANK(1)}},
    .unread = AD_INPUT(0) | AD_INPUT(1) | AD_OUTPUT, /* reads dy alone */
};

/* ---- typed wrappers ---- */

ad_var ad_add(ad_tape *t, ad_var a, ad_var b)
{
    return ad_call_as(t, ad_op_add, "ad_add", (const ad_var[]){a, b}, 2, NULL, 0);
}

ad_var ad_sub(ad_tape *t, ad_var a, ad_var b)
{
    return ad_call_as(t, ad_op_sub, "ad_sub", (const ad_var[]){a, b}, 2, NULL, 0);
}

ad_var ad_mul(ad_tape *t, ad_var a, ad_var b)
{
    return ad_call_as(t, ad_op_mul, "ad_mul", (const ad_var[]){a, b}, 2, NULL, 0);
}

ad_var ad_scale(ad_tape *t, ad_var a, double alpha)
{
    ad_scale_attrs at = {alpha};
    return ad_call_as(t, ad_op_scale, "ad_scale", (const ad_var[]){a}, 1, &at, sizeof at);
}

ad_var ad_bias_add(ad_tape *t, ad_var x, ad_var b)
{
    return ad_call_as(t, ad_op_bias_add, "ad_bias_add", (const ad_var[]){x, b}, 2, NULL, 0);
}

ADI_RULE_FAMILY(adi_family_elementwise, "elementwise",
                ADI_SEED(ad_op_add, rule_add),
                ADI_SEED(ad_op_sub, rule_sub),
                ADI_SEED(ad_op_mul, rule_mul),
                ADI_SEED(ad_op_scale, rule_scale),
                ADI_SEED(ad_op_bias_add, rule_bias_add));
