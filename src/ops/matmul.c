/*
** matmul.c: C = op(A) op(B) on OpenBLAS, and backprop's dense-layer pullback.
** Transposes are gemm flags: no operand is ever copied to transpose it.
*/
#include <limits.h>

#include "ops_internal.h"

/* Rows and columns of op(X) for a rank-2 X. */
static void op_dims(const ad_tensor *x, bool trans, int64_t *rows, int64_t *cols)
{
    *rows = trans ? x->shape[1] : x->shape[0];
    *cols = trans ? x->shape[0] : x->shape[1];
}

static ad_status check_blas_dims(const char *op, const ad_tensor *a, const ad_tensor *b)
{
    for (int i = 0; i < 2; i++)
        if (a->shape[i] > INT_MAX || b->shape[i] > INT_MAX)
            return ad_fail(AD_ERR_OVERFLOW, "%s: an extent exceeds BLAS's int range", op);
    return AD_OK;
}

static ad_matmul_attrs matmul_flags(const ad_ctx *cx)
{
    const ad_matmul_attrs *at = ad_attrs(cx);
    return at ? (ad_matmul_attrs){at->trans_a != 0, at->trans_b != 0}
              : (ad_matmul_attrs){0, 0};
}

ad_status ad_op_matmul(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    const ad_tensor *a = in[0], *b = in[1];
    ad_matmul_attrs f = matmul_flags(cx);
    int64_t m, k, kb, n;
    op_dims(a, f.trans_a, &m, &k);
    op_dims(b, f.trans_b, &kb, &n);
    if (k != kb) {
        char da[64], db[64];
        return ad_fail(AD_ERR_SHAPE, "matmul: inner extents differ: %s%s times %s%s",
                       ad_tensor_describe(a, da, sizeof da), f.trans_a ? " (transposed)" : "",
                       ad_tensor_describe(b, db, sizeof db), f.trans_b ? " (transposed)" : "");
    }
    ad_status rc = check_blas_dims("matmul", a, b);
    if (rc || (rc = ad_out(cx, a->dtype, 2, (int64_t[]){m, n}, out)))
        return rc;
    adi_gemm(a->dtype, f.trans_a, f.trans_b, m, n, k, 1.0, a->data, a->shape[1], b->data,
            b->shape[1], 0.0, (*out)->data, n);
    return AD_OK;
}

/*
** C = op(A) op(B):  dA = dC op(B)'  (stored transposed when A was: dA = op(B) dC');
**                   dB = op(A)' dC  (stored transposed when B was: dB = dC' op(A)).
*/
static ad_status matmul_pullback(ad_ctx *cx, const ad_tensor *dc,
                                 const ad_tensor *const in[], const ad_tensor *c,
                                 ad_tensor *const din[], const float beta[])
{
    const ad_tensor *a = in[0], *b = in[1];
    ad_matmul_attrs f = matmul_flags(cx);
    int64_t m = c->shape[0], n = c->shape[1], k = f.trans_a ? a->shape[0] : a->shape[1];
    int64_t lda = a->shape[1], ldb = b->shape[1];
    if (din[0] && !f.trans_a)
        adi_gemm(a->dtype, false, !f.trans_b, m, k, n, 1.0, dc->data, n, b->data, ldb,
                beta[0], din[0]->data, k);
    else if (din[0])
        adi_gemm(a->dtype, f.trans_b, true, k, m, n, 1.0, b->data, ldb, dc->data, n, beta[0],
                din[0]->data, m);
    if (din[1] && !f.trans_b)
        adi_gemm(a->dtype, !f.trans_a, false, k, n, m, 1.0, a->data, lda, dc->data, n, beta[1],
                din[1]->data, n);
    else if (din[1])
        adi_gemm(a->dtype, true, f.trans_a, n, k, m, 1.0, dc->data, n, a->data, lda, beta[1],
                din[1]->data, k);
    return AD_OK;
}

const ad_rule ad_rule_matmul = {
    .name = "matmul",
    .pullback = matmul_pullback,
    .n_inputs = 2,
    .inputs = {{0, AD_RANK(2)}, {0, AD_RANK(2)}},
    .unread = AD_OUTPUT, /* reads A and B, never C */
};

ad_var ad_matmul(ad_tape *t, ad_var a, ad_var b, int trans_a, int trans_b)
{
    ad_matmul_attrs at = {trans_a != 0, trans_b != 0};
    return ad_call_as(t, ad_op_matmul, "ad_matmul", (const ad_var[]){a, b}, 2, &at,
                      sizeof at);
}

/* Y = X W' with inputs (W, X, ...):  dW = dY' X;  dX = dY W. */
ad_status ad_dense_backprop_pullback(ad_ctx *cx, const ad_tensor *dy,
                                     const ad_tensor *const in[], const ad_tensor *y,
                                     ad_tensor *const din[], const float beta[])
{
    (void)cx;
    const ad_tensor *w = in[0], *x = in[1];
    int64_t batch = y->shape[0], n_out = w->shape[0], n_in = w->shape[1];
    if (din[0])
        adi_gemm(w->dtype, true, false, n_out, n_in, batch, 1.0, dy->data, n_out, x->data,
                n_in, beta[0], din[0]->data, n_in);
    if (din[1])
        adi_gemm(w->dtype, false, false, batch, n_in, n_out, 1.0, dy->data, n_out, w->data,
                n_in, beta[1], din[1]->data, n_in);
    return AD_OK;
}
