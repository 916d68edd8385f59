/*
** feedback_internal.h (internal): what the dense (feedback.c) and conv
** (conv_feedback.c) sign-feedback rules share, and what dense DFA (dfa.c) shares with
** DFA into conv layers (dfa_conv.c).
*/
#ifndef AD_FEEDBACK_INTERNAL_H
#define AD_FEEDBACK_INTERNAL_H

#include "ad.h"

/* F = |M| .* sign(W) (m NULL: sign(W)) in arena scratch of w's shape; sign(0) = 0, and
** a NaN's too. */
ad_status adi_sign_feedback(ad_ctx *cx, const ad_tensor *w, const ad_tensor *m,
                            ad_tensor **f);

/* conv_feedback.c: conv2d's backprop pullback as the reference of the conv sign
** rules, inputs (x, w[, M]) and (x, w, b[, M]); usf_scaled.c's conv rules share them. */
ad_status adi_conv_sign_reference(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                                  const ad_tensor *y, ad_tensor *const din[],
                                  const float beta[]);
ad_status adi_conv_bias_sign_reference(ad_ctx *cx, const ad_tensor *dy,
                                       const ad_tensor *const in[], const ad_tensor *y,
                                       ad_tensor *const din[], const float beta[]);

/* dfa.c: y = x into *out (ad_out), and its pullback dx = dy (beta 0) or += dy, the
** true gradient every DFA hidden rule has as its reference. */
ad_status adi_identity_forward(ad_ctx *cx, const ad_tensor *x, ad_tensor **out);
ad_status adi_identity_reference(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                                 const ad_tensor *y, ad_tensor *const din[],
                                 const float beta[]);

#endif /* AD_FEEDBACK_INTERNAL_H */
