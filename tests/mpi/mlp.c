/*
** mlp.c: see mlp.h.
*/
#include "mlp.h"

#include <string.h>

#include "harness.h"

static const int64_t widths[MLP_LAYERS + 1] = {MLP_IN, 16, 12, MLP_OUT};

const char *mlp_rule_name(int rule)
{
    return rule == MLP_FA ? "FA" : rule == MLP_DFA ? "DFA" : "BP";
}

static ad_tensor *tensor(ad_dtype dtype, int ndim, int64_t d0, int64_t d1)
{
    ad_tensor *t = NULL;
    REQUIRE(ad_tensor_new(dtype, ndim, (const int64_t[]){d0, d1}, &t));
    return t;
}

void mlp_new(mlp *m, int rule, ad_dtype dtype, uint64_t seed, uint64_t feedback_seed)
{
    memset(m, 0, sizeof *m);
    m->rule = rule;
    m->dtype = dtype;
    ad_rng r, fr;
    ad_rng_seed(&r, seed);
    ad_rng_seed(&fr, feedback_seed);
    REQUIRE(ad_params_new(&m->ps));
    m->U = tensor(dtype == AD_F32 ? AD_F64 : AD_F32, 1, 3, 0);
    REQUIRE(ad_init_uniform(m->U, &r, -1.0, 1.0));
    REQUIRE(ad_params_add(m->ps, m->U, NULL));
    for (int l = 0; l < MLP_LAYERS; l++) {
        m->W[l] = tensor(dtype, 2, widths[l + 1], widths[l]);
        m->b[l] = tensor(dtype, 1, widths[l + 1], 0);
        REQUIRE(ad_init_glorot_uniform(m->W[l], &r));
        REQUIRE(ad_init_uniform(m->b[l], &r, -0.1, 0.1));
        REQUIRE(ad_params_add(m->ps, m->W[l], NULL));
        REQUIRE(ad_params_add(m->ps, m->b[l], NULL));
        if (rule == MLP_FA)
            m->B[l] = tensor(dtype, 2, widths[l + 1], widths[l]);
        else if (rule == MLP_DFA && l < MLP_LAYERS - 1)
            m->B[l] = tensor(dtype, 2, widths[l + 1], MLP_OUT);
        if (m->B[l])
            REQUIRE(ad_init_glorot_uniform(m->B[l], &fr));
    }
    REQUIRE(ad_grads_new(m->ps, &m->gs));
    ad_optim_config cfg = {.kind = AD_OPT_MOMENTUM, .lr = 0.1, .momentum = 0.9};
    REQUIRE(ad_optim_new(m->ps, &cfg, &m->opt));
    REQUIRE(ad_tape_new(&m->tape));
}

void mlp_free(mlp *m)
{
    ad_tape_free(m->tape);
    ad_optim_free(m->opt);
    ad_grads_free(m->gs);
    ad_params_free(m->ps);
    ad_tensor_free(m->U);
    for (int l = 0; l < MLP_LAYERS; l++) {
        ad_tensor_free(m->W[l]);
        ad_tensor_free(m->b[l]);
        ad_tensor_free(m->B[l]);
    }
    memset(m, 0, sizeof *m);
}

void mlp_data_new(mlp_data *d, ad_dtype dtype, uint64_t seed)
{
    ad_rng r;
    ad_rng_seed(&r, seed);
    d->x = tensor(dtype, 2, MLP_ROWS, MLP_IN);
    d->y = tensor(AD_I32, 1, MLP_ROWS, 0);
    REQUIRE(ad_init_uniform(d->x, &r, -1.0, 1.0));
    for (int i = 0; i < MLP_ROWS; i++)
        ((int32_t *)d->y->data)[i] = (int32_t)(ad_rng_u64(&r) % MLP_OUT);
    ad_tensor_touch(d->y);
}

void mlp_data_free(mlp_data *d)
{
    ad_tensor_free(d->x);
    ad_tensor_free(d->y);
}

void mlp_batch_init(mlp_batch *bt, mlp *m, const mlp_data *d, int row0, int rows)
{
    size_t esz = ad_dtype_size(d->x->dtype);
    bt->m = m;
    bt->fail = MLP_GOOD;
    REQUIRE(ad_tensor_init(&bt->x, d->x->dtype, 2, (const int64_t[]){rows, MLP_IN},
                           (char *)d->x->data + (size_t)row0 * MLP_IN * esz));
    REQUIRE(ad_tensor_init(&bt->y, AD_I32, 1, (const int64_t[]){rows},
                           (int32_t *)d->y->data + row0));
}

/* An identity whose pullback fails: a rule error in the middle of the sweep, after the
** layers above it have finished their gradients. */
static ad_status fail_identity(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    ad_status rc = ad_out(cx, in[0]->dtype, in[0]->ndim, in[0]->shape, out);
    if (rc == AD_OK)
        memcpy((*out)->data, in[0]->data, (size_t)in[0]->size * ad_dtype_size(in[0]->dtype));
    return rc;
}

static ad_status fail_identity_pullback(ad_ctx *cx, const ad_tensor *dy,
                                        const ad_tensor *const in[], const ad_tensor *y,
                                        ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)dy, (void)in, (void)y, (void)din, (void)beta;
    return ad_fail(AD_ERR_INVALID, "fail_identity: failing on purpose");
}

void mlp_register_failing_rule(void)
{
    ad_rule rule = {.pullback = fail_identity_pullback, .n_inputs = 1};
    REQUIRE(ad_rule_register(fail_identity, &rule));
}

static ad_var dense(mlp *m, ad_tape *t, int l, ad_var h)
{
    ad_var w = ad_use(t, m->W[l]);
    ad_var z = m->rule == MLP_FA ? ad_dense_fa(t, w, h, ad_use(t, m->B[l]))
                                 : ad_matmul(t, h, w, 0, 1);
    return ad_bias_add(t, z, ad_use(t, m->b[l]));
}

ad_var mlp_loss(ad_tape *t, void *user)
{
    mlp_batch *bt = user;
    mlp *m = bt->m;
    ad_var h = ad_use(t, &bt->x);
    for (int l = 0; l < MLP_LAYERS - 1; l++) {
        h = ad_tanh(t, dense(m, t, l, h));
        if (m->rule == MLP_DFA)
            h = ad_dfa_hidden(t, &m->dfa, h, ad_use(t, m->B[l]));
        if (l == 0 && bt->fail == MLP_FAIL_PULLBACK)
            h = ad_call(t, fail_identity, h);
        if (l == 0 && bt->fail == MLP_FAIL_RECORD)
            h = ad_matmul(t, h, h, 0, 0); /* (rows x 16)(rows x 16): AD_ERR_SHAPE */
    }
    ad_var logits = dense(m, t, MLP_LAYERS - 1, h);
    if (m->rule == MLP_DFA)
        logits = ad_dfa_output(t, &m->dfa, logits);
    return ad_softmax_cross_entropy(t, logits, ad_use(t, &bt->y));
}

int mlp_params_equal(const mlp *a, const mlp *b)
{
    int n = ad_params_count(a->ps);
    if (n != ad_params_count(b->ps))
        return 0;
    for (int p = 0; p < n; p++) {
        const ad_tensor *x = ad_params_at(a->ps, p), *y = ad_params_at(b->ps, p);
        if (x->size != y->size || x->dtype != y->dtype ||
            memcmp(x->data, y->data, (size_t)x->size * ad_dtype_size(x->dtype)) != 0)
            return 0;
    }
    return 1;
}
