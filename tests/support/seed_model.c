/*
** seed_model.c: see seed_model.h.
*/
#include "seed_model.h"

#include <cblas.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "support.h"

const int64_t seed_widths[SEED_LAYERS + 1] = {50, 60, 40, 2};
_Thread_local seed_pullback_log seed_log;

/* C = op(A) op(B) in the tensors' dtype, the way a user would call BLAS. */
static void gemm(ad_dtype dt, int ta, int tb, int m, int n, int k, const void *a, int lda,
                 const void *b, int ldb, float beta, void *c, int ldc)
{
    enum CBLAS_TRANSPOSE A = ta ? CblasTrans : CblasNoTrans, B = tb ? CblasTrans : CblasNoTrans;
    if (dt == AD_F32)
        cblas_sgemm(CblasRowMajor, A, B, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
    else
        cblas_dgemm(CblasRowMajor, A, B, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc);
}

ad_status my_matmul(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    const ad_tensor *w = in[0], *x = in[1], *b = in[2];
    if (x->shape[1] != w->shape[1] || b->shape[0] != w->shape[0] ||
        b->shape[1] != w->shape[1])
        return ad_fail(AD_ERR_SHAPE, "my_matmul: W, X and B do not fit");
    ad_status rc = ad_out(cx, w->dtype, 2, (int64_t[]){x->shape[0], w->shape[0]}, out);
    if (rc == AD_OK)
        gemm(w->dtype, 0, 1, (int)x->shape[0], (int)w->shape[0], (int)w->shape[1], x->data,
             (int)x->shape[1], w->data, (int)w->shape[1], 0.0f, (*out)->data,
             (int)w->shape[0]);
    return rc;
}

ad_status my_matmul_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                             const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx;
    const ad_tensor *w = in[0], *x = in[1], *b = in[2];
    int n = (int)y->shape[0], o = (int)w->shape[0], i = (int)w->shape[1];
    seed_log.calls++;
    seed_log.dx_requested += din[1] != NULL;
    seed_log.dx_requested_for_data += din[1] != NULL && x == seed_log.data;
    if (din[0])
        gemm(w->dtype, 1, 0, o, i, n, dy->data, o, x->data, i, beta[0], din[0]->data, i);
    if (din[1])
        gemm(w->dtype, 0, 0, n, i, o, dy->data, o, b->data, i, beta[1], din[1]->data, i);
    return AD_OK;
}

const ad_rule my_matmul_rule = {
    .name = "my_matmul (feedback alignment)",
    .pullback = my_matmul_pullback,
    .reference = ad_dense_backprop_pullback,
    .n_inputs = 3,
    .inputs = {{0, AD_RANK(2)}, {0, AD_RANK(2)}, {0, AD_RANK(2)}},
    .not_gradient = AD_INPUT(1),
    .nondiff = AD_INPUT(2),
};

static void glorot(ad_tensor *t, uint64_t *rng)
{
    double a = sqrt(6.0 / (double)(t->shape[0] + t->shape[1]));
    ts_fill_uniform(t, rng, -a, a);
}

void seed_model_make(seed_model *m, ad_dtype dtype, uint64_t seed)
{
    uint64_t rng = seed;
    cr_assert_eq(ad_params_new(&m->ps), AD_OK);
    for (int l = 0; l < SEED_LAYERS; l++) {
        const int64_t shape[2] = {seed_widths[l + 1], seed_widths[l]};
        m->W[l] = ts_tensor(dtype, 2, shape);
        m->B[l] = ts_tensor(dtype, 2, shape);
        glorot(m->W[l], &rng);
        glorot(m->B[l], &rng);
        cr_assert_eq(ad_params_add(m->ps, m->W[l], NULL), AD_OK);
    }
    m->x = ts_tensor(dtype, 2, (int64_t[]){SEED_BATCH, seed_widths[0]});
    m->y = ts_tensor(dtype, 2, (int64_t[]){SEED_BATCH, seed_widths[SEED_LAYERS]});
    ts_fill_uniform(m->x, &rng, -1, 1);
    ts_fill_uniform(m->y, &rng, -1, 1);
    cr_assert_eq(ad_grads_new(m->ps, &m->gs), AD_OK);
}

void seed_model_free(seed_model *m)
{
    for (int l = 0; l < SEED_LAYERS; l++) {
        ad_tensor_free(m->W[l]);
        ad_tensor_free(m->B[l]);
    }
    ad_tensor_free(m->x);
    ad_tensor_free(m->y);
    ad_grads_free(m->gs);
    ad_params_free(m->ps);
}

ad_var seed_loss(ad_tape *t, void *model)
{
    seed_model *m = model;
    ad_var h = ad_use(t, m->x);
    for (int l = 0; l < SEED_LAYERS; l++)
        h = ad_call(t, my_matmul, ad_use(t, m->W[l]), h, ad_use(t, m->B[l]));
    return ad_mse(t, h, ad_use(t, m->y));
}

ad_var seed_loss_backprop(ad_tape *t, void *model)
{
    seed_model *m = model;
    ad_var h = ad_use(t, m->x);
    for (int l = 0; l < SEED_LAYERS; l++)
        h = ad_matmul(t, h, ad_use(t, m->W[l]), 0, 1);
    return ad_mse(t, h, ad_use(t, m->y));
}

/* h_{l+1} = h_l W_l';  e = 2 (h_L - y) / N;  dW_l = e_l' h_l;  e_{l-1} = e_l F_l,
** with F = B (FA) or W (backprop). Plain loops in double. */
void seed_reference_grads(const seed_model *m, int fa, double *dW[SEED_LAYERS])
{
    double *h[SEED_LAYERS + 1], *e[SEED_LAYERS];
    int64_t n = SEED_BATCH;
    for (int l = 0; l <= SEED_LAYERS; l++)
        h[l] = calloc((size_t)(n * seed_widths[l]), sizeof(double));
    for (int64_t k = 0; k < m->x->size; k++)
        h[0][k] = ts_get(m->x, k);
    for (int l = 0; l < SEED_LAYERS; l++)
        ts_naive_matmul_raw(h[l], n, seed_widths[l], m->W[l], h[l + 1]);
    int64_t out = seed_widths[SEED_LAYERS];
    for (int l = 0; l < SEED_LAYERS; l++)
        e[l] = calloc((size_t)(n * seed_widths[l + 1]), sizeof(double));
    for (int64_t k = 0; k < n * out; k++)
        e[SEED_LAYERS - 1][k] = 2.0 * (h[SEED_LAYERS][k] - ts_get(m->y, k)) / (double)(n * out);
    for (int l = SEED_LAYERS - 1; l >= 0; l--) {
        int64_t o = seed_widths[l + 1], i = seed_widths[l];
        const ad_tensor *f = fa ? m->B[l] : m->W[l];
        for (int64_t a = 0; a < o; a++)
            for (int64_t b = 0; b < i; b++) {
                double s = 0;
                for (int64_t r = 0; r < n; r++)
                    s += e[l][r * o + a] * h[l][r * i + b];
                dW[l][a * i + b] = s;
            }
        if (l == 0)
            break;
        for (int64_t r = 0; r < n; r++)
            for (int64_t b = 0; b < i; b++) {
                double s = 0;
                for (int64_t a = 0; a < o; a++)
                    s += e[l][r * o + a] * ts_get(f, a * i + b);
                e[l - 1][r * i + b] = s;
            }
    }
    for (int l = 0; l <= SEED_LAYERS; l++)
        free(h[l]);
    for (int l = 0; l < SEED_LAYERS; l++)
        free(e[l]);
}
