/*
** clamp_grad.c: gradient clamping (see ad_feedback.h), BioTorch's option of clamping
** each layer's input gradient: the identity forward, a pullback that clamps dy.
*/
#include <math.h>

#include "ad.h"
#include "ad_feedback.h"
#include "../rules/builtin.h"
#include "feedback_internal.h"

/* Identity forward; the bounds are checked here, so a bad pair fails where it is
** recorded rather than in the sweep. */
ad_status ad_op_clamp_grad(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    const ad_clamp_grad_attrs *a = cx ? ad_attrs(cx) : NULL;
    if (!a)
        return ad_fail(AD_ERR_NULL, "clamp_grad: no context (primals run through ad_call)");
    if (isnan(a->lo) || isnan(a->hi) || a->lo > a->hi)
        return ad_fail(AD_ERR_INVALID, "clamp_grad: bounds [%g, %g] are not lo <= hi",
                       a->lo, a->hi);
    return adi_identity_forward(cx, in[0], out);
}

/* v < lo ? lo : v > hi ? hi : v, so NaN passes (both comparisons are false). */
#define DEFINE_CLAMP(T, NAME)                                                            \
    static void NAME(const T *restrict dy, T *restrict dx, int64_t n, T lo, T hi,        \
                     int accumulate)                                                     \
    {                                                                                    \
        for (int64_t k = 0; k < n; k++) {                                                \
            T v = dy[k] < lo ? lo : dy[k] > hi ? hi : dy[k];                             \
            dx[k] = accumulate ? dx[k] + v : v;                                          \
        }                                                                                \
    }
DEFINE_CLAMP(float, clamp_f32)
DEFINE_CLAMP(double, clamp_f64)

/* y = x:  dx = clamp(dy, lo, hi)  (backprop: dx = dy, the reference). */
static ad_status clamp_grad_pullback(ad_ctx *cx, const ad_tensor *dy,
                                     const ad_tensor *const in[], const ad_tensor *y,
                                     ad_tensor *const din[], const float beta[])
{
    (void)in, (void)y;
    const ad_clamp_grad_attrs *a = ad_attrs(cx);
    if (!din[0])
        return AD_OK;
    int acc = beta[0] != 0.0f;
    if (dy->dtype == AD_F32)
        clamp_f32(dy->data, din[0]->data, dy->size, (float)a->lo, (float)a->hi, acc);
    else
        clamp_f64(dy->data, din[0]->data, dy->size, a->lo, a->hi, acc);
    return AD_OK;
}

static const ad_rule rule_clamp_grad = {
    .name = "clamp_grad (dy clamped)",
    .pullback = clamp_grad_pullback,
    .reference = adi_identity_reference,
    .n_inputs = 1,
    .not_gradient = AD_INPUT(0),
    .unread = AD_INPUT(0) | AD_OUTPUT, /* reads dy alone */
    .attrs_size = sizeof(ad_clamp_grad_attrs),
    .attrs_default = &AD_CLAMP_GRAD_ATTRS_DEFAULT,
};

ad_var ad_clamp_grad(ad_tape *t, ad_var x, const ad_clamp_grad_attrs *attrs)
{
    return ad_call_as(t, ad_op_clamp_grad, "ad_clamp_grad", (const ad_var[]){x}, 1, attrs,
                      attrs ? sizeof *attrs : 0);
}

ADI_RULE_FAMILY(adi_family_clamp_grad, "clamp_grad",
                ADI_SEED(ad_op_clamp_grad, rule_clamp_grad));
