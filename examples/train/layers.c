/*
** layers.c: the layer tables of adtape-train's networks and the op each layer records
** under each rule.
**
** lenet and cnn are BioTorch's networks (Sanfiz and Akrout 2021, models le_net and the
** small CIFAR-10 network): conv 5 x 5 to c1, relu, 2 x 2 max pool; conv to c2, relu,
** pool; conv to c3, relu (a 1 x 1 map on 32 x 32 inputs); flatten; dense to 84; dense
** to 10, with no activation between the two dense layers. LeNet has c = 6, 16, 120 on
** one channel, the CIFAR network 32, 64, 128 on three.
*/
#include <stdio.h>
#include <string.h>

#include "model.h"

static const char *const arch_names[ARCH_COUNT] = {"mlp", "lenet", "cnn"};

const char *arch_name(model_arch a)
{
    return a < ARCH_COUNT ? arch_names[a] : "?";
}

model_arch arch_parse(const char *name)
{
    for (int a = 0; a < ARCH_COUNT; a++)
        if (strcmp(name, arch_names[a]) == 0)
            return (model_arch)a;
    return ARCH_COUNT;
}

static void mlp_layout(model *m)
{
    const model_config *c = &m->cfg;
    for (int l = 0; l < c->n_layers; l++)
        m->layers[l] = (layer_spec){.in = c->widths[l], .out = c->widths[l + 1],
                                    .act = l + 1 == c->n_layers ? ACT_NONE
                                           : c->relu          ? ACT_RELU
                                                              : ACT_TANH};
    m->input_rank = 2;
    m->input[0] = c->batch;
    m->input[1] = c->widths[0];
}

/* Three convolutions of channels c[0..2] on `in` channels of 32 x 32, then 84, 10. */
static void conv_layout(model *m, int64_t in, const int64_t c[3])
{
    int64_t extent = 32;
    for (int l = 0; l < 3; l++) {
        m->layers[l] = (layer_spec){.conv = 1, .in = l ? c[l - 1] : in, .out = c[l],
                                    .kernel = 5, .extent = extent, .act = ACT_RELU,
                                    .pool = l < 2};
        extent = (extent - 4) / (l < 2 ? 2 : 1);
    }
    m->layers[3] = (layer_spec){.in = c[2] * extent * extent, .out = 84, .act = ACT_NONE};
    m->layers[4] = (layer_spec){.in = 84, .out = 10, .act = ACT_NONE};
    m->cfg.n_layers = 5;
    m->cfg.widths[0] = in * 32 * 32;
    m->cfg.widths[5] = 10;
    m->input_rank = 4;
    int64_t shape[4] = {m->cfg.batch, in, 32, 32};
    memcpy(m->input, shape, sizeof shape);
}

ad_status model_layout(model *m)
{
    static const int64_t lenet[3] = {6, 16, 120}, cnn[3] = {32, 64, 128};
    switch (m->cfg.arch) {
    case ARCH_MLP: mlp_layout(m); break;
    case ARCH_LENET: conv_layout(m, 1, lenet); break;
    case ARCH_CNN: conv_layout(m, 3, cnn); break;
    default:
        return ad_fail(AD_ERR_INVALID, "adtape-train: unknown model %d", (int)m->cfg.arch);
    }
    return AD_OK;
}

void model_tensor_name(const model *m, char *out, size_t size, int layer, const char *what)
{
    int k = 1;
    for (int l = 0; l < layer; l++)
        k += m->layers[l].conv == m->layers[layer].conv;
    snprintf(out, size, "%s%d.%s", m->layers[layer].conv ? "conv" : "fc", k, what);
}

int model_feedback_shape(const model *m, int l, int64_t shape[4])
{
    const layer_spec *s = &m->layers[l];
    rule_kind r = m->cfg.rule;
    int64_t classes = m->layers[m->cfg.n_layers - 1].out;
    if (r == RULE_FA || r == RULE_KP || r == RULE_BRSF || r == RULE_FRSF) {
        int64_t w[4] = {s->out, s->in, s->kernel, s->kernel};
        memcpy(shape, w, sizeof w);
        return s->conv ? 4 : 2;
    }
    if (r != RULE_DFA || l + 1 >= m->cfg.n_layers)
        return 0;
    /* DFA's B_l sends e to layer l + 1's input (BioTorch's form, ad_feedback.h). */
    const layer_spec *next = &m->layers[l + 1];
    if (next->conv) {
        int64_t b[4] = {classes, next->in, next->kernel, next->kernel};
        memcpy(shape, b, sizeof b);
        return 4;
    }
    shape[0] = next->in;
    shape[1] = classes;
    return 2;
}

/* z = layer l's weights applied to h, with its bias, as the rule records it. */
static ad_var linear(model *m, ad_tape *t, int l, ad_var h)
{
    ad_var w = ad_use(t, m->W[l]), b = ad_use(t, m->b[l]);
    ad_var B = m->B[l] && m->cfg.rule != RULE_DFA ? ad_use(t, m->B[l]) : (ad_var){0};
    if (m->layers[l].conv)
        switch (m->cfg.rule) {
        case RULE_FA: return ad_conv2d_bias_fa(t, h, w, b, B, NULL);
        case RULE_KP: return ad_conv2d_bias_kp(t, h, w, b, B, NULL);
        case RULE_USF:
            return m->cfg.usf_scaled ? ad_conv2d_bias_usf_scaled(t, h, w, b, NULL)
                                     : ad_conv2d_bias_usf(t, h, w, b, NULL);
        case RULE_BRSF:
        case RULE_FRSF: return ad_conv2d_bias_sf(t, h, w, b, B, NULL);
        default: return ad_conv2d_bias(t, h, w, b, NULL);
        }
    ad_var z;
    switch (m->cfg.rule) {
    case RULE_FA: z = ad_dense_fa(t, w, h, B); break;
    case RULE_KP: z = ad_dense_kp(t, w, h, B); break;
    case RULE_USF: z = m->cfg.usf_scaled ? ad_dense_usf_scaled(t, w, h) : ad_dense_usf(t, w, h); break;
    case RULE_BRSF:
    case RULE_FRSF: z = ad_dense_sf(t, w, h, B); break;
    default: z = ad_matmul(t, h, w, 0, 1); break;
    }
    return ad_bias_add(t, z, b);
}

ad_var model_layer(model *m, ad_tape *t, int l, ad_var h, ad_var *pre)
{
    const layer_spec *s = &m->layers[l];
    *pre = linear(m, t, l, h);
    h = s->act == ACT_RELU ? ad_relu(t, *pre) : s->act == ACT_TANH ? ad_tanh(t, *pre) : *pre;
    if (s->pool) {
        const ad_pool2d_attrs pool = AD_POOL2D_ATTRS(2, 2);
        h = ad_max_pool2d(t, h, &pool);
    }
    int last = l + 1 == m->cfg.n_layers;
    if (!last && s->conv && !m->layers[l + 1].conv)
        h = ad_flatten(t, h);
    if (!last && m->cfg.rule == RULE_DFA) {
        if (m->layers[l + 1].conv)
            h = ad_dfa_conv_hidden(t, &m->dfa, h, ad_use(t, m->B[l]), NULL);
        else
            h = ad_dfa_hidden(t, &m->dfa, h, ad_use(t, m->B[l]));
    }
    return h;
}
