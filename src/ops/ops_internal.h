/*
** ops_internal.h (internal): what the op families share: the BLAS entry point with
** its edge cases handled, and the rules each family exports to the built-in table.
*/
#ifndef AD_OPS_INTERNAL_H
#define AD_OPS_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "ad.h"
#include "../base/base.h"

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

/* Runs the statements with T = float or T = double, chosen by dtype, so a kernel is
** written once for both float dtypes. */
#define AD_TYPED(dtype, ...)                                                            \
    do {                                                                                \
        if ((dtype) == AD_F32) {                                                        \
            typedef float T;                                                            \
            __VA_ARGS__                                                                 \
        } else {                                                                        \
            typedef double T;                                                           \
            __VA_ARGS__                                                                 \
        }                                                                               \
    } while (0)

/*
** The pullback contract over n elements: d[i] = v (beta 0: d[i] is never read, it may
** hold NaN) or d[i] += v (beta 1), v an expression of the index i. The test on beta is
** outside the loops: inside, the select between d[i] + v and v stays a branch under
** -ftrapping-math and the loop would not vectorise.
*/
#define AD_PUT_EACH(d, n, beta, i, v)                                                   \
    do {                                                                                \
        if ((beta) != 0.0f)                                                             \
            for (int64_t i = 0; i < (n); i++)                                           \
                (d)[i] += (v);                                                          \
        else                                                                            \
            for (int64_t i = 0; i < (n); i++)                                           \
                (d)[i] = (v);                                                           \
    } while (0)

/* y[i] = tanh(x[i]) for float, vectorisable, within 2 ulp of glibc (tanh_f32.c). */
void adi_tanh_f32(const float *x, float *y, int64_t n);

/* Two tensors of one shape, or AD_ERR_SHAPE naming both (`op` names the op). */
ad_status adi_require_same_shape(const char *op, const ad_tensor *a, const ad_tensor *b);

/* A bias b (m) for the columns of x (n x m), or AD_ERR_SHAPE naming both. */
ad_status adi_require_bias_shape(const char *op, const ad_tensor *x, const ad_tensor *b);

/* relu's pullback for one element: g where x > 0, else +0, by masking g's bits: a ?:
** here would become a branch once AD_PUT_EACH adds it to d[i], and a branch stops
** vectorisation. Shared by relu and the fused bias + relu, so both give the same bits. */
static inline float adi_relu_grad_f32(float g, float x)
{
    uint32_t b;
    memcpy(&b, &g, sizeof b);
    b &= -(uint32_t)(x > 0);
    memcpy(&g, &b, sizeof g);
    return g;
}

static inline double adi_relu_grad_f64(double g, double x)
{
    uint64_t b;
    memcpy(&b, &g, sizeof b);
    b &= -(uint64_t)(x > 0);
    memcpy(&g, &b, sizeof g);
    return g;
}

/* Rules of the built-in ops, one family a file, gathered by builtin_rules.c. */
extern const ad_rule ad_rule_matmul;
extern const ad_rule ad_rule_add, ad_rule_sub, ad_rule_mul, ad_rule_scale,
    ad_rule_bias_add;
extern const ad_rule ad_rule_tanh, ad_rule_relu, ad_rule_sigmoid;
extern const ad_rule ad_rule_bias_relu, ad_rule_bias_tanh;
extern const ad_rule ad_rule_sum, ad_rule_mean;
extern const ad_rule ad_rule_mse, ad_rule_softmax_cross_entropy;

#endif /* AD_OPS_INTERNAL_H */
