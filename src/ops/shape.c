/*
** shape.c: reshape and flatten, as views. The output is x's memory under a new shape
** (ad_out_view), so the forward pass copies nothing; the tape knows the two alias
** (memory saving keeps the buffer while either is read). The pullback is the same
** reshape backwards: dX is dY's elements in the same order, under x's shape, which
** needs neither x nor y (only their shapes, which din and dy carry).
**
** Why the pullback copies rather than aliasing dY too: the sweep gives every input its
** own cotangent buffer and may add several contributions into it (beta = 1); a shared
** buffer would need the sweep to know about views as well, for one pass over a tensor
** that is small next to the conv or matmul that produced it.
*/
#include "ops_internal.h"

/* Extents of x's shape with one -1 inferred, or an error naming op and x. */
static ad_status resolve_shape(const ad_tensor *x, const ad_reshape_attrs *at,
                               int64_t shape[AD_MAX_RANK])
{
    char dx[64];
    int infer = -1;
    int64_t known = 1;
    if (at->ndim < 0 || at->ndim > AD_MAX_RANK)
        return ad_fail(AD_ERR_RANK, "reshape: rank %d is outside 0..%d (x %s)", at->ndim,
                       AD_MAX_RANK, ad_tensor_describe(x, dx, sizeof dx));
    for (int i = 0; i < at->ndim; i++) {
        int64_t e = at->shape[i];
        if (e == -1 && infer < 0) {
            infer = i;
            continue;
        }
        if (e < 0)
            return ad_fail(AD_ERR_INVALID, "reshape: extent %d is %lld (x %s): extents are "
                           ">= 0, with at most one -1 to infer", i, (long long)e,
                           ad_tensor_describe(x, dx, sizeof dx));
        if (e != 0 && known > INT64_MAX / e)
            return ad_fail(AD_ERR_OVERFLOW, "reshape: the new shape's element count "
                           "overflows (x %s)", ad_tensor_describe(x, dx, sizeof dx));
        known *= e;
        shape[i] = e;
    }
    if (infer >= 0) {
        if (known == 0 || x->size % known)
            return ad_fail(AD_ERR_SHAPE, "reshape: x %s (%lld elements) cannot take a shape "
                           "whose other extents multiply to %lld", ad_tensor_describe(x, dx,
                           sizeof dx), (long long)x->size, (long long)known);
        shape[infer] = x->size / known;
        known = x->size;
    }
    if (known != x->size)
        return ad_fail(AD_ERR_SHAPE, "reshape: x %s has %lld elements, the new shape %lld",
                       ad_tensor_describe(x, dx, sizeof dx), (long long)x->size,
                       (long long)known);
    return AD_OK;
}

ad_status ad_op_reshape(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    const ad_reshape_attrs *at = ad_attrs(cx);
    int64_t shape[AD_MAX_RANK];
    if (!at)
        return ad_fail(AD_ERR_NULL, "reshape: no context (primals run through ad_call)");
    ad_status rc = resolve_shape(in[0], at, shape);
    return rc ? rc : ad_out_view(cx, 0, at->ndim, shape, out);
}

/* N x d1 x ... -> N x (d1 ...), as torch.flatten(x, 1). */
ad_status ad_op_flatten(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    const ad_tensor *x = in[0];
    int64_t n = x->shape[0];
    return ad_out_view(cx, 0, 2, (int64_t[]){n, n ? x->size / n : 0}, out);
}

/* dX = dY's elements under x's shape (the size is the same). */
static ad_status view_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                               const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)in, (void)y;
    if (!din[0]) /* x's cotangent is unwanted (its producer ignores dy: DFA) */
        return AD_OK;
    AD_DISPATCH_FLOAT(dy->dtype, T, {
        const T *g = dy->data;
        T *d = din[0]->data;
        AD_PUT_EACH(d, dy->size, beta[0], i, g[i]);
    });
    return AD_OK;
}

static const ad_rule rule_reshape = {
    .name = "reshape",
    .pullback = view_pullback,
    .n_inputs = 1,
    .unread = AD_INPUT(0) | AD_OUTPUT,
    .attrs_size = sizeof(ad_reshape_attrs),
};

static const ad_rule rule_flatten = {
    .name = "flatten",
    .pullback = view_pullback,
    .n_inputs = 1,
    .inputs = {{0, AD_RANK(2) | AD_RANK(3) | AD_RANK(4)}},
    .unread = AD_INPUT(0) | AD_OUTPUT,
};

ad_var ad_reshape(ad_tape *t, ad_var x, int ndim, const int64_t *shape)
{
    ad_reshape_attrs at = {.ndim = ndim};
    for (int i = 0; shape && i < ndim && i < AD_MAX_RANK; i++)
        at.shape[i] = shape[i];
    /* No shape for a positive rank: NULL attributes, which ad_call refuses by name. */
    return ad_call_as(t, ad_op_reshape, "ad_reshape", (const ad_var[]){x}, 1,
                      ndim > 0 && !shape ? NULL : &at, sizeof at);
}

ad_var ad_flatten(ad_tape *t, ad_var x)
{
    return ad_call_as(t, ad_op_flatten, "ad_flatten", (const ad_var[]){x}, 1, NULL, 0);
}

ADI_RULE_FAMILY(adi_family_shape, "shape",
                ADI_SEED(ad_op_reshape, rule_reshape),
                ADI_SEED(ad_op_flatten, rule_flatten));
