/*
** base.h (internal): allocation through the hooks, error setting, size arithmetic.
** Shared by every part of the library; never installed.
*/
#ifndef AD_BASE_H
#define AD_BASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "ad_tensor.h"

/* Heap traffic, always through the user's hooks (ad_set_allocator). */
void *ad_malloc(size_t size);
void *adi_calloc(size_t count, size_t size); /* zeroed; NULL on overflow */
void *ad_realloc(void *ptr, size_t size);
void ad_free(void *ptr);

/* a * b into *out; false (and *out untouched) when it overflows size_t. */
static inline bool adi_size_mul(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return false;
    *out = a * b;
    return true;
}

/* a + b into *out; false when it overflows size_t. */
static inline bool adi_size_add(size_t a, size_t b, size_t *out)
{
    if (b > SIZE_MAX - a)
        return false;
    *out = a + b;
    return true;
}

/*
** Validates a dtype and shape and computes the element count and byte size.
** Errors: AD_ERR_RANK, AD_ERR_NULL (shape NULL with ndim > 0), AD_ERR_INVALID
** (negative extent, unknown dtype), AD_ERR_OVERFLOW (count or bytes beyond
** PTRDIFF_MAX). `what` names the caller in the message.
*/
ad_status adi_shape_check(const char *what, ad_dtype dtype, int ndim, const int64_t *shape,
                         int64_t *count, size_t *bytes);

/* Fills a descriptor (no checks: call adi_shape_check first). */
void adi_tensor_describe_into(ad_tensor *t, ad_dtype dtype, int ndim, const int64_t *shape,
                             int64_t count, void *data);

/* Same dtype and shape. */
bool adi_same_shape(const ad_tensor *a, const ad_tensor *b);

/* splitmix64 (Steele, Lea and Flood 2014): a small seeded generator whose state is a
** value the caller owns; used by the checker for random cotangents and directions. */
static inline uint64_t adi_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static inline double adi_uniform_pm1(uint64_t *state)
{
    return (double)(adi_splitmix64(state) >> 11) * 0x1.0p-52 - 1.0;
}

#endif /* AD_BASE_H */
