/*
** tape_model.h: the model the tape and sweep suites share: one dense layer with a
** bias and tanh, scored by MSE: loss = mse(tanh(x W' + b), y), x 4x3, W 5x3, b 5,
** y 4x5, float32, plus a parameter `unused` (2) that the loss does not touch.
*/
#ifndef TEST_TAPE_MODEL_H
#define TEST_TAPE_MODEL_H

#include "ad.h"

enum { N = 4, IN = 3, OUT = 5 };

typedef struct model {
    ad_tensor *features, *weights, *bias, *target, *unused;
    ad_params *ps;
    ad_grads *gs;
    ad_tape *t;
} model;

/* Seeded tensors; weights, bias and unused in ps; gs for ps; an empty tape t. */
void model_open(model *m);
void model_close(model *m);

/* The handles model_record gives back: the four leaves, every node and the loss. */
typedef struct handles {
    ad_var x, w, b, y, z, zb, h, loss;
} handles;

/* Records the forward pass on m->t. The leaves are named m->features, m->weights,
** m->bias and m->target, as the tests that read names expect. */
handles model_record(model *m);

#endif /* TEST_TAPE_MODEL_H */
