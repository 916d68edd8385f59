/*
** test_train_lenet.c: adtape-train's convolutional networks (examples/train/layers.c).
** BioTorch's LeNet has the layer shapes of its paper, every rule records and steps on
** it, the rules that train at the MLP's learning rates learn 1,500 Fashion-MNIST images
** a little in one epoch (chance is 10%), and the training tape's memory saving changes
** no parameter bit of a conv net either. Weight decay reaches every parameter as
** PyTorch's SGD weight_decay does: conv and dense weights, biases, KP's B.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "data.h"
#include "model.h"
#include "support.h"

#define DATA "/usr/share/datasets/fashion-mnist/"

enum { TRAIN = 1500, TEST = 500, BATCH = 32 };

static ad_tensor *images, *labels, *test_images, *test_labels;

static void load(void)
{
    ad_tensor *raw, *raw_test;
    ad_status rc = ad_idx_read_pair(DATA "train-images-idx3-ubyte.gz",
                                    DATA "train-labels-idx1-ubyte.gz", 10, &raw, &labels);
    cr_assert_eq(rc, AD_OK, "%s (scripts/test installs dataset-fashion-mnist)",
                 ad_last_error());
    rc = ad_idx_read_pair(DATA "t10k-images-idx3-ubyte.gz", DATA "t10k-labels-idx1-ubyte.gz",
                          10, &raw_test, &test_labels);
    cr_assert_eq(rc, AD_OK, "%s", ad_last_error());
    cr_assert_eq(data_lenet_images(raw, TRAIN, &images), AD_OK, "%s", ad_last_error());
    cr_assert_eq(data_lenet_images(raw_test, TEST, &test_images), AD_OK, "%s",
                 ad_last_error());
    ad_tensor_free(raw);
    ad_tensor_free(raw_test);
}

static void unload(void)
{
    ad_tensor_free(images);
    ad_tensor_free(labels);
    ad_tensor_free(test_images);
    ad_tensor_free(test_labels);
}

TestSuite(train_lenet, .init = load, .fini = unload, .timeout = 60);

static model_config lenet_config(rule_kind rule, double lr)
{
    return (model_config){.arch = ARCH_LENET, .rule = rule, .seed = 3, .batch = BATCH,
                          .optim = {.kind = AD_OPT_MOMENTUM, .lr = lr, .momentum = 0.9,
                                    .weight_decay = rule == RULE_KP ? 1e-4 : 0}};
}

static void expect_shape(const ad_tensor *t, int ndim, const int64_t *shape, const char *what)
{
    cr_assert_not_null(t, "%s missing", what);
    cr_expect_eq(t->ndim, ndim, "%s: rank %d", what, t->ndim);
    for (int d = 0; d < ndim && d < t->ndim; d++)
        cr_expect_eq(t->shape[d], shape[d], "%s: extent %d is %lld, not %lld", what, d,
                     (long long)t->shape[d], (long long)shape[d]);
}

/* LeNet-5 as BioTorch builds it: 6, 16 and 120 maps of 5 x 5 (32 -> 28 -> 14 -> 10 ->
** 5 -> 1), then 120 -> 84 -> 10. FA's B has W's shape; DFA's B_l sends e (10 classes)
** to layer l + 1's input: through a 5 x 5 kernel onto the 6 and 16 maps, densely onto
** the 120 and 84 units. Names as PyTorch's state_dict of the same network. */
Test(train_lenet, layers_have_the_published_shapes_and_names)
{
    static const int64_t w[5][4] = {{6, 1, 5, 5}, {16, 6, 5, 5}, {120, 16, 5, 5}, {84, 120},
                                    {10, 84}};
    static const int rank[5] = {4, 4, 4, 2, 2};
    static const char *const names[5] = {"conv1", "conv2", "conv3", "fc1", "fc2"};
    model m;
    model_config cfg = lenet_config(RULE_FA, 0.01);
    cr_assert_eq(model_init(&m, &cfg), AD_OK, "%s", ad_last_error());
    cr_assert_eq(m.cfg.n_layers, 5);
    for (int l = 0; l < 5; l++) {
        char name[32];
        expect_shape(m.W[l], rank[l], w[l], "W");
        expect_shape(m.B[l], rank[l], w[l], "FA's B");
        expect_shape(m.b[l], 1, w[l], "b");
        model_tensor_name(&m, name, sizeof name, l, "weight");
        cr_expect(strncmp(name, names[l], strlen(names[l])) == 0 &&
                      strcmp(name + strlen(names[l]), ".weight") == 0,
                  "layer %d is named %s", l, name);
    }
    model_free(&m);

    static const int64_t dfa_b[4][4] = {{10, 6, 5, 5}, {10, 16, 5, 5}, {120, 10}, {84, 10}};
    cfg = lenet_config(RULE_DFA, 0.01);
    cr_assert_eq(model_init(&m, &cfg), AD_OK, "%s", ad_last_error());
    for (int l = 0; l < 4; l++)
        expect_shape(m.B[l], l < 2 ? 4 : 2, dfa_b[l], "DFA's B");
    cr_expect_null(m.B[4], "the output layer gets e itself");
    model_free(&m);
}

/* Steps on the first `steps` batches; returns the mean loss of the first and last 10. */
static void run_epoch(model *m, int steps, double *first, double *last)
{
    int64_t idx[TRAIN];
    for (int64_t i = 0; i < TRAIN; i++)
        idx[i] = i;
    *first = *last = 0;
    for (int s = 0; s < steps; s++) {
        double loss;
        cr_assert_eq(model_step(m, images, labels, idx + s * BATCH, &loss), AD_OK,
                     "%s step %d: %s", rule_name(m->cfg.rule), s, ad_last_error());
        cr_assert(isfinite(loss), "%s step %d: loss %g", rule_name(m->cfg.rule), s, loss);
        *first += s < 10 ? loss / 10 : 0;
        *last += s >= steps - 10 ? loss / 10 : 0;
    }
}

static void learns(rule_kind rule, double lr, double min_accuracy, double loss_ratio)
{
    model m;
    model_config cfg = lenet_config(rule, lr);
    double first, last, acc;
    cr_assert_eq(model_init(&m, &cfg), AD_OK, "%s", ad_last_error());
    run_epoch(&m, TRAIN / BATCH, &first, &last);
    cr_assert_eq(model_accuracy(&m, test_images, test_labels, &acc), AD_OK, "%s",
                 ad_last_error());
    cr_expect_gt(acc, min_accuracy, "%s: test accuracy %.3f", rule_name(rule), acc);
    cr_expect_lt(last, loss_ratio * first, "%s: loss %.3f -> %.3f", rule_name(rule), first, last);
    model_free(&m);
}

Test(train_lenet, backprop_learns) { learns(RULE_BP, 0.01, 0.5, 0.85); }
Test(train_lenet, brsf_learns) { learns(RULE_BRSF, 0.01, 0.35, 0.85); }
Test(train_lenet, frsf_learns) { learns(RULE_FRSF, 0.01, 0.35, 0.85); }
/* Only the output layer trains, on random conv features: slowly. */
Test(train_lenet, frozen_control_learns_its_output_layer)
{
    learns(RULE_FROZEN, 0.03, 0.2, 0.99);
}

/* FA, DFA, KP and unscaled uSF need other learning rates or BioTorch's gradient
** clamping on LeNet (uSF's sign(W) is far larger than W, so its signal grows through
** the layers; DFA's broadcast error sums over the whole output grid), so here they only
** record and take finite steps at a small rate. */
Test(train_lenet, fa_dfa_kp_and_usf_record_and_step)
{
    static const rule_kind rules[4] = {RULE_FA, RULE_DFA, RULE_KP, RULE_USF};
    for (int i = 0; i < 4; i++) {
        model m;
        model_config cfg = lenet_config(rules[i], 1e-4);
        double first, last;
        cr_assert_eq(model_init(&m, &cfg), AD_OK, "%s", ad_last_error());
        run_epoch(&m, 10, &first, &last);
        model_free(&m);
    }
}

static int same_params(const model *a, const model *b)
{
    int same = 1;
    for (int l = 0; l < a->cfg.n_layers; l++)
        same &= !memcmp(a->W[l]->data, b->W[l]->data, (size_t)a->W[l]->size * sizeof(float)) &&
                !memcmp(a->b[l]->data, b->b[l]->data, (size_t)a->b[l]->size * sizeof(float));
    return same;
}

/* As test_train's MLP check: a twin with memory saving off trains bitwise the same,
** and the alignment's two sweeps give finite, equal angles at every hidden layer. */
static void saving_is_invisible(rule_kind rule)
{
    enum { STEPS = 4 };
    model_config cfg = lenet_config(rule, 1e-3);
    model m[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(model_init(&m[i], &cfg), AD_OK, "%s", ad_last_error());
    ad_tape_set_memory_saving(m[1].tape, 0);
    int64_t idx[BATCH * STEPS];
    for (int64_t i = 0; i < BATCH * STEPS; i++)
        idx[i] = i;
    double loss[2], angle[2][MODEL_MAX_LAYERS], weight_angle[2][MODEL_MAX_LAYERS];
    for (int s = 0; s < STEPS; s++)
        for (int i = 0; i < 2; i++)
            cr_assert_eq(model_step(&m[i], images, labels, idx + s * BATCH, &loss[i]), AD_OK,
                         "%s", ad_last_error());
    cr_expect(same_params(&m[0], &m[1]), "%s: parameters differ", rule_name(rule));
    cr_expect_eq(loss[0], loss[1]);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(model_alignment(&m[i], test_images, test_labels, 64, angle[i],
                                     weight_angle[i]),
                     AD_OK, "%s", ad_last_error());
    for (int l = 0; l < 4; l++) {
        cr_expect(isfinite(angle[0][l]) && angle[0][l] == angle[1][l],
                  "%s: layer %d angles %.17g and %.17g", rule_name(rule), l, angle[0][l],
                  angle[1][l]);
        /* backprop's own gradient is the reference: no angle between them */
        if (rule == RULE_BP)
            cr_expect_lt(angle[0][l], 1e-3, "bp: layer %d angle %g", l, angle[0][l]);
    }
    for (int i = 0; i < 2; i++)
        model_free(&m[i]);
}

Test(train_lenet, memory_saving_changes_no_bit_and_alignment_still_works)
{
    saving_is_invisible(RULE_BP);
    saving_is_invisible(RULE_FA);
    saving_is_invisible(RULE_DFA);
}

/* PyTorch's SGD weight_decay adds wd p to every parameter's gradient: with plain SGD,
** one step of a twin with decay differs from one without by exactly lr wd p, for conv
** and dense weights, biases and KP's B alike (B gets W's update and W's decay). The
** biases start at 0, so they are compared after a first step without decay. */
Test(train_lenet, weight_decay_reaches_conv_weights_biases_and_kps_b)
{
    const double lr = 0.05, wd = 0.01;
    model m[2];
    int64_t idx[2 * BATCH];
    for (int64_t i = 0; i < 2 * BATCH; i++)
        idx[i] = i;
    for (int i = 0; i < 2; i++) {
        model_config cfg = lenet_config(RULE_KP, lr);
        cfg.optim.kind = AD_OPT_DESCENT;
        cfg.optim.weight_decay = 0;
        cr_assert_eq(model_init(&m[i], &cfg), AD_OK, "%s", ad_last_error());
        double loss;
        cr_assert_eq(model_step(&m[i], images, labels, idx, &loss), AD_OK, "%s",
                     ad_last_error());
    }
    /* The same model and batch: a decay-free second step is the twin's, plus lr wd p. */
    ad_optim_free(m[1].opt);
    ad_optim_config with = ad_optim_defaults(AD_OPT_DESCENT);
    with.lr = lr, with.weight_decay = wd;
    cr_assert_eq(ad_optim_new(m[1].ps, &with, &m[1].opt), AD_OK, "%s", ad_last_error());
    ad_tensor *before[3][MODEL_MAX_LAYERS];
    for (int l = 0; l < m[0].cfg.n_layers; l++) {
        before[0][l] = ts_clone(m[0].W[l]);
        before[1][l] = ts_clone(m[0].b[l]);
        before[2][l] = ts_clone(m[0].B[l]);
    }
    for (int i = 0; i < 2; i++) {
        double loss;
        cr_assert_eq(model_step(&m[i], images, labels, idx + BATCH, &loss), AD_OK, "%s",
                     ad_last_error());
    }
    for (int l = 0; l < m[0].cfg.n_layers; l++) {
        const ad_tensor *plain[3] = {m[0].W[l], m[0].b[l], m[0].B[l]};
        const ad_tensor *decayed[3] = {m[1].W[l], m[1].b[l], m[1].B[l]};
        static const char *const what[3] = {"W", "b", "B"};
        for (int k = 0; k < 3; k++) {
            double err = 0, norm = 0; /* |difference - lr wd p| relative to |lr wd p| */
            for (int64_t i = 0; i < plain[k]->size; i++) {
                double want = lr * wd * ts_get(before[k][l], i);
                double d = ts_get(plain[k], i) - ts_get(decayed[k], i);
                err += (d - want) * (d - want), norm += want * want;
            }
            cr_expect_gt(norm, 0, "layer %d %s is all zeros", l, what[k]);
            cr_expect_lt(sqrt(err / norm), 0.01, "layer %d %s: step differs from lr wd p "
                         "by %g of it", l, what[k], sqrt(err / norm));
            ad_tensor_free(before[k][l]);
        }
    }
    for (int i = 0; i < 2; i++)
        model_free(&m[i]);
}

/* augment_pad: a step trains on the gathered batch cropped and flipped by
** ad_random_crop_flip from the caller's generator, after the draws of the images of
** other ranks before this one's (augment_skip[0]) and before those after it ([1]):
** the same images and the same generator position as drawing for the whole global
** batch, computed here independently. */
Test(train_lenet, augmentation_crops_and_flips_the_batch_from_the_callers_generator)
{
    model m;
    model_config cfg = lenet_config(RULE_FA, 0.0); /* lr 0: the step changes nothing */
    cfg.augment_pad = 4;
    cr_assert_eq(model_init(&m, &cfg), AD_OK, "%s", ad_last_error());
    ad_rng rng, want_rng;
    ad_rng_seed(&rng, 77);
    ad_rng_seed(&want_rng, 77);
    m.augment = &rng;
    m.augment_skip[0] = 2;
    m.augment_skip[1] = 1;
    int64_t idx[BATCH];
    for (int i = 0; i < BATCH; i++)
        idx[i] = 3 * i + 1;
    double loss;
    cr_assert_eq(model_step(&m, images, labels, idx, &loss), AD_OK, "%s", ad_last_error());
    ad_tensor *raw, *want;
    cr_assert_eq(ad_tensor_new(AD_F32, 4, TS_SHAPE(BATCH, 1, 32, 32), &raw), AD_OK);
    cr_assert_eq(ad_tensor_new(AD_F32, 4, TS_SHAPE(BATCH, 1, 32, 32), &want), AD_OK);
    for (int i = 0; i < BATCH; i++)
        memcpy((float *)raw->data + i * 1024, (const float *)images->data + idx[i] * 1024,
               1024 * sizeof(float));
    for (int i = 0; i < 3 * 2; i++)
        (void)ad_rng_u64(&want_rng);
    cr_assert_eq(ad_random_crop_flip(raw, want, 4, &want_rng), AD_OK);
    for (int i = 0; i < 3 * 1; i++)
        (void)ad_rng_u64(&want_rng);
    cr_expect(memcmp(m.x->data, want->data, BATCH * 1024 * sizeof(float)) == 0,
              "the step's batch is not the crop and flip of the gathered images");
    cr_expect(memcmp(m.x->data, raw->data, BATCH * 1024 * sizeof(float)) != 0,
              "nothing was augmented");
    cr_expect_eq(ad_rng_u64(&rng), ad_rng_u64(&want_rng), "generators out of step");
    ad_tensor_free(raw);
    ad_tensor_free(want);
    model_free(&m);
}
