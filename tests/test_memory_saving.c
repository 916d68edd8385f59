/*
** test_memory_saving.c: memory-saving sweeps (ad_tape_set_memory_saving) over every
** built-in rule. Each rule, in float32 and float64, gives bitwise the gradients and the
** loss of an ordinary sweep while buffers are reused (the high-water mark drops), with
** anomaly mode on, so a buffer read after its release holds NaN. The MLP, ad_keep, user
** rules and the API's edges are in test_memory_saving_api.c; conv layers and pooling run
** on views of the same 2-D net; the nets and sweeps both use are in support/saving_nets.c.
*/
#include <criterion/criterion.h>
#include <stdio.h>

#include "ad_feedback.h"
#include "saving_nets.h"
#include "support.h"

/* ---- every built-in rule: saving + anomaly vs an ordinary sweep ---- */

static ad_var squared(ad_tape *t, ad_var a) { return ad_mul(t, a, a); }
/* a (a2' a)': both inputs intermediate, with transposes. */
static ad_var pair(ad_tape *t, ad_var a, ad_var a2)
{
    return ad_matmul(t, a, ad_matmul(t, a2, a, 1, 0), 0, 1);
}
#define HEAD ad_matmul(t, ad_tanh(t, A), U(w2), 0, 1)

CASE(matmul, net_tail(t, s, pair(t, A, A2)))
CASE(add, net_tail(t, s, ad_add(t, A, A2)))
CASE(sub, net_tail(t, s, ad_sub(t, A, A2)))
CASE(mul, net_tail(t, s, ad_mul(t, A, A2)))
CASE(mul_same, net_tail(t, s, squared(t, A)))
CASE(scale, net_tail(t, s, ad_scale(t, A, -0.75)))
CASE(bias_add, net_tail(t, s, ad_bias_add(t, A, U(b))))
CASE(tanh, net_tail(t, s, ad_tanh(t, A)))
CASE(relu, net_tail(t, s, ad_relu(t, A)))
CASE(sigmoid, net_tail(t, s, ad_sigmoid(t, A)))
CASE(exp, net_tail(t, s, ad_exp(t, A)))
CASE(log, net_tail(t, s, ad_log(t, ad_softplus(t, A)))) /* positive, so anomaly mode passes */
CASE(softplus, net_tail(t, s, ad_softplus(t, A)))
CASE(leaky_relu, net_tail(t, s, ad_leaky_relu(t, A, &(ad_leaky_relu_attrs){0.25})))
CASE(stop_gradient, net_tail(t, s, ad_add(t, A, ad_stop_gradient(t, A2))))
CASE(bias_relu, net_tail(t, s, ad_bias_relu(t, A, U(b))))
CASE(bias_tanh, net_tail(t, s, ad_bias_tanh(t, A, U(b))))
CASE(sum, squared(t, ad_sum(t, HEAD)))
CASE(mean, squared(t, ad_mean(t, HEAD)))
CASE(mse, ad_scale(t, ad_mse(t, HEAD, U(target)), 0.5))
CASE(sce, ad_scale(t, ad_softmax_cross_entropy(t, HEAD, U(labels)), 2.0))
CASE(sce_none, ad_sum(t, ad_softmax_cross_entropy_ex(t, HEAD, U(labels), AD_REDUCTION_NONE)))
CASE(sce_sum, ad_scale(t, ad_softmax_cross_entropy_ex(t, HEAD, U(labels), AD_REDUCTION_SUM),
                       0.5))
CASE(bce, ad_scale(t, ad_bce_with_logits(t, HEAD, ad_sigmoid(t, U(target))), 2.0))
CASE(bce_none, ad_sum(t, ad_bce_with_logits_ex(t, HEAD, ad_sigmoid(t, U(target)),
                                               AD_REDUCTION_NONE)))
CASE(fa, net_tail(t, s, ad_dense_fa(t, U(w3), A, U(fb))))
CASE(usf, net_tail(t, s, ad_dense_usf(t, U(w3), A)))
CASE(usf_scaled, net_tail(t, s, ad_dense_usf_scaled(t, U(w3), A)))
CASE(sf, net_tail(t, s, ad_dense_sf(t, U(w3), A, U(fb))))
CASE(kp, net_tail(t, s, ad_dense_kp(t, U(w3), A, U(fbp))))
/* Scaled up so some of the cotangent it clamps lies outside [-1, 1]. */
CASE(clamp_grad, ad_scale(t, net_tail(t, s, ad_clamp_grad(t, ad_tanh(t, A), NULL)), 50.0))
/* Conv layers on views of the 2-D net: A (B x 16) as B images of 1 x 4 x 4 or of 16 x 1
** x 1, kernels reshaped from b (16: 4 x 1 x 2 x 2) and w3 (256: 16 x 16 x 1 x 1). */
#define IMG(v, c, h) ad_reshape(t, (v), 4, TS_SHAPE(BATCH, (c), (h), (h)))
#define KERNEL(v, co, ci, k) ad_reshape(t, (v), 4, TS_SHAPE((co), (ci), (k), (k)))
#define STRIDE2 (&(ad_conv2d_attrs){2, 2, 0, 0, 1, 1, 1})
CASE(conv, net_tail(t, s, ad_flatten(t, ad_conv2d(t, IMG(A, 1, 4), KERNEL(U(b), 4, 1, 2),
                                                  STRIDE2))))
CASE(conv_bias, net_tail(t, s, ad_flatten(t, ad_conv2d_bias(t, IMG(ad_tanh(t, A), 16, 1),
                                                            KERNEL(U(w3), 16, 16, 1), U(b),
                                                            NULL))))
CASE(conv_fa, net_tail(t, s, ad_flatten(t, ad_conv2d_fa(t, IMG(A, 16, 1),
                                                        KERNEL(U(w3), 16, 16, 1),
                                                        KERNEL(U(fb), 16, 16, 1), NULL))))
CASE(conv_bias_fa, net_tail(t, s, ad_flatten(t, ad_conv2d_bias_fa(t, IMG(A, 16, 1),
                                                                  KERNEL(U(w3), 16, 16, 1),
                                                                  U(b), KERNEL(U(fb), 16, 16, 1),
                                                                  NULL))))
CASE(conv_usf, net_tail(t, s, ad_flatten(t, ad_conv2d_usf(t, IMG(A, 16, 1),
                                                          KERNEL(U(w3), 16, 16, 1), NULL))))
CASE(conv_bias_usf, net_tail(t, s, ad_flatten(t, ad_conv2d_bias_usf(t, IMG(A, 16, 1),
                                                                    KERNEL(U(w3), 16, 16, 1),
                                                                    U(b), NULL))))
CASE(conv_usf_scaled, net_tail(t, s, ad_flatten(t, ad_conv2d_usf_scaled(t, IMG(A, 16, 1),
                                                          KERNEL(U(w3), 16, 16, 1), NULL))))
CASE(conv_bias_usf_scaled, net_tail(t, s, ad_flatten(t, ad_conv2d_bias_usf_scaled(
                                              t, IMG(A, 16, 1), KERNEL(U(w3), 16, 16, 1),
                                              U(b), NULL))))
CASE(conv_sf, net_tail(t, s, ad_flatten(t, ad_conv2d_sf(t, IMG(A, 16, 1),
                                                        KERNEL(U(w3), 16, 16, 1),
                                                        KERNEL(U(fb), 16, 16, 1), NULL))))
CASE(conv_bias_sf, net_tail(t, s, ad_flatten(t, ad_conv2d_bias_sf(t, IMG(A, 16, 1),
                                                                  KERNEL(U(w3), 16, 16, 1),
                                                                  U(b), KERNEL(U(fb), 16, 16, 1),
                                                                  NULL))))
CASE(conv_kp, net_tail(t, s, ad_flatten(t, ad_conv2d_kp(t, IMG(A, 16, 1),
                                                        KERNEL(U(w3), 16, 16, 1),
                                                        KERNEL(U(fbp), 16, 16, 1), NULL))))
CASE(conv_bias_kp, net_tail(t, s, ad_flatten(t, ad_conv2d_bias_kp(t, IMG(A, 16, 1),
                                                                  KERNEL(U(w3), 16, 16, 1),
                                                                  U(b), KERNEL(U(fbp), 16, 16, 1),
                                                                  NULL))))
/* Pooling, on views of A or on conv outputs (whose pullback reads neither), so a pool
** rule that reads an x or y it declared unread meets NaN: WIDE is B x 16 x 4 x 4 (a 1x1
** conv, kernel b as 16 x 1 x 1 x 1). Windows: 2x2 stride 2 (their own loops), 2x2
** stride 1 (overlapping), 3x3 stride 1 padded by 1; the results are B x 16 again. */
#define POOL(k, st, pad) (&(ad_pool2d_attrs){(k), (k), (st), (st), (pad), (pad)})
#define WIDE ad_conv2d(t, IMG(A, 1, 4), KERNEL(U(b), 16, 1, 1), NULL)
CASE(pool_2x2, net_tail(t, s, ad_flatten(t, ad_avg_pool2d(t, ad_max_pool2d(t, WIDE,
                                                                           POOL(2, 2, 0)),
                                                          POOL(2, 2, 0)))))
CASE(max_pool_overlap,
     net_tail(t, s, ad_flatten(t, ad_max_pool2d(t, ad_conv2d(t, IMG(A, 1, 4),
                                                             KERNEL(U(b), 4, 1, 2), NULL),
                                                POOL(2, 1, 0)))))
CASE(max_pool_pad, net_tail(t, s, ad_flatten(t, ad_max_pool2d(t, IMG(A, 1, 4), POOL(3, 1, 1)))))
CASE(avg_pool_pad, net_tail(t, s, ad_flatten(t, ad_avg_pool2d(t, IMG(A, 1, 4), POOL(3, 1, 1)))))
CASE(global_avg_pool, net_tail(t, s, ad_flatten(t, ad_global_avg_pool2d(t, WIDE))))

/* DFA with two hidden layers: one after an activation, one straight on a matmul output. */
static ad_var c_dfa(ad_tape *t, void *user)
{
    net *s = user;
    ad_var h1 = ad_dfa_hidden(t, &s->dfa, ad_tanh(t, A), U(fb));
    ad_var h2 = ad_dfa_hidden(t, &s->dfa, ad_matmul(t, h1, U(w2), 0, 1), U(fb));
    ad_var y = ad_dfa_output(t, &s->dfa, ad_matmul(t, h2, U(w3), 0, 1));
    return ad_softmax_cross_entropy(t, y, U(labels));
}

/* DFA into a conv layer: A as B images of 4 x 2 x 2, B and the conv's kernel 16 x 4 x 2 x
** 2 (fb, w3), the conv's 1 x 1 grid flattened to the 16 logits that give e. */
static ad_var c_dfa_conv(ad_tape *t, void *user)
{
    net *s = user;
    ad_var h = ad_dfa_conv_hidden(t, &s->dfa, IMG(ad_tanh(t, A), 4, 2), KERNEL(U(fb), 16, 4, 2),
                                  NULL);
    ad_var z = ad_flatten(t, ad_conv2d(t, h, KERNEL(U(w3), 16, 4, 2), NULL));
    return ad_softmax_cross_entropy(t, ad_dfa_output(t, &s->dfa, z), U(labels));
}

static const struct {
    const char *name;
    ad_loss_fn record;
    ad_primal_fn op; /* its pullback must have run in the saving sweep; NULL: a rule whose
                        pullback never runs (stop_gradient's nondiff input) */
} cases[] = {
    {"matmul", c_matmul, ad_op_matmul},       {"add", c_add, ad_op_add},
    {"sub", c_sub, ad_op_sub},                {"mul", c_mul, ad_op_mul},
    {"mul(x, x)", c_mul_same, ad_op_mul},     {"scale", c_scale, ad_op_scale},
    {"bias_add", c_bias_add, ad_op_bias_add}, {"tanh", c_tanh, ad_op_tanh},
    {"relu", c_relu, ad_op_relu},             {"sigmoid", c_sigmoid, ad_op_sigmoid},
    {"exp", c_exp, ad_op_exp},                {"log", c_log, ad_op_log},
    {"softplus", c_softplus, ad_op_softplus}, {"leaky_relu", c_leaky_relu, ad_op_leaky_relu},
    {"stop_gradient", c_stop_gradient, NULL},
    {"bias_relu", c_bias_relu, ad_op_bias_relu},
    {"bias_tanh", c_bias_tanh, ad_op_bias_tanh},
    {"sum", c_sum, ad_op_sum},                {"mean", c_mean, ad_op_mean},
    {"mse", c_mse, ad_op_mse},                {"sce", c_sce, ad_op_softmax_cross_entropy},
    {"sce none", c_sce_none, ad_op_softmax_cross_entropy},
    {"sce sum", c_sce_sum, ad_op_softmax_cross_entropy},
    {"bce", c_bce, ad_op_bce_with_logits},
    {"bce none", c_bce_none, ad_op_bce_with_logits},
    {"dense_fa", c_fa, ad_op_dense_fa},       {"dense_usf", c_usf, ad_op_dense_usf},
    {"dense_usf_scaled", c_usf_scaled, ad_op_dense_usf_scaled},
    {"dense_sf", c_sf, ad_op_dense_sf},       {"dense_kp", c_kp, ad_op_dense_kp},
    {"dfa_output", c_dfa, ad_op_dfa_output},  {"dfa_hidden", c_dfa, ad_op_dfa_hidden},
    {"dfa_conv_hidden", c_dfa_conv, ad_op_dfa_conv_hidden},
    {"clamp_grad", c_clamp_grad, ad_op_clamp_grad},
    {"conv2d", c_conv, ad_op_conv2d},         {"conv2d_bias", c_conv_bias, ad_op_conv2d_bias},
    {"conv2d_fa", c_conv_fa, ad_op_conv2d_fa},
    {"conv2d_bias_fa", c_conv_bias_fa, ad_op_conv2d_bias_fa},
    {"conv2d_usf", c_conv_usf, ad_op_conv2d_usf},
    {"conv2d_bias_usf", c_conv_bias_usf, ad_op_conv2d_bias_usf},
    {"conv2d_usf_scaled", c_conv_usf_scaled, ad_op_conv2d_usf_scaled},
    {"conv2d_bias_usf_scaled", c_conv_bias_usf_scaled, ad_op_conv2d_bias_usf_scaled},
    {"conv2d_sf", c_conv_sf, ad_op_conv2d_sf},
    {"conv2d_bias_sf", c_conv_bias_sf, ad_op_conv2d_bias_sf},
    {"conv2d_kp", c_conv_kp, ad_op_conv2d_kp},
    {"conv2d_bias_kp", c_conv_bias_kp, ad_op_conv2d_bias_kp},
    {"reshape", c_conv, ad_op_reshape},       {"flatten", c_conv_bias, ad_op_flatten},
    {"max_pool2d 2x2", c_pool_2x2, ad_op_max_pool2d},
    {"avg_pool2d 2x2", c_pool_2x2, ad_op_avg_pool2d},
    {"max_pool2d overlapping", c_max_pool_overlap, ad_op_max_pool2d},
    {"max_pool2d padded", c_max_pool_pad, ad_op_max_pool2d},
    {"avg_pool2d padded", c_avg_pool_pad, ad_op_avg_pool2d},
    {"global_avg_pool2d", c_global_avg_pool, ad_op_global_avg_pool2d},
};

Test(memory_saving, every_builtin_rule_gives_bitwise_the_ordinary_gradients_f32_and_f64)
{
    for (int d = 0; d < 2; d++)
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            char what[64];
            snprintf(what, sizeof what, "%s %s", cases[c].name, d ? "f64" : "f32");
            net s;
            net_open(&s, d ? AD_F64 : AD_F32, 40 + c);
            run plain = net_sweep(s.g.ps, cases[c].record, &s, 0, what);
            run save = net_sweep(s.g.ps, cases[c].record, &s, 1, what);
            cr_assert(!cases[c].op || ad_tape_pullback_count(save.t, cases[c].op) > 0,
                      "%s: no pullback", what);
            same_grads(s.g.ps, &plain, &save, what);
            const ad_tensor *l0 = ad_value(plain.t, plain.loss);
            const ad_tensor *l1 = ad_value(save.t, save.loss);
            cr_assert(l1 && ts_get(l0, 0) == ts_get(l1, 0), "%s: loss differs", what);
            size_t hw0 = ad_tape_get_stats(plain.t).high_water;
            size_t hw1 = ad_tape_get_stats(save.t).high_water;
            cr_assert_lt(hw1, hw0, "%s: nothing reused (high water %zu, %zu without)", what,
                         hw1, hw0);
            run_drop(&plain);
            run_drop(&save);
            bag_close(&s.g);
        }
}
