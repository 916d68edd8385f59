/*
** blas.c: the one place the library calls BLAS (?gemm, and ?axpy for descent), with
** the cases BLAS refuses handled.
*/
#include <cblas.h>
#include <limits.h>
#include <string.h>

#include "ops_internal.h"

/* Leading dimensions must be at least 1 even for empty matrices. */
static int ld(int64_t x)
{
    return x > 0 ? (int)x : 1;
}

static void scale_c(ad_dtype dtype, int64_t M, int64_t N, double beta, void *C, int64_t ldc)
{
    for (int64_t i = 0; i < M; i++) {
        if (dtype == AD_F32) {
            float *row = (float *)C + i * ldc;
            for (int64_t j = 0; j < N; j++)
                row[j] = beta == 0.0 ? 0.0f : (float)beta * row[j];
        } else {
            double *row = (double *)C + i * ldc;
            for (int64_t j = 0; j < N; j++)
                row[j] = beta == 0.0 ? 0.0 : beta * row[j];
        }
    }
}

void adi_gemm(ad_dtype dtype, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
             double alpha, const void *A, int64_t lda, const void *B, int64_t ldb,
             double beta, void *C, int64_t ldc)
{
    if (M == 0 || N == 0)
        return;
    if (K == 0) {
        if (beta != 1.0)
            scale_c(dtype, M, N, beta, C, ldc);
        return;
    }
    enum CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
    enum CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
    if (dtype == AD_F32)
        cblas_sgemm(CblasRowMajor, ta, tb, (int)M, (int)N, (int)K, (float)alpha, A, ld(lda),
                    B, ld(ldb), (float)beta, C, ld(ldc));
    else
        cblas_dgemm(CblasRowMajor, ta, tb, (int)M, (int)N, (int)K, alpha, A, ld(lda), B,
                    ld(ldb), beta, C, ld(ldc));
}

void adi_axpy(ad_dtype dtype, int64_t n, double alpha, const void *x, void *y)
{
    /* BLAS counts in int: a larger vector goes in pieces (its elements are independent,
    ** so the pieces give the same bits as one call would). */
    const int64_t piece = (int64_t)1 << 30;
    for (int64_t i = 0; i < n; i += piece) {
        int m = (int)(n - i < piece ? n - i : piece);
        if (dtype == AD_F32)
            cblas_saxpy(m, (float)alpha, (const float *)x + i, 1, (float *)y + i, 1);
        else
            cblas_daxpy(m, alpha, (const double *)x + i, 1, (double *)y + i, 1);
    }
}

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
                          double alpha, double beta, ad_tensor *c)
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
