/*
** seed_fa.c: the Julia thread's Feedback Alignment model, written in C with adtape.
**
** Three layers 50 -> 60 -> 40 -> 2, no bias, no nonlinearity. Each layer is the
** user's own my_matmul(W, X, B): forward Y = X W', backward dW as backprop but
** dX = dY B through a fixed random B of W's shape. Only the W are trained. Before
** training, the rule is checked in float64 (so my_matmul takes float32 and float64).
*/
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "ad.h"

enum { LAYERS = 3, BATCH = 64, STEPS = 40 };
static const int64_t widths[LAYERS + 1] = {50, 60, 40, 2};

/* C = op(A) op(B) (row-major, beta onto C) in the tensors' dtype. */
static void gemm(ad_dtype dt, int ta, int tb, int m, int n, int k, const void *a, int lda,
                 const void *b, int ldb, float beta, void *c, int ldc)
{
    enum CBLAS_TRANSPOSE A = ta ? CblasTrans : CblasNoTrans, B = tb ? CblasTrans : CblasNoTrans;
    if (dt == AD_F32)
        cblas_sgemm(CblasRowMajor, A, B, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
    else
        cblas_dgemm(CblasRowMajor, A, B, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc);
}

/* Y = X W' (W: out x in, X: batch x in). B rides along for the pullback only. */
static ad_status my_matmul(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
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

/* FA:  dW = dY' X  (as backprop);  dX = dY B  (backprop: dY W);  nothing for B. */
static ad_status my_matmul_pullback(ad_ctx *cx, const ad_tensor *dy,
                                    const ad_tensor *const in[], const ad_tensor *y,
                                    ad_tensor *const din[], const float beta[])
{
    (void)cx;
    const ad_tensor *w = in[0], *x = in[1], *b = in[2];
    int n = (int)y->shape[0], out = (int)w->shape[0], inw = (int)w->shape[1];
    if (din[0])
        gemm(w->dtype, 1, 0, out, inw, n, dy->data, out, x->data, inw, beta[0],
             din[0]->data, inw);
    if (din[1])
        gemm(w->dtype, 0, 0, n, inw, out, dy->data, out, b->data, inw, beta[1],
             din[1]->data, inw);
    return AD_OK;
}

static const ad_rule my_matmul_rule = {
    .name = "my_matmul (feedback alignment)",
    .pullback = my_matmul_pullback,
    .reference = ad_dense_backprop_pullback, /* the true gradient: alignment angles */
    .n_inputs = 3,
    .inputs = {{0, AD_RANK(2)}, {0, AD_RANK(2)}, {0, AD_RANK(2)}}, /* float32 or 64 */
    .not_gradient = AD_INPUT(1), /* dX goes through B */
    .nondiff = AD_INPUT(2),      /* B is never trained */
};

typedef struct dense_fa {
    ad_tensor *W, *B;
} dense_fa;

typedef struct batch {
    dense_fa *layers;
    ad_tensor *x, *y;
} batch;

static uint64_t rng_state = 42;

static double uniform_from(uint64_t *state, double lo, double hi) /* splitmix64 */
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return lo + (hi - lo) * ((double)(z >> 11) * 0x1.0p-53);
}

static double uniform(double lo, double hi)
{
    return uniform_from(&rng_state, lo, hi);
}

static void glorot_uniform(ad_tensor *t)
{
    double a = sqrt(6.0 / (double)(t->shape[0] + t->shape[1]));
    for (int64_t i = 0; i < t->size; i++)
        ((float *)t->data)[i] = (float)uniform(-a, a);
    ad_tensor_touch(t);
}

static ad_var model(ad_tape *t, const dense_fa layers[LAYERS], ad_var x)
{
    for (int i = 0; i < LAYERS; i++)
        x = ad_call(t, my_matmul, ad_use(t, layers[i].W), x, ad_use(t, layers[i].B));
    return x;
}

static ad_var loss(ad_tape *t, void *user) /* gradient(() -> loss(...), ps) */
{
    batch *b = user;
    return ad_mse(t, model(t, b->layers, ad_use(t, b->x)), ad_use(t, b->y));
}

/* A function nobody registered a rule for, to show the record-time error. */
static ad_status my_unregistered_matmul(ad_ctx *cx, const ad_tensor *const in[],
                                        ad_tensor **out)
{
    return my_matmul(cx, in, out);
}

static int fail(const char *what, ad_status rc)
{
    fprintf(stderr, "seed_fa: %s: %s: %s\n", what, ad_status_str(rc), ad_last_error());
    return 1;
}

/* The rule in float64 at small random inputs, with the default check: dW against
** finite differences; dX, deliberately not the gradient, on what every pullback must
** satisfy, with its angle to backprop's dY W. Its own generator: training is unchanged. */
static int check_rule(void)
{
    const int64_t shapes[3][2] = {{4, 3}, {5, 3}, {4, 3}}; /* W, X, B */
    ad_tensor *t[3] = {NULL, NULL, NULL};
    uint64_t state = 7;
    ad_status rc = AD_OK;
    for (int i = 0; i < 3 && rc == AD_OK; i++)
        if ((rc = ad_tensor_new(AD_F64, 2, shapes[i], &t[i])) == AD_OK)
            for (int64_t k = 0; k < t[i]->size; k++)
                ((double *)t[i]->data)[k] = uniform_from(&state, -1, 1);
    ad_check_report report;
    if (rc == AD_OK &&
        (rc = ad_rule_check(my_matmul, (const ad_tensor *const *)t, 3, NULL, &report)) == AD_OK)
        rc = ad_check_report_print(&report, stdout);
    for (int i = 0; i < 3; i++)
        ad_tensor_free(t[i]);
    return rc ? fail("ad_rule_check", rc) : 0;
}

int main(void)
{
    ad_status rc = ad_rule_register(my_matmul, &my_matmul_rule); /* the key is the fn */
    if (rc)
        return fail("register", rc);
    if (check_rule())
        return 1;
    dense_fa layers[LAYERS];
    ad_params *ps;
    ad_grads *gs;
    ad_tape *tape;
    if ((rc = ad_params_new(&ps)) || (rc = ad_tape_new(&tape)))
        return fail("setup", rc);
    for (int i = 0; i < LAYERS; i++) {
        const int64_t shape[2] = {widths[i + 1], widths[i]};
        if ((rc = ad_tensor_new(AD_F32, 2, shape, &layers[i].W)) ||
            (rc = ad_tensor_new(AD_F32, 2, shape, &layers[i].B)))
            return fail("tensor", rc);
        glorot_uniform(layers[i].W);
        glorot_uniform(layers[i].B);
        if ((rc = ad_params_add(ps, layers[i].W, NULL))) /* Flux.trainable: W only */
            return fail("params", rc);
    }
    batch b = {layers, NULL, NULL};
    if ((rc = ad_tensor_new(AD_F32, 2, (int64_t[]){BATCH, widths[0]}, &b.x)) ||
        (rc = ad_tensor_new(AD_F32, 2, (int64_t[]){BATCH, widths[LAYERS]}, &b.y)) ||
        (rc = ad_grads_new(ps, &gs)))
        return fail("data", rc);
    for (int64_t i = 0; i < b.x->size; i++)
        ((float *)b.x->data)[i] = (float)uniform(-1, 1);
    for (int64_t i = 0; i < b.y->size; i++)
        ((float *)b.y->data)[i] = (float)uniform(-1, 1);

    printf("\nFeedback Alignment, 50 -> 60 -> 40 -> 2, batch %d, MSE, Descent(0.1)\n", BATCH);
    uint64_t allocs_after_first = 0;
    for (int step = 0; step < STEPS; step++) {
        double l;
        if ((rc = ad_gradient(tape, ps, loss, &b, gs, &l)))
            return fail("ad_gradient", rc);
        if ((rc = ad_descent_step(ps, gs, 0.1)))
            return fail("descent", rc);
        if (step == 0)
            allocs_after_first = ad_tape_get_stats(tape).heap_allocs;
        if (step % 5 == 0 || step == STEPS - 1)
            printf("step %3d  loss %.6f\n", step, l);
    }
    printf("\nThe tape of the last step:\n");
    ad_tape_print(tape, stdout);
    printf("\nPullback runs per rule (%d steps):\n", STEPS);
    ad_tape_print_rule_counts(tape, stdout);
    printf("\nTape heap allocations after step 1: %llu, after step %d: %llu\n",
           (unsigned long long)allocs_after_first, STEPS,
           (unsigned long long)ad_tape_get_stats(tape).heap_allocs);

    /* Had my_matmul no rule, recording would stop at once, naming it: */
    ad_tape_reset(tape);
    ad_var y = ad_call(tape, my_unregistered_matmul, ad_use(tape, layers[0].W),
                       ad_use(tape, b.x), ad_use(tape, layers[0].B));
    printf("\nA call with no rule: ok=%d, %s: %s\n", ad_var_ok(y),
           ad_status_str(ad_tape_status(tape)), ad_tape_error(tape));

    for (int i = 0; i < LAYERS; i++) {
        ad_tensor_free(layers[i].W);
        ad_tensor_free(layers[i].B);
    }
    ad_tensor_free(b.x);
    ad_tensor_free(b.y);
    ad_grads_free(gs);
    ad_params_free(ps);
    ad_tape_free(tape);
    return 0;
}
