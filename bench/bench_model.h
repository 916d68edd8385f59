/*
** bench_model.h: a workload as an adtape model, its GEMM floor, and the epoch run.
*/
#ifndef BENCH_MODEL_H
#define BENCH_MODEL_H

#include "ad.h"
#include "workloads.h"

typedef struct bench_model {
    const workload *w;
    int fa;
    ad_tensor *W[BENCH_MAX_LAYERS], *b[BENCH_MAX_LAYERS], *B[BENCH_MAX_LAYERS];
    ad_tensor *x, *target; /* target: f32 batch x out (MSE) or i32 labels (CE) */
    ad_params *ps;
    ad_grads *gs;
    ad_tape *tape;
    double lr;
    int fused_update; /* SGD from the gradient-ready callback, not after the sweep */
    double baseline_rss_mb; /* RSS with parameters and data, before gradients and steps */
} bench_model;

/* Glorot-uniform W (and FA's B), zero biases, random inputs and targets from seed. */
ad_status bench_model_init(bench_model *m, const workload *w, int fa, uint64_t seed);
void bench_model_free(bench_model *m);

/* Makes the step apply SGD to each parameter from the gradient-ready callback, as soon
** as its gradient is final (while the cache still holds it), instead of in
** ad_descent_step after the sweep. The parameters come out bitwise the same. */
void bench_model_fuse_update(bench_model *m);

/* The workload's loss recorded on t for the model user points to: the ad_loss_fn the
** step hands ad_gradient (bench_mpi.c hands it ad_mpi_gradient). */
ad_var bench_model_record(ad_tape *t, void *user);

/* One training step: ad_gradient, then ad_descent_step(lr) unless fused. */
ad_status bench_model_step(bench_model *m);

/* Resident MB now, with the kernel's peak reset to it; the peak since, in MB. */
double bench_rss_baseline_mb(void);
double bench_rss_peak_mb(void);

/* One GEMM of a floor: C (M x N) = op(A) op(B), row-major, op a transpose if set. */
typedef struct gemm_case {
    const char *what;
    int ta, tb, M, N, K;
} gemm_case;

/* Appends at cases[n] the GEMMs of a dense layer (batch x in -> batch x out): forward,
** dW, and dX unless it is the first layer. Returns the new count. */
int bench_floor_dense(gemm_case *cases, int n, int64_t batch, int64_t in, int64_t out,
                      int first);

/* Times each case alone (median of reps) and prints the floor's JSON line. */
int bench_floor_time(const char *name, const gemm_case *cases, int n, int threads, int reps,
                     int warmup);

/* Times every GEMM of the workload's step alone (median of reps each) and prints the
** JSON line of the floor: the sum, and each GEMM's median. */
int bench_floor(const workload *w, int threads, int reps, int warmup);

/* One epoch of W2 (backprop) on Fashion-MNIST in file order; prints images/s. */
int bench_epoch(int threads);

#endif /* BENCH_MODEL_H */
