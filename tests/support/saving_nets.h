/*
** saving_nets.h: what the memory-saving suites (test_memory_saving.c,
** test_memory_saving_api.c) share: seeded tensors freed together (bag), the small net
** their recordings run on, the macros that write a recording as an ad_loss_fn, and
** sweeps with and without memory saving (anomaly mode on with it, so a buffer read
** after its release holds NaN) whose gradients are compared bitwise.
*/
#ifndef TEST_SAVING_NETS_H
#define TEST_SAVING_NETS_H

#include <stdint.h>

#include "ad.h"

/* ---- tensors of a model: seeded, freed together ---- */

typedef struct bag {
    ad_tensor *all[12];
    int n;
    ad_params *ps;
    uint64_t seed;
} bag;

/* rows x cols (cols 0: a vector), uniform in [-r, r); int32 labels in 0..cols-1 when r is
** 0. A parameter when param. */
ad_tensor *bag_add(bag *g, ad_dtype dt, int64_t rows, int64_t cols, double r, int param);
void bag_close(bag *g);

/* ---- the net the recordings run on ---- */

enum { BATCH = 6, K = 8, M = 16 }; /* B x M: 384 bytes in f32, 768 in f64 */

typedef struct net {
    bag g;
    ad_tensor *x, *w1, *w1b, *w2, *w3, *b, *fb, *fbp, *target, *labels;
    ad_dfa dfa;
    ad_var in, out; /* the user rule's, from the last recording */
} net;

/* x (B x K), w1, w1b (M x K), w2, w3 (M x M), b (M), fbp (M x M, KP's B, trained) as
** parameters; fb (M x M), target (B x M) and labels (B, in 0..M-1) not; all of dtype dt
** (labels int32) and drawn from seed. */
void net_open(net *s, ad_dtype dt, uint64_t seed);

/* Inside a recording: t the tape, s the net. */
#define U(field) ad_use(t, s->field)
/* a, a2: matmul outputs (B x M) no pullback reads unless the op under test declares it
** does, so an op that reads what it declared unread meets a NaN-filled or retaken buffer. */
#define A ad_matmul(t, U(x), U(w1), 0, 1)
#define A2 ad_matmul(t, U(x), U(w1b), 0, 1)
/* A recording as an ad_loss_fn over a net. */
#define CASE(name, expr)                                                                  \
    static ad_var c_##name(ad_tape *t, void *user)                                        \
    {                                                                                     \
        net *s = user;                                                                    \
        return expr;                                                                      \
    }

/* loss = mse(tanh(z W2'), target): three more B x M values and cotangents after z. */
ad_var net_tail(ad_tape *t, net *s, ad_var z);

/* ---- sweeps ---- */

typedef struct run {
    ad_tape *t;
    ad_grads *gs;
    ad_var loss;
} run;

/* A fresh tape and gradient set; saving also turns anomaly mode on. */
run run_open(const ad_params *ps, int saving);
/* run_open, then record and sweep; the test fails unless the sweep succeeds. `what`
** names the case in the failure message. */
run net_sweep(const ad_params *ps, ad_loss_fn record, void *user, int saving, const char *what);
void run_drop(run *r);

/* Fails the test unless every parameter's gradient is bitwise the same in both runs (or
** absent in both). */
void same_grads(const ad_params *ps, const run *a, const run *b, const char *what);

#endif /* TEST_SAVING_NETS_H */
