/*
** dfa_conv.c: direct feedback alignment into a conv layer's input, in BioTorch's form
** (ad_feedback.h): dx = conv_transpose(E, B), E the output error e broadcast over the
** layer's output grid. The transposed convolution is conv.c's own (adi_conv_pullback
** asked for dX alone, with B as the tensor dX goes through), so this file checks the
** shapes, builds E in the tape's arena and hands it over: no second transposed
** convolution to keep in step with conv.c's backends.
*/
#include <limits.h>

#include "../ops/ops_internal.h"
#include "ad_feedback.h"
#include "feedback_internal.h"

#define OP "dfa_conv_hidden"

/* conv.c reads ad_attrs as an ad_conv2d_attrs: ours has one as its first member, so a
** pointer to the whole struct is a pointer to it (C11 6.7.2.1). */
static const ad_dfa_conv_attrs *attrs_of(const ad_ctx *cx)
{
    return ad_attrs(cx);
}

static ad_status check_attrs(const ad_conv2d_attrs *at)
{
    if (at->stride_h < 1 || at->stride_w < 1 || at->dilation_h < 1 || at->dilation_w < 1 ||
        at->pad_h < 0 || at->pad_w < 0 || at->groups < 1)
        return ad_fail(AD_ERR_INVALID, OP ": attributes stride %dx%d, pad %dx%d, dilation "
                       "%dx%d, groups %d: strides, dilations and groups must be >= 1, pads "
                       ">= 0 (start from AD_CONV2D_ATTRS_DEFAULT)", at->stride_h,
                       at->stride_w, at->pad_h, at->pad_w, at->dilation_h, at->dilation_w,
                       at->groups);
    return AD_OK;
}

/* One extent of the grid: (in + 2 pad - dil (k - 1) - 1) / stride + 1, or AD_ERR_SHAPE
** when B's dilated kernel does not fit x padded (an extent below 1). */
static ad_status grid_extent(const ad_tensor *x, const ad_tensor *b, int axis, int pad,
                             int dil, int stride, int64_t *out)
{
    char dx[64], db[64];
    int64_t in = x->shape[2 + axis], k = b->shape[2 + axis];
    if (k == 0 || k - 1 > (INT64_MAX - 1) / dil || in > INT64_MAX / 2 - pad)
        return ad_fail(k ? AD_ERR_OVERFLOW : AD_ERR_SHAPE, OP ": B %s has an empty or "
                       "oversized kernel for x %s", ad_tensor_describe(b, db, sizeof db),
                       ad_tensor_describe(x, dx, sizeof dx));
    int64_t span = dil * (k - 1) + 1, room = in + 2 * (int64_t)pad - span;
    if (room < 0)
        return ad_fail(AD_ERR_SHAPE, OP ": B %s's kernel %s %lld (dilated to %lld) is "
                       "larger than x %s padded by %d", ad_tensor_describe(b, db, sizeof db),
                       axis ? "width" : "height", (long long)k, (long long)span,
                       ad_tensor_describe(x, dx, sizeof dx), pad);
    *out = room / stride + 1;
    return AD_OK;
}

/* The Ho x Wo grid of conv(x, B) under the attributes, after conv2d's own checks of x
** and B (so a layer that would refuse this x refuses it here too, at record time). */
static ad_status output_grid(const ad_conv2d_attrs *at, const ad_tensor *x,
                             const ad_tensor *b, int64_t *ho, int64_t *wo)
{
    char dx[64], db[64];
    ad_status rc = check_attrs(at);
    if (rc)
        return rc;
    if (x->ndim != 4 || b->ndim != 4)
        return ad_fail(AD_ERR_RANK, OP ": x %s and B %s must be rank 4",
                       ad_tensor_describe(x, dx, sizeof dx),
                       ad_tensor_describe(b, db, sizeof db));
    if (b->shape[1] > INT64_MAX / at->groups || b->shape[1] * at->groups != x->shape[1] ||
        b->shape[0] % at->groups)
        return ad_fail(AD_ERR_SHAPE, OP ": B %s (outputs x Cin/groups x kh x kw) with "
                       "groups %d does not fit x %s (%lld channels; outputs must divide "
                       "by groups)", ad_tensor_describe(b, db, sizeof db), at->groups,
                       ad_tensor_describe(x, dx, sizeof dx), (long long)x->shape[1]);
    if ((rc = grid_extent(x, b, 0, at->pad_h, at->dilation_h, at->stride_h, ho)))
        return rc;
    return grid_extent(x, b, 1, at->pad_w, at->dilation_w, at->stride_w, wo);
}

/* Identity forward on x after the shape checks. Recording clears e, as dense DFA's
** hidden rule does: an e from another tape's sweep must never reach this pullback. */
ad_status ad_op_dfa_conv_hidden(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    const ad_dfa_conv_attrs *a = attrs_of(cx);
    int64_t ho, wo;
    if (!a || !a->dfa)
        return ad_fail(AD_ERR_NULL, OP ": no ad_dfa given");
    a->dfa->error_ = NULL;
    ad_status rc = output_grid(&a->conv, in[0], in[1], &ho, &wo);
    return rc ? rc : adi_identity_forward(cx, in[0], out);
}

/* e must be N x outputs of B, in x's dtype. */
static ad_status check_error(const ad_tensor *e, const ad_tensor *x, const ad_tensor *b)
{
    char de[64], dx[64], db[64];
    if (e->ndim != 2 || e->shape[0] != x->shape[0] || e->shape[1] != b->shape[0])
        return ad_fail(AD_ERR_SHAPE, OP ": output error e %s must be N x outputs for x %s "
                       "and B %s", ad_tensor_describe(e, de, sizeof de),
                       ad_tensor_describe(x, dx, sizeof dx),
                       ad_tensor_describe(b, db, sizeof db));
    if (e->dtype != x->dtype)
        return ad_fail(AD_ERR_DTYPE, OP ": output error e %s is not of x %s's dtype",
                       ad_tensor_describe(e, de, sizeof de),
                       ad_tensor_describe(x, dx, sizeof dx));
    return AD_OK;
}

/* big[n,k,i,j] = e[n,k] for every position (i, j) of the P = Ho*Wo grid. */
static void broadcast_error(const ad_tensor *e, ad_tensor *big, int64_t P)
{
    int64_t rows = e->size;
    AD_DISPATCH_FLOAT(e->dtype, T, {
        const T *src = e->data;
        T *dst = big->data;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t q = 0; q < P; q++)
                dst[r * P + q] = src[r];
    });
}

/* DFA, BioTorch's conv form:  dx = conv_transpose(E, B), E = e over the grid
** (dy, the cotangent from above, is ignored; backprop: dx = dy). */
static ad_status dfa_conv_hidden_pullback(ad_ctx *cx, const ad_tensor *dy,
                                          const ad_tensor *const in[], const ad_tensor *y,
                                          ad_tensor *const din[], const float beta[])
{
    (void)dy, (void)y;
    const ad_dfa_conv_attrs *a = attrs_of(cx);
    const ad_tensor *x = in[0], *b = in[1], *e = a->dfa->error_;
    int64_t ho, wo;
    ad_tensor *big;
    if (!din[0])
        return AD_OK;
    if (!e)
        return ad_fail(AD_ERR_INVALID, OP ": no output error e in this sweep (is there an "
                       "ad_dfa_output with the same ad_dfa after it?)");
    ad_status rc = output_grid(&a->conv, x, b, &ho, &wo);
    if (rc || (rc = check_error(e, x, b)) ||
        (rc = ad_scratch(cx, x->dtype, 4, (int64_t[]){x->shape[0], b->shape[0], ho, wo},
                         &big)))
        return rc;
    broadcast_error(e, big, ho * wo);
    return adi_conv_pullback(OP, cx, big, x, b, NULL, b,
                             (ad_tensor *const[]){din[0], NULL, NULL},
                             (const float[]){beta[0], 0.0f, 0.0f});
}

/* For ad_rule_check alone: e (N x outputs) in scratch, published through the ad_dfa as
** an output rule's pullback would, and taken back when the check ends. */
static ad_status dfa_conv_hidden_signal(ad_ctx *cx, const ad_tensor *const in[],
                                        ad_tensor **signal)
{
    const ad_dfa_conv_attrs *a = attrs_of(cx);
    if (!a || !a->dfa)
        return ad_fail(AD_ERR_NULL, OP ": no ad_dfa given");
    if (*signal) {
        if (a->dfa->error_ == *signal)
            a->dfa->error_ = NULL;
        return AD_OK;
    }
    ad_status rc = ad_scratch(cx, in[0]->dtype, 2,
                              (int64_t[]){in[0]->shape[0], in[1]->shape[0]}, signal);
    if (rc == AD_OK)
        a->dfa->error_ = *signal;
    return rc;
}

static const ad_rule rule_dfa_conv_hidden = {
    .name = "dfa conv hidden (conv_transpose(e, B))",
    .pullback = dfa_conv_hidden_pullback,
    .reference = adi_identity_reference,
    .n_inputs = 2,
    .inputs = {{0, AD_RANK(4)}, {0, AD_RANK(4)}},
    .nondiff = AD_INPUT(1),
    .not_gradient = AD_INPUT(0),
    .unread = AD_INPUT(0) | AD_OUTPUT, /* x only for its shape: reads e and B */
    .flags = AD_RULE_IGNORES_DY,
    .attrs_size = sizeof(ad_dfa_conv_attrs),
    .signal = dfa_conv_hidden_signal,
};

/* The attributes are zeroed first: their padding bytes are copied onto the tape too. */
ad_var ad_dfa_conv_hidden(ad_tape *t, ad_dfa *dfa, ad_var x, ad_var b,
                          const ad_conv2d_attrs *attrs)
{
    ad_dfa_conv_attrs a;
    memset(&a, 0, sizeof a);
    a.conv = attrs ? *attrs : AD_CONV2D_ATTRS_DEFAULT;
    a.dfa = dfa;
    return ad_call_as(t, ad_op_dfa_conv_hidden, "ad_dfa_conv_hidden",
                      (const ad_var[]){x, b}, 2, &a, sizeof a);
}

ADI_RULE_FAMILY(adi_family_dfa_conv, "dfa_conv",
                ADI_SEED(ad_op_dfa_conv_hidden, rule_dfa_conv_hidden));
