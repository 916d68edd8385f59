/*
** optim_state.c: reading and restoring an optimiser's configuration, state buffers and
** step counts, as checkpoints do. Parameters added to the set since the last step are
** valid indices: their state is made on demand, zeroed as a step would make it.
*/
#include "optim_internal.h"

const ad_params *ad_optim_params(const ad_optim *o)
{
    return o ? o->ps : NULL;
}

ad_status ad_optim_get_config(const ad_optim *o, ad_optim_config *out)
{
    if (!o || !out)
        return ad_fail(AD_ERR_NULL, "ad_optim_get_config: %s is NULL",
                       o ? "out" : "optimiser");
    *out = o->cfg;
    return AD_OK;
}

int ad_optim_state_count(const ad_optim *o)
{
    return o ? adi_optim_buffers(&o->cfg) : -1;
}

/* Checks index against the parameter set (not o->n: parameters added since the last
** step are valid and get their state on demand). */
static ad_status check_index(const ad_optim *o, int index, const char *what)
{
    if (!o)
        return ad_fail(AD_ERR_NULL, "%s: optimiser is NULL", what);
    if (index < 0 || index >= ad_params_count(o->ps))
        return ad_fail(AD_ERR_INVALID, "%s: parameter index %d is outside 0..%d", what,
                       index, ad_params_count(o->ps) - 1);
    return AD_OK;
}

ad_status ad_optim_state(ad_optim *o, int index, int k, ad_tensor *view)
{
    ad_status rc = check_index(o, index, "ad_optim_state");
    if (rc)
        return rc;
    if (!view)
        return ad_fail(AD_ERR_NULL, "ad_optim_state: view is NULL");
    int count = adi_optim_buffers(&o->cfg);
    if (k < 0 || k >= count)
        return ad_fail(AD_ERR_INVALID, "ad_optim_state: buffer %d is outside 0..%d", k,
                       count - 1);
    rc = adi_optim_ensure_state(o, "ad_optim_state");
    if (rc)
        return rc;
    const ad_tensor *p = ad_params_at(o->ps, index);
    adi_tensor_describe_into(view, p->dtype, p->ndim, p->shape, p->size,
                             o->slots[index].b[k]);
    return AD_OK;
}

ad_status ad_optim_get_steps(const ad_optim *o, int index, int64_t *steps)
{
    ad_status rc = check_index(o, index, "ad_optim_get_steps");
    if (rc)
        return rc;
    if (!steps)
        return ad_fail(AD_ERR_NULL, "ad_optim_get_steps: steps is NULL");
    *steps = index < o->n ? o->slots[index].steps : 0;
    return AD_OK;
}

ad_status ad_optim_set_steps(ad_optim *o, int index, int64_t steps)
{
    ad_status rc = check_index(o, index, "ad_optim_set_steps");
    if (rc)
        return rc;
    if (steps < 0)
        return ad_fail(AD_ERR_INVALID, "ad_optim_set_steps: steps = %lld is negative",
                       (long long)steps);
    rc = adi_optim_ensure_state(o, "ad_optim_set_steps");
    if (rc)
        return rc;
    o->slots[index].steps = steps;
    return AD_OK;
}
