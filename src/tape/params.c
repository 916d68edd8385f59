/*
** params.c: parameter sets (identity-keyed, dense indices) and gradient sets.
**
** The identity lookup is a uthash table over the tensor pointer; the sweep does it
** once per leaf, and everything after that (gradient buffers, optimiser state) is an
** array indexed by the dense parameter index. A parameter may carry a name (a copy the
** set owns), which checkpoints use when the caller gives no array of names.
*/
#include <string.h>

#include "../base/base.h"
#include "grads_internal.h"

#define uthash_malloc(sz) ad_malloc(sz)
#define uthash_free(ptr, sz) ad_free(ptr)
#define HASH_NONFATAL_OOM 1
static _Thread_local bool params_oom; /* set by uthash when it cannot grow */
#define uthash_nonfatal_oom(elt) (params_oom = true)
#include <uthash.h>

typedef struct param_entry {
    const ad_tensor *key;
    int index;
    UT_hash_handle hh;
} param_entry;

struct ad_params {
    ad_tensor **tensors;
    char **names;         /* names[i] for tensors[i], NULL when it has none */
    param_entry *entries; /* one allocation, entries[i] for tensors[i] */
    param_entry *by_tensor;
    int n, cap;
};

ad_status ad_params_new(ad_params **out)
{
    if (!out)
        return ad_fail(AD_ERR_NULL, "ad_params_new: out is NULL");
    ad_params *ps = adi_calloc(1, sizeof *ps);
    if (!ps)
        return ad_fail(AD_ERR_NOMEM, "ad_params_new: out of memory");
    *out = ps;
    return AD_OK;
}

void ad_params_free(ad_params *ps)
{
    if (!ps)
        return;
    HASH_CLEAR(hh, ps->by_tensor);
    for (int i = 0; i < ps->n; i++)
        ad_free(ps->names[i]);
    ad_free(ps->names);
    ad_free(ps->tensors);
    ad_free(ps->entries);
    ad_free(ps);
}

/* Grows both arrays; the hash is rebuilt because its entries move. */
static ad_status grow(ad_params *ps)
{
    int cap = ps->cap ? ps->cap * 2 : 8;
    ad_tensor **tensors = adi_calloc((size_t)cap, sizeof *tensors);
    char **names = adi_calloc((size_t)cap, sizeof *names);
    param_entry *entries = adi_calloc((size_t)cap, sizeof *entries);
    param_entry *by_tensor = NULL;
    params_oom = false;
    for (int i = 0; tensors && names && entries && i < ps->n && !params_oom; i++) {
        tensors[i] = ps->tensors[i];
        names[i] = ps->names[i];
        entries[i] = (param_entry){.key = ps->tensors[i], .index = i};
        HASH_ADD(hh, by_tensor, key, sizeof(entries[i].key), &entries[i]);
    }
    if (!tensors || !names || !entries || params_oom) {
        HASH_CLEAR(hh, by_tensor);
        ad_free(tensors);
        ad_free(names);
        ad_free(entries);
        return ad_fail(AD_ERR_NOMEM, "ad_params_add: out of memory");
    }
    HASH_CLEAR(hh, ps->by_tensor);
    ad_free(ps->tensors);
    ad_free(ps->names);
    ad_free(ps->entries);
    ps->tensors = tensors;
    ps->names = names;
    ps->entries = entries;
    ps->by_tensor = by_tensor;
    ps->cap = cap;
    return AD_OK;
}

/* The index of the parameter called name, or -1. A linear scan: names are looked up
** only when added, and sets hold tens of tensors, not thousands. */
static int find_name(const ad_params *ps, const char *name)
{
    for (int i = 0; i < ps->n; i++)
        if (ps->names[i] && !strcmp(ps->names[i], name))
            return i;
    return -1;
}

/* Checks everything first, so a failure leaves the set as it was; the name is copied
** before the tensor goes in, so running out of memory cannot leave it half added. */
static ad_status add(const char *what, ad_params *ps, ad_tensor *t, const char *name,
                     int *index)
{
    if (t->dtype != AD_F32 && t->dtype != AD_F64)
        return ad_fail(AD_ERR_DTYPE, "%s: a parameter must be f32 or f64, not %s", what,
                       ad_dtype_name(t->dtype));
    int i = ad_params_index(ps, t), other = name ? find_name(ps, name) : -1;
    if (i >= 0 && name && ps->names[i] && strcmp(ps->names[i], name))
        return ad_fail(AD_ERR_INVALID, "%s: the tensor is already parameter %d, '%s', not "
                       "'%s'", what, i, ps->names[i], name);
    if (other >= 0 && other != i)
        return ad_fail(AD_ERR_DUPLICATE_NAME, "%s: parameter %d is already called '%s'",
                       what, other, name);
    char *copy = NULL;
    if (name && (i < 0 || !ps->names[i])) {
        size_t len = strlen(name);
        copy = ad_malloc(len + 1);
        if (!copy)
            return ad_fail(AD_ERR_NOMEM, "%s: out of memory for the name '%s'", what, name);
        memcpy(copy, name, len + 1);
    }
    if (i < 0) {
        ad_status rc = ps->n == ps->cap ? grow(ps) : AD_OK;
        if (rc) {
            ad_free(copy);
            return rc;
        }
        i = ps->n;
        ps->tensors[i] = t;
        ps->names[i] = NULL;
        ps->entries[i] = (param_entry){.key = t, .index = i};
        params_oom = false;
        HASH_ADD(hh, ps->by_tensor, key, sizeof(ps->entries[i].key), &ps->entries[i]);
        if (params_oom) {
            ad_free(copy);
            return ad_fail(AD_ERR_NOMEM, "%s: out of memory", what);
        }
        ps->n++;
    }
    if (copy)
        ps->names[i] = copy;
    if (index)
        *index = i;
    return AD_OK;
}

ad_status ad_params_add(ad_params *ps, ad_tensor *t, int *index)
{
    if (!ps || !t)
        return ad_fail(AD_ERR_NULL, "ad_params_add: %s is NULL", ps ? "tensor" : "set");
    return add("ad_params_add", ps, t, NULL, index);
}

ad_status ad_params_add_named(ad_params *ps, ad_tensor *t, const char *name, int *index)
{
    if (!ps || !t || !name)
        return ad_fail(AD_ERR_NULL, "ad_params_add_named: %s is NULL",
                       !ps ? "set" : !t ? "tensor" : "name");
    return add("ad_params_add_named", ps, t, name, index);
}

const char *ad_params_name(const ad_params *ps, int i)
{
    return ps && i >= 0 && i < ps->n ? ps->names[i] : NULL;
}

int ad_params_count(const ad_params *ps)
{
    return ps ? ps->n : 0;
}

int ad_params_index(const ad_params *ps, const ad_tensor *t)
{
    param_entry *e = NULL;
    if (!ps || !t)
        return -1;
    HASH_FIND(hh, ps->by_tensor, &t, sizeof(t), e);
    return e ? e->index : -1;
}

ad_tensor *ad_params_at(const ad_params *ps, int i)
{
    return ps && i >= 0 && i < ps->n ? ps->tensors[i] : NULL;
}

/* ---- gradient sets ---- */

void ad_grads_free(ad_grads *gs)
{
    if (!gs)
        return;
    for (int i = 0; i < gs->n; i++)
        ad_tensor_free(gs->grad[i]);
    ad_free(gs->grad);
    ad_free(gs->present);
    ad_free(gs->ready_node);
    ad_free(gs->ready_next);
    ad_free(gs);
}

/*
** Makes one buffer per parameter of the set. Called at creation and by each sweep;
** after the first it allocates only when parameters were added since.
*/
ad_status adi_grads_sync(ad_grads *gs)
{
    int n = ad_params_count(gs->ps);
    if (n <= gs->n)
        return AD_OK;
    ad_tensor **grad = adi_calloc((size_t)n, sizeof *grad);
    bool *present = adi_calloc((size_t)n, sizeof *present);
    void **ready_node = adi_calloc((size_t)n, sizeof *ready_node);
    int32_t *ready_next = adi_calloc((size_t)n, sizeof *ready_next);
    ad_status rc = grad && present && ready_node && ready_next ? AD_OK : AD_ERR_NOMEM;
    int made = gs->n;
    if (rc == AD_OK && gs->n > 0)
        memcpy(grad, gs->grad, (size_t)gs->n * sizeof *grad);
    for (; rc == AD_OK && made < n; made++) {
        const ad_tensor *p = ad_params_at(gs->ps, made);
        rc = ad_tensor_new(p->dtype, p->ndim, p->shape, &grad[made]);
    }
    if (rc) {
        for (int i = gs->n; grad && i < made; i++)
            ad_tensor_free(grad[i]);
        ad_free(grad);
        ad_free(present);
        ad_free(ready_node);
        ad_free(ready_next);
        return ad_fail(AD_ERR_NOMEM, "ad_grads: out of memory for %d gradients", n);
    }
    ad_free(gs->grad);
    ad_free(gs->present);
    ad_free(gs->ready_node);
    ad_free(gs->ready_next);
    gs->grad = grad;
    gs->present = present;
    gs->ready_node = ready_node;
    gs->ready_next = ready_next;
    gs->n = n;
    return AD_OK;
}

ad_status ad_grads_new(const ad_params *ps, ad_grads **out)
{
    if (!ps || !out)
        return ad_fail(AD_ERR_NULL, "ad_grads_new: NULL argument");
    ad_grads *gs = adi_calloc(1, sizeof *gs);
    if (!gs)
        return ad_fail(AD_ERR_NOMEM, "ad_grads_new: out of memory");
    gs->ps = ps;
    ad_status rc = adi_grads_sync(gs);
    if (rc) {
        ad_grads_free(gs);
        return rc;
    }
    *out = gs;
    return AD_OK;
}

const ad_params *ad_grads_params(const ad_grads *gs)
{
    return gs ? gs->ps : NULL;
}

const ad_tensor *ad_grads_at(const ad_grads *gs, int index)
{
    if (!gs || index < 0 || index >= gs->n || !gs->present[index])
        return NULL;
    return gs->grad[index];
}

const ad_tensor *ad_grads_get(const ad_grads *gs, const ad_tensor *param)
{
    return gs ? ad_grads_at(gs, ad_params_index(gs->ps, param)) : NULL;
}

void ad_grads_on_ready(ad_grads *gs, ad_grad_ready_fn fn, void *user)
{
    if (gs) {
        gs->on_ready = fn;
        gs->on_ready_user = user;
    }
}
