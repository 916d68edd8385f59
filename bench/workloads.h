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

#endif /* BENCH_WORKLOADS_H */
