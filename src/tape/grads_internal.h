/*
** grads_internal.h (internal): the gradient set's arrays, filled by the sweep.
*/
#ifndef AD_GRADS_INTERNAL_H
#define AD_GRADS_INTERNAL_H

#include <stdbool.h>
#include "ad_grad.h"

struct ad_grads {
    const ad_params *ps;
    int n;                /* buffers made so far (<= parameters in ps) */
    ad_tensor **grad;     /* by parameter index, owned */
    bool *present;        /* written by the last sweep */
    void **ready_node;    /* sweep scratch: first node (forward order) using the param */
    int32_t *ready_next;  /* sweep scratch: list of params ready after one node */
    ad_grad_ready_fn on_ready;
    void *on_ready_user;
};

/* Makes buffers for parameters added since the last call. AD_ERR_NOMEM on failure,
** leaving gs as it was. */
ad_status adi_grads_sync(ad_grads *gs);

#endif /* AD_GRADS_INTERNAL_H */
