/*
** blas.h (internal): the library's BLAS entry points, shared by the ops (products) and
** src/nn (descent through ?axpy).
*/
#ifndef AD_BLAS_H
#define AD_BLAS_H

#include <stdbool.h>
#include <stdint.h>
#include "ad_tensor.h"

/*
** C = alpha op(A) op(B) + beta C in the tensors' dtype, row-major, through OpenBLAS
** (sgemm or dgemm). M x N is C's shape, K the inner extent. Zero extents are handled
** here (BLAS rejects leading dimensions of 0 and would print about it): K == 0 makes
** C = beta C. All extents must already be checked to fit in int.
*/
void adi_gemm(ad_dtype dtype, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
              double alpha, const void *A, int64_t lda, const void *B, int64_t ldb,
              double beta, void *C, int64_t ldc);

/* y += alpha x over n elements of dtype, through ?axpy: OpenBLAS spreads a long vector
** over its threads, where a loop of ours would run on one core while the others wait. */
void adi_axpy(ad_dtype dtype, int64_t n, double alpha, const void *x, void *y);

#endif /* AD_BLAS_H */
