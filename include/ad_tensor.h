/*
** ad_tensor.h: dense row-major tensors of rank 0 to 4.
**
** A tensor is a readable descriptor over a block of elements. Callers may read every
** field and may write elements through `data`; after writing elements directly, call
** ad_tensor_touch so the version counter moves and a tape that recorded the old
** values refuses to compute a gradient from them (AD_ERR_STALE_INPUT). Every write
** through the API (ad_tensor_fill, ad_tensor_copy_from, optimiser steps) bumps the
** version itself. Do not write the other fields.
*/
#ifndef AD_TENSOR_H
#define AD_TENSOR_H

#include <stdint.h>
#include "ad_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define AD_MAX_RANK 4

typedef enum ad_dtype {
    AD_F32 = 1, /* float: training */
    AD_F64 = 2, /* double: checking */
    AD_I32 = 3  /* int32_t: constant, non-differentiable leaves such as class labels */
} ad_dtype;

typedef struct ad_tensor {
    void *data;                   /* size elements of dtype; NULL only when size is 0 */
    ad_dtype dtype;
    int ndim;                     /* 0 (a scalar) to AD_MAX_RANK */
    int64_t shape[AD_MAX_RANK];   /* shape[ndim..] are 1 */
    int64_t size;                 /* product of shape[0..ndim) */
    uint64_t version;             /* bumped by every write through the API */
    unsigned owns_data_;          /* private: nonzero when ad_tensor_free frees data */
} ad_tensor;

/* Bytes of one element of `dtype`, or 0 for an unknown dtype. */
AD_API size_t ad_dtype_size(ad_dtype dtype);

/* Short name of a dtype: "f32", "f64", "i32" or "?". */
AD_API const char *ad_dtype_name(ad_dtype dtype);

/*
** Describes caller-owned memory: fills *t so it views `data` with the given dtype and
** shape, version 0. Nothing is allocated; `data` must outlive every use of *t.
** Errors: AD_ERR_NULL (t, or shape with ndim > 0, or data with a nonzero size),
** AD_ERR_RANK (ndim outside 0..4), AD_ERR_INVALID (negative extent or unknown dtype),
** AD_ERR_OVERFLOW (the element count or byte size overflows). *t is untouched on error.
*/
AD_API ad_status ad_tensor_init(ad_tensor *t, ad_dtype dtype, int ndim, const int64_t *shape,
                         void *data);

/*
** Allocates a zero-filled tensor through the allocation hooks. *out (out-parameter)
** is owned by the caller and released with ad_tensor_free. Errors as ad_tensor_init,
** plus AD_ERR_NOMEM; *out is left unchanged on error.
*/
AD_API ad_status ad_tensor_new(ad_dtype dtype, int ndim, const int64_t *shape, ad_tensor **out);

/* Frees a tensor from ad_tensor_new (its data too). NULL is accepted. */
AD_API void ad_tensor_free(ad_tensor *t);

/* Declares that elements were written through `data`: bumps the version. */
AD_API void ad_tensor_touch(ad_tensor *t);

/* Sets every element to `value` (converted to the dtype) and bumps the version.
** AD_ERR_INVALID (tensor untouched) for an i32 tensor and a value outside int32. */
AD_API ad_status ad_tensor_fill(ad_tensor *t, double value);

/* Copies src's elements into dst; both must have the same dtype and shape. Bumps dst's
** version. Errors: AD_ERR_NULL, AD_ERR_DTYPE, AD_ERR_SHAPE; dst is untouched on error. */
AD_API ad_status ad_tensor_copy_from(ad_tensor *dst, const ad_tensor *src);

/* Writes "64x50 f32" (rank 0: "scalar f64") into buf; returns buf. */
AD_API char *ad_tensor_describe(const ad_tensor *t, char *buf, size_t buf_size);

/* Element i (row-major flat index) as a double; no bounds check. NaN for a NULL t
** or NULL data. */
AD_API double ad_tensor_get(const ad_tensor *t, int64_t i);

#ifdef __cplusplus
}
#endif
#endif /* AD_TENSOR_H */
