/*
** tests/examples/prelude.h: what the code examples of the headers in include/ and of
** README.md may assume. check_examples.py compiles every fragment and declarations
** example after this file (a program example stands alone). The names below are the
** ones examples use without declaring them; an example needing more declares it.
*/
#ifndef ADTAPE_EXAMPLES_PRELUDE_H
#define ADTAPE_EXAMPLES_PRELUDE_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ad.h"
#ifdef ADTAPE_EXAMPLES_MPI /* set for the examples of ad_mpi.h, when MPI was found */
#include "ad_mpi.h"
#endif

/* A tape, under both names the examples use. */
static ad_tape *t, *tape;

/* A parameter set; gradient sets for it (ref_gs for a reference sweep); an optimiser
** made for it; a generator; a step count. */
static ad_params *ps;
static ad_grads *gs, *ref_gs;
static ad_optim *opt;
static ad_rng rng;
static uint64_t step;

/* The caller's tensors: data X and targets Y; weights W, W1..W3; feedback matrices
** (fixed, W's shape; for DFA hidden x outputs) B, B1..B3. */
static ad_tensor X, Y, W, W1, W2, W3, B, B1, B2, B3;

/* Handles on the tape: inputs x, targets y, class labels; weights w, w1, w2; biases
** b, b1, b2. */
static ad_var x, y, labels, w, w1, w2, b, b1, b2;

/* DFA's link between its output and hidden rules. */
static ad_dfa dfa;

/* The running example of the README and ad_check.h, defined elsewhere: the FA layer's
** primal my_matmul(W, X, B) and a pullback giving what its dX should be, dY B. */
ad_status my_matmul(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
ad_status my_dy_times_b(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                        const ad_tensor *y, ad_tensor *const din[], const float beta[]);

/* What a loss callback gets through `void *user`, and such a callback (ad_loss_fn). */
static struct example_data {
    ad_tensor *x, *y;
} data;
static ad_var model_loss(ad_tape *tp, void *user)
{
    struct example_data *d = user;
    return ad_mse(tp, ad_use(tp, d->x), ad_use(tp, d->y));
}

/* main's arguments, for examples that start MPI. */
static int argc;
static char **argv;

/* Text for a message. */
static const char *why = "";

#endif /* ADTAPE_EXAMPLES_PRELUDE_H */
