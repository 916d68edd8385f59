/*
** blas.c: matrix products on tensors (ad_gemm_tensors, for users' rules) and the shape
** checks the op families share; the BLAS calls themselves are in src/base/blas.c.
*/
#include <limits.h>
#include <string.h>

#include "ops_internal.h"

ad_status adi_require_same_shape(const char *op, const ad_tensor *a, const ad_tensor *b)
{
    char da[64], db[64];
    if (adi_same_shape(a, b))
        return AD_OK;
    return ad_fail(AD_ERR_SHAPE, "%s: shapes differ: %s and %s", op,
                   ad_tensor_describe(a, da, sizeof da), ad_tensor_describe(b, db, sizeof db));
}

static ad_status gemm_args_fail(const ad_tensor *a, const ad_tensor *b, const ad_tensor *c,
                                const char *why)
{
    char da[64], db[64], dc[64];
    return ad_fail(AD_ERR_SHAPE, "ad_gemm_tensors: %s (A %s, B %s, C %s)", why,
                   ad_tensor_describe(a, da, sizeof da), ad_tensor_describe(b, db, sizeof db),
                   ad_tensor_describe(c, dc, sizeof dc));
}

ad_status ad_gemm_tensors(const ad_tensor *a, int trans_a, const ad_tensor *b, int trans_b,
                          double alpha, float beta, ad_tensor *c)
{
    if (!a || !b || !c)
        return ad_fail(AD_ERR_NULL, "ad_gemm_tensors: NULL tensor");
    if (a->ndim != 2 || b->ndim != 2 || c->ndim != 2)
        return ad_fail(AD_ERR_RANK, "ad_gemm_tensors: ranks %d, %d, %d (2 required)",
                       a->ndim, b->ndim, c->ndim);
    if (a->dtype != b->dtype || a->dtype != c->dtype || a->dtype == AD_I32)
        return ad_fail(AD_ERR_DTYPE, "ad_gemm_tensors: dtypes %s, %s, %s (one float dtype "
                       "required)", ad_dtype_name(a->dtype), ad_dtype_name(b->dtype),
                       ad_dtype_name(c->dtype));
    int64_t m = trans_a ? a->shape[1] : a->shape[0], k = trans_a ? a->shape[0] : a->shape[1];
    int64_t kb = trans_b ? b->shape[1] : b->shape[0], n = trans_b ? b->shape[0] : b->shape[1];
    if (k != kb)
        return gemm_args_fail(a, b, c, "inner extents differ");
    if (c->shape[0] != m || c->shape[1] != n)
        return gemm_args_fail(a, b, c, "C does not have the product's shape");
    for (int i = 0; i < 2; i++)
        if (a->shape[i] > INT_MAX || b->shape[i] > INT_MAX || c->shape[i] > INT_MAX)
            return ad_fail(AD_ERR_OVERFLOW, "ad_gemm_tensors: an extent exceeds BLAS's int");
    adi_gemm(a->dtype, trans_a != 0, trans_b != 0, m, n, k, alpha, a->data, a->shape[1],
            b->data, b->shape[1], beta, c->data, n);
    return AD_OK;
}
