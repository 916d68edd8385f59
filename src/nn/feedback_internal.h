/*
** feedback_internal.h (internal): what the dense (feedback.c) and conv
** (conv_feedback.c) sign-feedback rules share.
*/
#ifndef AD_FEEDBACK_INTERNAL_H
#define AD_FEEDBACK_INTERNAL_H

#include "ad.h"

/* F = |M| .* sign(W) (m NULL: sign(W)) in arena scratch of w's shape; sign(0) = 0, and
** a NaN's too. */
ad_status adi_sign_feedback(ad_ctx *cx, const ad_tensor *w, const ad_tensor *m,
                            ad_tensor **f);

#endif /* AD_FEEDBACK_INTERNAL_H */
