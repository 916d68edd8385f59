/*
** test_train.c: every learning rule of adtape-train learns Fashion-MNIST a little:
** 3000 training images, 2 epochs, a 784-64-64-10 tanh network. Chance is 10%. And the
** training tape's memory saving changes no parameter bit and leaves alignment working.
*/
#include <string.h>
#include <criterion/criterion.h>
#include <math.h>

#include "model.h"
#include "support.h"

#define DATA "/usr/share/datasets/fashion-mnist/"

static ad_tensor *images, *labels, *test_images, *test_labels;

static void load(void)
{
    ad_status rc = ad_idx_read_pair(DATA "train-images-idx3-ubyte.gz",
                                    DATA "train-labels-idx1-ubyte.gz", 10, &images, &labels);
    cr_assert_eq(rc, AD_OK, "%s (scripts/test installs dataset-fashion-mnist)",
                 ad_last_error());
    rc = ad_idx_read_pair(DATA "t10k-images-idx3-ubyte.gz", DATA "t10k-labels-idx1-ubyte.gz",
                          10, &test_images, &test_labels);
    cr_assert_eq(rc, AD_OK, "%s", ad_last_error());
}

static void unload(void)
{
    ad_tensor_free(images);
    ad_tensor_free(labels);
    ad_tensor_free(test_images);
    ad_tensor_free(test_labels);
}

static void train_rule_ex(rule_kind rule, int usf_scaled)
{
    enum { TRAIN = 3000, BATCH = 32, EPOCHS = 2, STEPS = TRAIN / BATCH };
    model m;
    model_config cfg = {.rule = rule, .n_layers = 3, .widths = {784, 64, 64, 10}, .seed = 5,
                        .batch = BATCH,
                        .optim = {.kind = AD_OPT_MOMENTUM, .lr = 0.01, .momentum = 0.9,
                                  .weight_decay = rule == RULE_KP ? 1e-4 : 0},
                        .usf_scaled = usf_scaled};
    cr_assert_eq(model_init(&m, &cfg), AD_OK, "%s", ad_last_error());
    int64_t idx[TRAIN];
    for (int64_t i = 0; i < TRAIN; i++)
        idx[i] = i;
    double first = 0, last = 0, acc;
    for (int e = 0; e < EPOCHS; e++)
        for (int s = 0; s < STEPS; s++) {
            double loss;
            cr_assert_eq(model_step(&m, images, labels, idx + s * BATCH, &loss), AD_OK,
                         "%s step %d: %s", rule_name(rule), s, ad_last_error());
            first += e == 0 && s < 20 ? loss / 20 : 0;
            last += e == EPOCHS - 1 && s >= STEPS - 20 ? loss / 20 : 0;
        }
    ad_tensor view_x, view_y;
    cr_assert_eq(ad_tensor_init(&view_x, AD_F32, 2, TS_SHAPE(1000, 784), test_images->data),
                 AD_OK);
    cr_assert_eq(ad_tensor_init(&view_y, AD_I32, 1, TS_SHAPE(1000), test_labels->data), AD_OK);
    cr_assert_eq(model_accuracy(&m, &view_x, &view_y, &acc), AD_OK, "%s", ad_last_error());
    cr_expect_gt(acc, 0.55, "%s: test accuracy %.3f", rule_name(rule), acc);
    cr_expect_lt(last, 0.7 * first, "%s: loss %.3f -> %.3f", rule_name(rule), first, last);
    model_free(&m);
}

static void train_rule(rule_kind rule) { train_rule_ex(rule, 0); }

TestSuite(train, .init = load, .fini = unload, .timeout = 60);

Test(train, backprop_learns) { train_rule(RULE_BP); }
Test(train, feedback_alignment_learns) { train_rule(RULE_FA); }
Test(train, direct_feedback_alignment_learns) { train_rule(RULE_DFA); }
Test(train, usf_sign_symmetry_learns) { train_rule(RULE_USF); }
Test(train, brsf_learns) { train_rule(RULE_BRSF); }
Test(train, frsf_learns) { train_rule(RULE_FRSF); }
Test(train, kolen_pollack_learns) { train_rule(RULE_KP); }
Test(train, frozen_hidden_control_learns_its_output_layer) { train_rule(RULE_FROZEN); }

static int same_params(const model *a, const model *b)
{
    int same = 1;
    for (int l = 0; l < a->cfg.n_layers; l++)
        same &= !memcmp(a->W[l]->data, b->W[l]->data, (size_t)a->W[l]->size * sizeof(float)) &&
                !memcmp(a->b[l]->data, b->b[l]->data, (size_t)a->b[l]->size * sizeof(float));
    return same;
}

/* model_init turns memory saving on for the training tape; a twin with it off must
** train bitwise the same, and model_alignment (two sweeps, cotangents read after) must
** give the twin's angles and leave the next step bitwise the same too. */
static void saving_is_invisible(rule_kind rule)
{
    enum { BATCH = 32, STEPS = 8 };
    model_config cfg = {.rule = rule, .n_layers = 3, .widths = {784, 32, 32, 10}, .seed = 9,
                        .batch = BATCH, .optim = {.kind = AD_OPT_DESCENT, .lr = 0.05}};
    model m[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(model_init(&m[i], &cfg), AD_OK, "%s", ad_last_error());
    ad_tape_set_memory_saving(m[1].tape, 0);
    int64_t idx[BATCH * (STEPS + 1)];
    for (int64_t i = 0; i < BATCH * (STEPS + 1); i++)
        idx[i] = i;
    double loss[2], grad_angle[2][MODEL_MAX_LAYERS], weight_angle[2][MODEL_MAX_LAYERS];
    for (int s = 0; s < STEPS; s++)
        for (int i = 0; i < 2; i++)
            cr_assert_eq(model_step(&m[i], images, labels, idx + s * BATCH, &loss[i]), AD_OK,
                         "%s", ad_last_error());
    cr_expect(same_params(&m[0], &m[1]), "%s: parameters differ after %d steps",
              rule_name(rule), STEPS);
    cr_expect_eq(loss[0], loss[1]);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(model_alignment(&m[i], images, labels, 64, grad_angle[i], weight_angle[i]),
                     AD_OK, "%s", ad_last_error());
    for (int l = 0; l < 2; l++) {
        cr_expect(isfinite(grad_angle[0][l]), "%s: layer %d angle %g", rule_name(rule), l,
                  grad_angle[0][l]);
        cr_expect(!memcmp(&grad_angle[0][l], &grad_angle[1][l], sizeof(double)),
                  "%s: layer %d angle %.17g vs %.17g", rule_name(rule), l, grad_angle[0][l],
                  grad_angle[1][l]);
    }
    for (int i = 0; i < 2; i++)
        cr_assert_eq(model_step(&m[i], images, labels, idx + STEPS * BATCH, &loss[i]), AD_OK,
                     "%s", ad_last_error());
    cr_expect(same_params(&m[0], &m[1]), "%s: parameters differ after the alignment",
              rule_name(rule));
    for (int i = 0; i < 2; i++)
        model_free(&m[i]);
}

Test(train, memory_saving_changes_no_bit_and_alignment_still_works)
{
    saving_is_invisible(RULE_BP);
    saving_is_invisible(RULE_FA);
    saving_is_invisible(RULE_DFA);
}

/* The weight metrics by loops written here: the feedback each rule defines, its angle
** with W and |F| / |W|, for every weight layer; NaN where the rule has none. */
static void expected_metrics(const model *m, int l, double *angle, double *ratio)
{
    double dot = 0, nf = 0, nw = 0;
    for (int64_t i = 0; i < m->W[l]->size; i++) {
        double w = ts_get(m->W[l], i), s = (w > 0) - (w < 0), f;
        switch (m->cfg.rule) {
        case RULE_FA: case RULE_KP: f = ts_get(m->B[l], i); break;
        case RULE_BRSF: case RULE_FRSF: f = s * fabs(ts_get(m->B[l], i)); break;
        default: /* uSF; scaled: Xavier's std, sqrt(2 / (in + out)), for a dense W */
            f = m->cfg.usf_scaled ? s * sqrt(2.0 / (double)(m->W[l]->shape[0] +
                                                             m->W[l]->shape[1]))
                                  : s;
        }
        dot += f * w, nf += f * f, nw += w * w;
    }
    *angle = acos(dot / sqrt(nf * nw)) * 180.0 / acos(-1.0);
    *ratio = sqrt(nf / nw);
}

Test(train, weight_angle_and_norm_ratio_per_layer_follow_each_rules_feedback)
{
    const rule_kind rules[] = {RULE_FA, RULE_KP, RULE_USF, RULE_BRSF, RULE_FRSF, RULE_BP,
                               RULE_DFA, RULE_FROZEN};
    for (size_t k = 0; k < sizeof rules / sizeof rules[0]; k++) {
        model m;
        model_config cfg = {.rule = rules[k], .n_layers = 3, .widths = {20, 12, 8, 5},
                            .seed = 3, .batch = 4,
                            .optim = {.kind = AD_OPT_DESCENT, .lr = 0.05}};
        cr_assert_eq(model_init(&m, &cfg), AD_OK, "%s", ad_last_error());
        double angle[MODEL_MAX_LAYERS], ratio[MODEL_MAX_LAYERS];
        model_weight_metrics(&m, angle, ratio);
        for (int l = 0; l < 3; l++) {
            if (rules[k] == RULE_BP || rules[k] == RULE_DFA || rules[k] == RULE_FROZEN) {
                cr_expect(isnan(angle[l]) && isnan(ratio[l]), "%s layer %d: %g %g",
                          rule_name(rules[k]), l, angle[l], ratio[l]);
                continue;
            }
            double a, r;
            expected_metrics(&m, l, &a, &r);
            cr_expect(fabs(angle[l] - a) < 1e-9 && fabs(ratio[l] - r) < 1e-12,
                      "%s layer %d: angle %g (want %g), ratio %g (want %g)",
                      rule_name(rules[k]), l, angle[l], a, ratio[l], r);
            /* Sign feedback agrees in sign with W everywhere: well under 90 degrees;
            ** random B at init is near 90, and sign(W) is far larger than W. */
            if (rules[k] == RULE_USF)
                cr_expect(angle[l] < 45 && ratio[l] > 2, "uSF layer %d: %g %g", l, angle[l],
                          ratio[l]);
            if (rules[k] == RULE_FA)
                cr_expect(angle[l] > 60 && angle[l] < 120, "FA layer %d: %g", l, angle[l]);
        }
        model_free(&m);
    }
}

Test(train, scaled_usf_feedback_is_sign_w_times_xaviers_std_and_learns)
{
    model m;
    model_config cfg = {.rule = RULE_USF, .usf_scaled = 1, .n_layers = 3,
                        .widths = {20, 12, 8, 5}, .seed = 3, .batch = 4,
                        .optim = {.kind = AD_OPT_DESCENT, .lr = 0.05}};
    cr_assert_eq(model_init(&m, &cfg), AD_OK, "%s", ad_last_error());
    double angle[MODEL_MAX_LAYERS], ratio[MODEL_MAX_LAYERS], plain[MODEL_MAX_LAYERS];
    model_weight_metrics(&m, angle, ratio);
    m.cfg.usf_scaled = 0;
    model_weight_metrics(&m, NULL, plain);
    m.cfg.usf_scaled = 1;
    for (int l = 0; l < 3; l++) {
        double a, r;
        expected_metrics(&m, l, &a, &r);
        cr_expect(fabs(angle[l] - a) < 1e-9 && fabs(ratio[l] - r) < 1e-12,
                  "layer %d: angle %g (want %g), ratio %g (want %g)", l, angle[l], a,
                  ratio[l], r);
        /* Glorot-uniform W has E[w^2] = s^2, so |s sign(W)| / |W| is near 1 at init;
        ** unscaled it is near 1 / s. */
        cr_expect(ratio[l] > 0.6 && ratio[l] < 1.6, "layer %d: scaled ratio %g", l, ratio[l]);
        cr_expect(plain[l] > 2 * ratio[l], "layer %d: unscaled %g", l, plain[l]);
    }
    model_free(&m);
}

Test(train, scaled_usf_learns) { train_rule_ex(RULE_USF, 1); }

/* --bias-init: every layer's bias starts at the value; the weights and feedback drawn
** from the seed are the same as with biases 0 (the fill draws nothing). */
Test(train, bias_init_fills_every_bias_and_draws_nothing)
{
    model zero, one;
    model_config cfg = {.rule = RULE_FA, .n_layers = 3, .widths = {20, 12, 8, 5}, .seed = 3,
                        .batch = 4, .optim = {.kind = AD_OPT_DESCENT, .lr = 0.05}};
    cr_assert_eq(model_init(&zero, &cfg), AD_OK, "%s", ad_last_error());
    cfg.bias_init = 1.0;
    cr_assert_eq(model_init(&one, &cfg), AD_OK, "%s", ad_last_error());
    for (int l = 0; l < 3; l++) {
        const float *b0 = zero.b[l]->data, *b1 = one.b[l]->data;
        for (int64_t i = 0; i < one.b[l]->shape[0]; i++)
            cr_expect(b0[i] == 0.0f && b1[i] == 1.0f, "layer %d bias %lld: %g, %g", l,
                      (long long)i, b0[i], b1[i]);
        size_t wn = (size_t)(one.W[l]->shape[0] * one.W[l]->shape[1]) * sizeof(float);
        cr_expect(memcmp(zero.W[l]->data, one.W[l]->data, wn) == 0, "layer %d W", l);
        cr_expect(memcmp(zero.B[l]->data, one.B[l]->data, wn) == 0, "layer %d B", l);
    }
    model_free(&zero);
    model_free(&one);
}
