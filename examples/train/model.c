/*
** model.c: adtape-train's networks (layers.c lays them out and records each layer):
** their tensors, parameter sets, training step, accuracy and alignment.
*/
#include "model.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static const char *const names[RULE_COUNT] = {"bp",   "fa",   "dfa", "usf",
                                              "brsf", "frsf", "kp",  "frozen"};

const char *rule_name(rule_kind r)
{
    return r < RULE_COUNT ? names[r] : "?";
}

rule_kind rule_parse(const char *name)
{
    for (int r = 0; r < RULE_COUNT; r++)
        if (strcmp(name, names[r]) == 0)
            return (rule_kind)r;
    return RULE_COUNT;
}

static int hidden_layers(const model *m)
{
    return m->cfg.n_layers - 1;
}

/* The feedback tensor layer l needs under the model's rule (model_feedback_shape), or
** none: FA and KP start Glorot-uniform as W does, SF draws its magnitudes, DFA's B is
** Glorot-uniform over its own fans. */
static ad_status make_feedback(model *m, int l)
{
    int64_t shape[4];
    int rank = model_feedback_shape(m, l, shape);
    if (rank == 0)
        return AD_OK;
    ad_status rc = ad_tensor_new(AD_F32, rank, shape, &m->B[l]);
    if (rc)
        return rc;
    if (m->cfg.rule == RULE_BRSF || m->cfg.rule == RULE_FRSF)
        return ad_sf_draw_magnitudes(m->B[l], &m->rng);
    return ad_init_glorot_uniform(m->B[l], &m->rng);
}

/* Which tensors train: every W and b, KP's B too, only the top layer for the control.
** Each under its name, so checkpoints need no array of names. */
static ad_status add_params(model *m)
{
    ad_status rc = ad_params_new(&m->ps);
    char name[32];
    for (int l = 0; rc == AD_OK && l < m->cfg.n_layers; l++) {
        if (m->cfg.rule == RULE_FROZEN && l < hidden_layers(m))
            continue;
        model_tensor_name(m, name, sizeof name, l, "weight");
        rc = ad_params_add_named(m->ps, m->W[l], name, NULL);
        model_tensor_name(m, name, sizeof name, l, "bias");
        rc = rc ? rc : ad_params_add_named(m->ps, m->b[l], name, NULL);
        model_tensor_name(m, name, sizeof name, l, "feedback");
        if (rc == AD_OK && m->cfg.rule == RULE_KP)
            rc = ad_params_add_named(m->ps, m->B[l], name, NULL);
    }
    return rc;
}

/* The single-process gradient: ctx unused. */
static ad_status local_gradient(void *ctx, ad_tape *tape, const ad_params *ps,
                                ad_loss_fn loss_fn, void *user, ad_grads *gs, double *loss)
{
    (void)ctx;
    return ad_gradient(tape, ps, loss_fn, user, gs, loss);
}

/* W, b and the feedback of layer l, W out x in (x k x k for a conv) as PyTorch's. */
static ad_status make_layer(model *m, int l)
{
    const layer_spec *s = &m->layers[l];
    const int64_t w[4] = {s->out, s->in, s->kernel, s->kernel};
    ad_status rc = ad_tensor_new(AD_F32, s->conv ? 4 : 2, w, &m->W[l]);
    rc = rc ? rc : ad_tensor_new(AD_F32, 1, &w[0], &m->b[l]);
    rc = rc ? rc : ad_init_glorot_uniform(m->W[l], &m->rng);
    rc = rc ? rc : ad_tensor_fill(m->b[l], m->cfg.bias_init);
    return rc ? rc : make_feedback(m, l);
}

ad_status model_init(model *m, const model_config *cfg)
{
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    ad_rng_seed(&m->rng, cfg->seed);
    ad_status rc = model_layout(m);
    for (int l = 0; rc == AD_OK && l < m->cfg.n_layers; l++)
        rc = make_layer(m, l);
    rc = rc ? rc : ad_tensor_new(AD_F32, m->input_rank, m->input, &m->x);
    rc = rc ? rc : ad_tensor_new(AD_I32, 1, m->input, &m->labels);
    if (rc == AD_OK && cfg->augment_pad > 0)
        rc = ad_tensor_new(AD_F32, m->input_rank, m->input, &m->x_raw);
    rc = rc ? rc : add_params(m);
    rc = rc ? rc : ad_grads_new(m->ps, &m->gs);
    rc = rc ? rc : ad_grads_new(m->ps, &m->align_gs);
    m->gradient = local_gradient;
    rc = rc ? rc : ad_optim_new(m->ps, &cfg->optim, &m->opt);
    rc = rc ? rc : ad_tape_new(&m->tape);
    rc = rc ? rc : ad_tape_new(&m->eval_tape);
    if (rc == AD_OK && cfg->constrain_weights) {
        const int64_t n = m->cfg.n_layers;
        rc = ad_tensor_new(AD_F64, 1, &n, &m->norms);
        rc = rc ? rc : ad_weight_norms_record(m->W, m->cfg.n_layers, m->norms);
    }
    if (rc == AD_OK) {
        ad_tape_set_grad_enabled(m->eval_tape, 0);
        /* A training step reads nothing but the loss after its sweep. */
        ad_tape_set_memory_saving(m->tape, 1);
    }
    return rc;
}

void model_free(model *m)
{
    for (int l = 0; l < MODEL_MAX_LAYERS; l++) {
        ad_tensor_free(m->W[l]);
        ad_tensor_free(m->b[l]);
        ad_tensor_free(m->B[l]);
    }
    ad_tensor_free(m->x);
    ad_tensor_free(m->x_raw);
    ad_tensor_free(m->labels);
    ad_tensor_free(m->norms);
    ad_optim_free(m->opt);
    ad_grads_free(m->gs);
    ad_grads_free(m->align_gs);
    ad_params_free(m->ps);
    ad_tape_free(m->tape);
    ad_tape_free(m->eval_tape);
}

/* The logits for x, recording pre-activations; under DFA the logits mark e's source.
** Clamping acts in sweeps alone, so the forward-only evaluation tape goes without. */
static ad_var forward(model *m, ad_tape *t, const ad_tensor *x)
{
    ad_var h = ad_use(t, x);
    bool clamp = m->cfg.clamp_grad && t != m->eval_tape;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        if (clamp && l > 0)
            h = ad_clamp_grad(t, h, NULL);
        h = model_layer(m, t, l, h, &m->pre[l]);
    }
    return m->cfg.rule == RULE_DFA ? ad_dfa_output(t, &m->dfa, h) : h;
}

/* Copies rows idx[0..batch) into x and the labels and bumps their versions. */
static void gather(model *m, ad_tensor *x, const ad_tensor *images, const ad_tensor *labels,
                   const int64_t *idx)
{
    int64_t d = images->size / images->shape[0]; /* a row: 784 floats or C x H x W */
    for (int64_t r = 0; r < m->cfg.batch; r++) {
        memcpy((float *)x->data + r * d, (const float *)images->data + idx[r] * d,
               (size_t)d * sizeof(float));
        ((int32_t *)m->labels->data)[r] = ((const int32_t *)labels->data)[idx[r]];
    }
    ad_tensor_touch(x);
    ad_tensor_touch(m->labels);
}

/* The batch in x_raw, cropped and flipped into x. ad_random_crop_flip draws three words
** per image: the other ranks' images of the global batch are drawn for and skipped. */
static ad_status augment(model *m)
{
    for (int64_t i = 0; i < 3 * m->augment_skip[0]; i++)
        (void)ad_rng_u64(m->augment);
    ad_status rc = ad_random_crop_flip(m->x_raw, m->x, m->cfg.augment_pad, m->augment);
    for (int64_t i = 0; rc == AD_OK && i < 3 * m->augment_skip[1]; i++)
        (void)ad_rng_u64(m->augment);
    return rc;
}

/* The loss of the current batch: what m->gradient records on a fresh tape. */
static ad_var batch_loss(ad_tape *t, void *user)
{
    model *m = user;
    return ad_softmax_cross_entropy(t, forward(m, t, m->x), ad_use(t, m->labels));
}

ad_status model_step(model *m, const ad_tensor *images, const ad_tensor *labels,
                     const int64_t *idx, double *loss)
{
    bool augmenting = m->cfg.augment_pad > 0 && m->augment;
    gather(m, augmenting ? m->x_raw : m->x, images, labels, idx);
    if (augmenting) {
        ad_status rc = augment(m);
        if (rc)
            return rc;
    }
    for (int l = 0; m->cfg.rule == RULE_BRSF && l < m->cfg.n_layers; l++) {
        ad_status rc = ad_sf_draw_magnitudes(m->B[l], &m->rng); /* batchwise random */
        if (rc)
            return rc;
    }
    ad_status rc = m->gradient(m->gradient_ctx, m->tape, m->ps, batch_loss, m, m->gs, loss);
    rc = rc ? rc : ad_optim_step(m->opt, m->gs);
    if (rc == AD_OK && m->norms)
        rc = ad_constrain_weights(m->W, m->cfg.n_layers, m->norms);
    return rc;
}

ad_status model_set_epoch(model *m, int e)
{
    if (m->cfg.n_milestones == 0)
        return AD_OK;
    ad_lr_multistep_config s = {.base_lr = m->cfg.optim.lr, .milestones = m->cfg.milestones,
                                .n_milestones = m->cfg.n_milestones, .gamma = m->cfg.gamma};
    double lr;
    ad_status rc = ad_lr_multistep(&s, e, &lr);
    return rc ? rc : ad_optim_set_lr(m->opt, lr);
}

/* A view of rows [r0, r0 + n) of a row-major tensor of any rank, without copying. */
static ad_status rows_view(const ad_tensor *t, int64_t r0, int64_t n, ad_tensor *view)
{
    int64_t shape[AD_MAX_RANK];
    memcpy(shape, t->shape, (size_t)t->ndim * sizeof *shape);
    shape[0] = n;
    size_t row_bytes = (size_t)(t->size / t->shape[0]) * ad_dtype_size(t->dtype);
    return ad_tensor_init(view, t->dtype, t->ndim, shape, (char *)t->data + r0 * row_bytes);
}

static int64_t argmax_row(const float *z, int64_t k)
{
    int64_t best = 0;
    for (int64_t j = 1; j < k; j++)
        best = z[j] > z[best] ? j : best;
    return best;
}

ad_status model_accuracy(model *m, const ad_tensor *images, const ad_tensor *labels,
                         double *accuracy)
{
    int64_t n = images->shape[0], correct = 0, k = m->layers[m->cfg.n_layers - 1].out;
    for (int64_t r0 = 0; r0 < n; r0 += 1000) {
        int64_t rows = n - r0 < 1000 ? n - r0 : 1000;
        ad_tensor xv, lv;
        ad_status rc = rows_view(images, r0, rows, &xv);
        rc = rc ? rc : rows_view(labels, r0, rows, &lv);
        if (rc)
            return rc;
        ad_tape_reset(m->eval_tape);
        const ad_tensor *z = ad_value(m->eval_tape, forward(m, m->eval_tape, &xv));
        if (!z)
            return ad_fail(ad_tape_status(m->eval_tape), "%s", ad_tape_error(m->eval_tape));
        for (int64_t r = 0; r < rows; r++)
            correct += argmax_row((const float *)z->data + r * k, k) ==
                       ((const int32_t *)lv.data)[r];
    }
    *accuracy = n ? (double)correct / (double)n : 0.0;
    return AD_OK;
}

static ad_status alignment_sweeps(model *m, const ad_tensor *images, const ad_tensor *labels,
                                  int64_t n, double *grad_angle, double *weight_angle)
{
    ad_tensor xv, lv;
    ad_status rc = rows_view(images, 0, n, &xv);
    rc = rc ? rc : rows_view(labels, 0, n, &lv);
    if (rc)
        return rc;
    ad_tape_reset(m->tape);
    ad_var loss = ad_softmax_cross_entropy(m->tape, forward(m, m->tape, &xv),
                                           ad_use(m->tape, &lv));
    const ad_tensor *rule_grad[MODEL_MAX_LAYERS];
    ad_sweep_options reference = {.use_reference = 1};
    if ((rc = ad_backward(m->tape, loss, m->ps, m->align_gs)))
        return rc;
    for (int l = 0; l < hidden_layers(m); l++)
        rule_grad[l] = ad_cotangent(m->tape, m->pre[l]);
    if ((rc = ad_backward_ex(m->tape, loss, m->ps, m->align_gs, &reference)))
        return rc;
    for (int l = 0; l < hidden_layers(m); l++)
        grad_angle[l] = ad_angle_degrees(rule_grad[l], ad_cotangent(m->tape, m->pre[l]));
    model_weight_metrics(m, weight_angle, NULL);
    return AD_OK;
}

/* Element i of the tensor layer l's dX goes through in place of W: B (FA, KP), sign(W)
** (uSF; scaled: times ad_usf_scale(W)) or |M| sign(W) (brSF, frSF), as the rules
** define them (sign(0) = 0). */
static double feedback_at(const model *m, int l, int64_t i)
{
    double w = ((const float *)m->W[l]->data)[i];
    double sg = w > 0 ? 1.0 : w < 0 ? -1.0 : 0.0;
    switch (m->cfg.rule) {
    case RULE_FA:
    case RULE_KP: return ((const float *)m->B[l]->data)[i];
    case RULE_BRSF:
    case RULE_FRSF: return sg * fabs(((const float *)m->B[l]->data)[i]);
    default: return m->cfg.usf_scaled ? sg * ad_usf_scale(m->W[l]) : sg; /* RULE_USF */
    }
}

void model_weight_metrics(const model *m, double *angle, double *norm_ratio)
{
    bool has = m->cfg.rule == RULE_FA || m->cfg.rule == RULE_KP || m->cfg.rule == RULE_USF ||
               m->cfg.rule == RULE_BRSF || m->cfg.rule == RULE_FRSF;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        double dot = 0, nf = 0, nw = 0;
        for (int64_t i = 0; has && i < m->W[l]->size; i++) {
            double f = feedback_at(m, l, i), w = ((const float *)m->W[l]->data)[i];
            dot += f * w, nf += f * f, nw += w * w;
        }
        double c = has && nf > 0 && nw > 0 ? dot / sqrt(nf * nw) : NAN;
        if (angle)
            angle[l] = isnan(c) ? NAN : acos(c > 1 ? 1 : c < -1 ? -1 : c) * (180.0 / acos(-1.0));
        if (norm_ratio)
            norm_ratio[l] = has && nw > 0 ? sqrt(nf / nw) : NAN;
    }
}

/* Two sweeps of one recording, with cotangents read after each: the training tape's
** memory saving is off for them. */
ad_status model_alignment(model *m, const ad_tensor *images, const ad_tensor *labels,
                          int64_t n, double *grad_angle, double *weight_angle)
{
    ad_tape_set_memory_saving(m->tape, 0);
    ad_status rc = alignment_sweeps(m, images, labels, n, grad_angle, weight_angle);
    ad_tape_set_memory_saving(m->tape, 1);
    return rc;
}
