/*
** count_alloc.c: the counting allocator of count_alloc.h.
*/
#include "count_alloc.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

static _Atomic uint64_t alloc_calls;
static _Atomic int64_t outstanding;
static _Atomic uint64_t fail_at;

static bool should_fail(void)
{
    uint64_t n = atomic_fetch_add(&alloc_calls, 1) + 1;
    uint64_t f = atomic_load(&fail_at);
    return f != 0 && n == f;
}

static void *count_malloc(size_t size, void *user)
{
    (void)user;
    if (should_fail())
        return NULL;
    void *p = malloc(size);
    if (p)
        atomic_fetch_add(&outstanding, 1);
    return p;
}

static void count_free(void *ptr, void *user)
{
    (void)user;
    if (ptr)
        atomic_fetch_sub(&outstanding, 1);
    free(ptr);
}

ad_status count_alloc_install(void)
{
    atomic_store(&alloc_calls, 0);
    atomic_store(&fail_at, 0);
    ad_allocator a = {count_malloc, count_free, NULL};
    return ad_set_allocator(&a);
}

void count_alloc_uninstall(void)
{
    ad_set_allocator(NULL);
}

uint64_t count_alloc_calls(void)
{
    return atomic_load(&alloc_calls);
}

int64_t count_alloc_outstanding(void)
{
    return atomic_load(&outstanding);
}

void count_alloc_fail_at(uint64_t n)
{
    atomic_store(&alloc_calls, 0);
    atomic_store(&fail_at, n);
}
