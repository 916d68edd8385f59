/*
** workloads.h: the benchmark workloads of bench/ (issue 4), shared by the step and
** floor measurements. Row-major, batch x features, W out x in, y = x W'.
*/
#ifndef BENCH_WORKLOADS_H
#define BENCH_WORKLOADS_H

#include <stdint.h>

enum { BENCH_MAX_LAYERS = 3 };
typedef enum { ACT_NONE, ACT_TANH, ACT_RELU } bench_act;
typedef enum { LOSS_MSE, LOSS_CE } bench_loss;

typedef struct workload {
    const char *name;
    int n_layers;
    int64_t widths[BENCH_MAX_LAYERS + 1];
    int bias;
    bench_act act;   /* between layers, not after the last */
    bench_loss loss;
    int64_t batch;
} workload;

static const workload bench_workloads[] = {
    {"W1", 3, {50, 60, 40, 2}, 0, ACT_NONE, LOSS_MSE, 64},
    {"W2", 3, {784, 256, 256, 10}, 1, ACT_TANH, LOSS_CE, 128},
    {"W3", 3, {784, 1024, 1024, 10}, 1, ACT_RELU, LOSS_CE, 256},
    {"W4", 3, {4096, 4096, 4096, 4096}, 0, ACT_RELU, LOSS_MSE, 512},
};

/*
** The convolutional workloads (issue 12), NCHW, conv weights Cout x Cin x k x k, as
** BioTorch defines LeNet (W5, MNIST on 1x32x32) and its small CIFAR-10 CNN (W6): each
** conv is k x k, stride 1, no padding, with a bias and relu, and 2x2 max pooling after
** the first two; then flatten and two linear layers with a bias and nothing between.
*/
enum { BENCH_CONV_LAYERS = 3, BENCH_FC_LAYERS = 2 };

typedef struct conv_workload {
    const char *name;
    int64_t in_channels, image, batch, kernel;
    int64_t channels[BENCH_CONV_LAYERS]; /* each conv's Cout */
    int pool_after[BENCH_CONV_LAYERS];   /* 2x2 max pooling after this conv */
    int64_t fc[BENCH_FC_LAYERS];         /* the linear layers' outputs */
} conv_workload;

static const conv_workload bench_conv_workloads[] = {
    {"W5", 1, 32, 64, 5, {6, 16, 120}, {1, 1, 0}, {84, 10}},
    {"W6", 3, 32, 128, 5, {32, 64, 128}, {1, 1, 0}, {84, 10}},
};

#endif /* BENCH_WORKLOADS_H */
