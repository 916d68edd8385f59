/*
** alloc.c: the allocation hooks every heap allocation of the library goes through,
** so tests can count allocations and fail the N-th one.
*/
#include <stdlib.h>
#include <string.h>

#include "base.h"

static void *default_malloc(size_t size, void *user)
{
    (void)user;
    return malloc(size);
}

static void *default_realloc(void *ptr, size_t size, void *user)
{
    (void)user;
    return realloc(ptr, size);
}

static void default_free(void *ptr, void *user)
{
    (void)user;
    free(ptr);
}

static ad_allocator hooks = {default_malloc, default_realloc, default_free, NULL};

ad_status ad_set_allocator(const ad_allocator *new_hooks)
{
    if (!new_hooks) {
        hooks = (ad_allocator){default_malloc, default_realloc, default_free, NULL};
        return AD_OK;
    }
    if (!new_hooks->malloc_fn || !new_hooks->realloc_fn || !new_hooks->free_fn)
        return ad_fail(AD_ERR_INVALID, "ad_set_allocator: all three hooks are required");
    hooks = *new_hooks;
    return AD_OK;
}

void *ad_malloc(size_t size)
{
    return hooks.malloc_fn(size ? size : 1, hooks.user);
}

void *adi_calloc(size_t count, size_t size)
{
    size_t bytes;
    if (!adi_size_mul(count, size, &bytes))
        return NULL;
    void *p = ad_malloc(bytes);
    if (p)
        memset(p, 0, bytes);
    return p;
}

void *ad_realloc(void *ptr, size_t size)
{
    return hooks.realloc_fn(ptr, size ? size : 1, hooks.user);
}

void ad_free(void *ptr)
{
    if (ptr)
        hooks.free_fn(ptr, hooks.user);
}
