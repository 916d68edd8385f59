/*
** dfa.c: direct feedback alignment as two rules on the tape (see ad_feedback.h).
** The output rule captures e during the sweep; each hidden rule, swept later because
** it was recorded earlier, reads e through the caller's ad_dfa and sends e B_l' down.
*/
#include <string.h>

#include "ad.h"
#include "ad_feedback.h"
#include "../rules/builtin.h"
#include "feedback_internal.h"

/* Required by both rules: recording refuses a call without them, so only a primal
** called by hand, without a context, finds none; the ad_dfa in them may still be NULL. */
typedef struct dfa_attrs {
    ad_dfa *dfa;
} dfa_attrs;

static ad_dfa *attrs_dfa(const ad_ctx *cx)
{
    const dfa_attrs *a = ad_attrs(cx);
    return a ? a->dfa : NULL;
}

ad_status adi_identity_forward(ad_ctx *cx, const ad_tensor *x, ad_tensor **out)
{
    ad_status rc = ad_out(cx, x->dtype, x->ndim, x->shape, out);
    if (rc == AD_OK && x->size > 0)
        memcpy((*out)->data, x->data, (size_t)x->size * ad_dtype_size(x->dtype));
    return rc;
}

/* Identity forward; saves a buffer for e. Recording clears e from any earlier sweep. */
ad_status ad_op_dfa_output(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    ad_dfa *dfa = attrs_dfa(cx);
    ad_tensor *e;
    if (!dfa)
        return ad_fail(AD_ERR_NULL, "dfa_output: no ad_dfa given");
    dfa->error_ = NULL;
    ad_status rc = adi_identity_forward(cx, in[0], out);
    if (rc == AD_OK && ad_ctx_saving(cx))
        rc = ad_save(cx, in[0]->dtype, in[0]->ndim, in[0]->shape, &e);
    return rc;
}

/* din[0] = dy (beta 0) or += dy (beta 1): the identity's pullback. */
static void pass_through(const ad_tensor *dy, ad_tensor *din, float beta)
{
    if (!din)
        return;
    if (beta == 0.0f) {
        memcpy(din->data, dy->data, (size_t)dy->size * ad_dtype_size(dy->dtype));
        return;
    }
    for (int64_t i = 0; i < dy->size; i++) {
        if (dy->dtype == AD_F32)
            ((float *)din->data)[i] += ((const float *)dy->data)[i];
        else
            ((double *)din->data)[i] += ((const double *)dy->data)[i];
    }
}

/* y = x:  dx = dy, and e = dy is kept for the hidden layers. The saved buffer is this
** node's own arena memory, written here once per sweep. */
static ad_status dfa_output_pullback(ad_ctx *cx, const ad_tensor *dy,
                                     const ad_tensor *const in[], const ad_tensor *y,
                                     ad_tensor *const din[], const float beta[])
{
    (void)in, (void)y;
    ad_dfa *dfa = attrs_dfa(cx);
    ad_tensor *e = (ad_tensor *)ad_saved(cx);
    if (e) {
        memcpy(e->data, dy->data, (size_t)dy->size * ad_dtype_size(dy->dtype));
        dfa->error_ = e;
    }
    pass_through(dy, din[0], beta[0]);
    return AD_OK;
}

static const ad_rule rule_dfa_output = {
    .name = "dfa output (captures e)", .pullback = dfa_output_pullback, .n_inputs = 1,
    .unread = AD_INPUT(0) | AD_OUTPUT, /* e is its own saved copy */
    .attrs_size = sizeof(dfa_attrs)};

/* Identity forward. Recording clears e too: an e left by a sweep of another (perhaps
** freed) tape must never reach this layer's pullback. */
ad_status ad_op_dfa_hidden(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    const ad_tensor *h = in[0], *b = in[1];
    char dh[64], db[64];
    ad_dfa *dfa = attrs_dfa(cx);
    if (!dfa)
        return ad_fail(AD_ERR_NULL, "dfa_hidden: no ad_dfa given");
    dfa->error_ = NULL;
    if (h->ndim != 2 || b->shape[0] != h->shape[1])
        return ad_fail(AD_ERR_SHAPE, "dfa_hidden: B %s must be (units of h) x outputs for "
                       "h %s", ad_tensor_describe(b, db, sizeof db),
                       ad_tensor_describe(h, dh, sizeof dh));
    return adi_identity_forward(cx, h, out);
}

/* DFA:  dh = e B'  (dy, the cotangent from above, is ignored; backprop: dh = dy). */
static ad_status dfa_hidden_pullback(ad_ctx *cx, const ad_tensor *dy,
                                     const ad_tensor *const in[], const ad_tensor *y,
                                     ad_tensor *const din[], const float beta[])
{
    (void)dy, (void)y;
    const ad_dfa *dfa = attrs_dfa(cx);
    if (!din[0])
        return AD_OK;
    if (!dfa->error_)
        return ad_fail(AD_ERR_INVALID, "dfa_hidden: no output error e in this sweep (is "
                       "there an ad_dfa_output with the same ad_dfa after it?)");
    return ad_gemm_tensors(dfa->error_, 0, in[1], 1, 1.0, beta[0], din[0]);
}

/* The identity's true pullback, for the reference sweep. */
ad_status adi_identity_reference(ad_ctx *cx, const ad_tensor *dy,
                                 const ad_tensor *const in[], const ad_tensor *y,
                                 ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)in, (void)y;
    pass_through(dy, din[0], beta[0]);
    return AD_OK;
}

/* For ad_rule_check alone: a buffer shaped like e (h's rows x B's columns), published
** through the ad_dfa as an output rule's pullback would, and taken back afterwards. */
static ad_status dfa_hidden_signal(ad_ctx *cx, const ad_tensor *const in[],
                                   ad_tensor **signal)
{
    ad_dfa *dfa = attrs_dfa(cx);
    if (!dfa)
        return ad_fail(AD_ERR_NULL, "dfa_hidden: no ad_dfa given");
    if (*signal) {
        if (dfa->error_ == *signal)
            dfa->error_ = NULL;
        return AD_OK;
    }
    const int64_t shape[2] = {in[0]->shape[0], in[1]->shape[1]};
    ad_status rc = ad_scratch(cx, in[0]->dtype, 2, shape, signal);
    if (rc == AD_OK)
        dfa->error_ = *signal;
    return rc;
}

static const ad_rule rule_dfa_hidden = {
    .name = "dfa hidden (e B')",
    .pullback = dfa_hidden_pullback,
    .reference = adi_identity_reference,
    .n_inputs = 2,
    .inputs = {{0, AD_RANK(2)}, {0, AD_RANK(2)}},
    .nondiff = AD_INPUT(1),
    .not_gradient = AD_INPUT(0),
    .unread = AD_INPUT(0) | AD_OUTPUT, /* reads e and B */
    .flags = AD_RULE_IGNORES_DY,
    .attrs_size = sizeof(dfa_attrs),
    .signal = dfa_hidden_signal,
};

ad_var ad_dfa_output(ad_tape *t, ad_dfa *dfa, ad_var y)
{
    dfa_attrs a = {dfa};
    return ad_call_as(t, ad_op_dfa_output, "ad_dfa_output", (const ad_var[]){y}, 1, &a,
                      sizeof a);
}

ad_var ad_dfa_hidden(ad_tape *t, ad_dfa *dfa, ad_var h, ad_var b)
{
    dfa_attrs a = {dfa};
    return ad_call_as(t, ad_op_dfa_hidden, "ad_dfa_hidden", (const ad_var[]){h, b}, 2, &a,
                      sizeof a);
}

ADI_RULE_FAMILY(adi_family_dfa, "dfa",
                ADI_SEED(ad_op_dfa_output, rule_dfa_output),
                ADI_SEED(ad_op_dfa_hidden, rule_dfa_hidden));
