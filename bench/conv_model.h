/*
** conv_model.h: the convolutional workloads (W5, W6) as adtape models, their im2col
** GEMM floor, and the W5 epoch on Fashion-MNIST resized to 32 x 32.
*/
#ifndef BENCH_CONV_MODEL_H
#define BENCH_CONV_MODEL_H

#include "ad.h"
#include "workloads.h"

enum { CONV_MODEL_PARAMS = BENCH_CONV_LAYERS + BENCH_FC_LAYERS };

typedef struct conv_model {
    const conv_workload *w;
    int fa;
    /* conv layers first, then the linear ones; B: FA's fixed feedback, W's shape */
    ad_tensor *W[CONV_MODEL_PARAMS], *b[CONV_MODEL_PARAMS], *B[CONV_MODEL_PARAMS];
    ad_tensor *x, *labels; /* x: batch x C x image x image; labels: i32 */
    ad_params *ps;
    ad_grads *gs;
    ad_optim *opt; /* SGD with momentum 0.9, lr 0.01, as PyTorch's torch.optim.SGD */
    ad_tape *tape;
    double baseline_rss_mb;
} conv_model;

/* Weights and FA's B uniform in +-1/sqrt(fan_in) (PyTorch's default bound for both
** conv and linear layers), zero biases, random inputs in [-1, 1] and labels. */
ad_status conv_model_init(conv_model *m, const conv_workload *w, int fa, uint64_t seed);
void conv_model_free(conv_model *m);

/* The loss recorded on t (an ad_loss_fn for the conv_model user points to). */
ad_var conv_model_record(ad_tape *t, void *user);

/* One training step: ad_gradient, then the momentum update. */
ad_status conv_model_step(conv_model *m);

/* The floor: every GEMM of the step's im2col form timed alone; prints its JSON line. */
int conv_model_floor(const conv_workload *w, int threads, int reps, int warmup);

/* One epoch of W5 (backprop) on Fashion-MNIST, bilinearly resized to 32 x 32 before the
** clock starts, in file order; prints images/s. */
int conv_model_epoch(int threads);

#endif /* BENCH_CONV_MODEL_H */
