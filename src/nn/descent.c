/*
** descent.c: Descent(lr), p -= lr g for every parameter that got a gradient.
**
** Through ?axpy (p += (-lr) g): the update streams every parameter and gradient once,
** memory-bound on a large model, and OpenBLAS spreads a long vector over its threads
** where a loop of ours would keep one core busy while the others wait (W3 at 2
** threads). OpenBLAS's kernels may fuse the multiply and add (one rounding), so a
** caller who wants the same bits elsewhere -- an update fused into the sweep from the
** gradient-ready callback -- uses ?axpy too.
*/
#include "../ops/ops_internal.h"

ad_status ad_descent_step(const ad_params *ps, const ad_grads *gs, double lr)
{
    if (!ps || !gs)
        return ad_fail(AD_ERR_NULL, "ad_descent_step: NULL argument");
    if (ad_grads_params(gs) != ps)
        return ad_fail(AD_ERR_INVALID, "ad_descent_step: the gradient set was made for "
                       "another parameter set");
    for (int p = 0; p < ad_params_count(ps); p++) {
        const ad_tensor *g = ad_grads_at(gs, p);
        if (!g)
            continue;
        ad_tensor *w = ad_params_at(ps, p);
        adi_axpy(w->dtype, w->size, -lr, g->data, w->data);
        w->version++;
    }
    return AD_OK;
}
