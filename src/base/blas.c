/*
** blas.c: the one place the library calls BLAS (?gemm for the ops, ?axpy for descent),
** with the cases BLAS refuses handled. In base, below every part that multiplies, so
** the ops and the optimisers reach it without reaching each other.
*/
#include <cblas.h>

#include "blas.h"

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
