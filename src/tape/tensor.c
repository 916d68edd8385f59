/*
** tensor.c: tensor descriptors, shape validation and the writes that bump versions.
*/
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../base/base.h"

size_t ad_dtype_size(ad_dtype dtype)
{
    switch (dtype) {
    case AD_F32: return sizeof(float);
    case AD_F64: return sizeof(double);
    case AD_I32: return sizeof(int32_t);
    }
    return 0;
}

const char *ad_dtype_name(ad_dtype dtype)
{
    switch (dtype) {
    case AD_F32: return "f32";
    case AD_F64: return "f64";
    case AD_I32: return "i32";
    }
    return "?";
}

/*
** The element count and byte size must both fit in ptrdiff_t so that pointer
** arithmetic over the data, and BLAS offsets computed from it, stay defined.
*/
ad_status adi_shape_check(const char *what, ad_dtype dtype, int ndim, const int64_t *shape,
                         int64_t *count, size_t *bytes)
{
    size_t esize = ad_dtype_size(dtype);
    if (esize == 0)
        return ad_fail(AD_ERR_INVALID, "%s: unknown dtype %d", what, (int)dtype);
    if (ndim < 0 || ndim > AD_MAX_RANK)
        return ad_fail(AD_ERR_RANK, "%s: rank %d is outside 0..%d", what, ndim,
                       AD_MAX_RANK);
    if (ndim > 0 && !shape)
        return ad_fail(AD_ERR_NULL, "%s: shape is NULL for rank %d", what, ndim);
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return ad_fail(AD_ERR_INVALID, "%s: extent %d is negative (%" PRId64 ")", what,
                           i, shape[i]);
        if ((uint64_t)shape[i] > SIZE_MAX || !adi_size_mul(n, (size_t)shape[i], &n))
            return ad_fail(AD_ERR_OVERFLOW, "%s: element count overflows", what);
    }
    size_t b;
    if (!adi_size_mul(n, esize, &b) || b > (size_t)PTRDIFF_MAX)
        return ad_fail(AD_ERR_OVERFLOW, "%s: %zu elements of %s overflow the address space",
                       what, n, ad_dtype_name(dtype));
    *count = (int64_t)n;
    *bytes = b;
    return AD_OK;
}

void adi_tensor_describe_into(ad_tensor *t, ad_dtype dtype, int ndim, const int64_t *shape,
                             int64_t count, void *data)
{
    memset(t, 0, sizeof *t);
    t->data = data;
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < AD_MAX_RANK; i++)
        t->shape[i] = i < ndim ? shape[i] : 1;
    t->size = count;
}

bool adi_same_shape(const ad_tensor *a, const ad_tensor *b)
{
    if (a->dtype != b->dtype || a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}

ad_status ad_tensor_init(ad_tensor *t, ad_dtype dtype, int ndim, const int64_t *shape,
                         void *data)
{
    int64_t count;
    size_t bytes;
    if (!t)
        return ad_fail(AD_ERR_NULL, "ad_tensor_init: tensor is NULL");
    ad_status rc = adi_shape_check("ad_tensor_init", dtype, ndim, shape, &count, &bytes);
    if (rc)
        return rc;
    if (!data && count > 0)
        return ad_fail(AD_ERR_NULL, "ad_tensor_init: data is NULL for %" PRId64 " elements",
                       count);
    adi_tensor_describe_into(t, dtype, ndim, shape, count, data);
    return AD_OK;
}

ad_status ad_tensor_new(ad_dtype dtype, int ndim, const int64_t *shape, ad_tensor **out)
{
    int64_t count;
    size_t bytes;
    if (!out)
        return ad_fail(AD_ERR_NULL, "ad_tensor_new: out is NULL");
    ad_status rc = adi_shape_check("ad_tensor_new", dtype, ndim, shape, &count, &bytes);
    if (rc)
        return rc;
    ad_tensor *t = ad_malloc(sizeof *t);
    void *data = adi_calloc(1, bytes);
    if (!t || !data) {
        ad_free(t);
        ad_free(data);
        return ad_fail(AD_ERR_NOMEM, "ad_tensor_new: out of memory for %zu bytes", bytes);
    }
    adi_tensor_describe_into(t, dtype, ndim, shape, count, data);
    t->owns_data_ = 1;
    *out = t;
    return AD_OK;
}

void ad_tensor_free(ad_tensor *t)
{
    if (!t)
        return;
    if (t->owns_data_)
        ad_free(t->data);
    ad_free(t);
}

void ad_tensor_touch(ad_tensor *t)
{
    if (t)
        t->version++;
}

ad_status ad_tensor_fill(ad_tensor *t, double value)
{
    if (!t)
        return ad_fail(AD_ERR_NULL, "ad_tensor_fill: tensor is NULL");
    /* Converting a value outside int32's range (or NaN) to int32 is undefined. */
    if (t->dtype == AD_I32 && !(value >= INT32_MIN && value <= INT32_MAX))
        return ad_fail(AD_ERR_INVALID, "ad_tensor_fill: %g does not fit an i32 tensor",
                       value);
    for (int64_t i = 0; i < t->size; i++) {
        switch (t->dtype) {
        case AD_F32: ((float *)t->data)[i] = (float)value; break;
        case AD_F64: ((double *)t->data)[i] = value; break;
        case AD_I32: ((int32_t *)t->data)[i] = (int32_t)value; break;
        }
    }
    t->version++;
    return AD_OK;
}

ad_status ad_tensor_copy_from(ad_tensor *dst, const ad_tensor *src)
{
    char a[64], b[64];
    if (!dst || !src)
        return ad_fail(AD_ERR_NULL, "ad_tensor_copy_from: NULL tensor");
    if (dst->dtype != src->dtype)
        return ad_fail(AD_ERR_DTYPE, "ad_tensor_copy_from: %s into %s",
                       ad_dtype_name(src->dtype), ad_dtype_name(dst->dtype));
    if (!adi_same_shape(dst, src))
        return ad_fail(AD_ERR_SHAPE, "ad_tensor_copy_from: %s into %s",
                       ad_tensor_describe(src, a, sizeof a),
                       ad_tensor_describe(dst, b, sizeof b));
    if (dst->data != src->data && src->size > 0)
        memcpy(dst->data, src->data, (size_t)src->size * ad_dtype_size(src->dtype));
    dst->version++;
    return AD_OK;
}

char *ad_tensor_describe(const ad_tensor *t, char *buf, size_t buf_size)
{
    if (!buf || buf_size == 0)
        return buf;
    if (!t) {
        snprintf(buf, buf_size, "(null)");
        return buf;
    }
    if (t->ndim == 0) {
        snprintf(buf, buf_size, "scalar %s", ad_dtype_name(t->dtype));
        return buf;
    }
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < t->ndim && used < buf_size; i++)
        used += (size_t)snprintf(buf + used, buf_size - used, "%s%" PRId64, i ? "x" : "",
                                 t->shape[i]);
    if (used < buf_size)
        snprintf(buf + used, buf_size - used, " %s", ad_dtype_name(t->dtype));
    return buf;
}

double ad_tensor_get(const ad_tensor *t, int64_t i)
{
    if (!t || !t->data)
        return NAN;
    switch (t->dtype) {
    case AD_F32: return ((const float *)t->data)[i];
    case AD_F64: return ((const double *)t->data)[i];
    case AD_I32: return ((const int32_t *)t->data)[i];
    }
    return 0.0;
}
