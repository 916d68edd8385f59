/*
** model.h: the multilayer perceptron adtape-train trains, one learning rule per model.
**
** Layers: widths[0] inputs -> hidden widths -> widths[n] classes, each dense with a
** bias; tanh or relu between layers; softmax cross-entropy on the logits. The rule
** decides which op each dense layer records (ad_matmul for backprop, ad_dense_fa, ...)
** and which tensors are parameters; everything else is the same for every rule.
*/
#ifndef TRAIN_MODEL_H
#define TRAIN_MODEL_H

#include "ad.h"

enum { MODEL_MAX_LAYERS = 6 };

typedef enum rule_kind {
    RULE_BP,     /* backprop */
    RULE_FA,     /* feedback alignment: fixed random B per layer */
    RULE_DFA,    /* direct feedback alignment: e sent to each hidden layer */
    RULE_USF,    /* uniform sign symmetry: B = sign(W) */
    RULE_BRSF,   /* sign-concordant, magnitudes redrawn every batch */
    RULE_FRSF,   /* sign-concordant, fixed random magnitudes */
    RULE_KP,     /* Kolen-Pollack: B trained with W's update and decay */
    RULE_FROZEN, /* control: hidden layers frozen at init, output layer trained */
    RULE_COUNT
} rule_kind;

/* "bp", "fa", ... for a rule; RULE_COUNT for an unknown name. */
const char *rule_name(rule_kind r);
rule_kind rule_parse(const char *name);

typedef struct model_config {
    rule_kind rule;
    int n_layers;                          /* weight layers (hidden layers + 1) */
    int64_t widths[MODEL_MAX_LAYERS + 1];  /* widths[0] inputs ... widths[n] classes */
    int relu;                              /* 0: tanh */
    uint64_t seed;
    ad_optim_config optim;                 /* KP needs weight_decay > 0 to align */
    int64_t batch;
} model_config;

/*
** Where model_step gets its gradient: ad_gradient's contract, plus ctx, the hook's own
** state. model_init installs a call of ad_gradient; adtape-train under MPI installs
** ad_mpi_gradient (examples/train/parallel.c), so that this file needs no MPI.
*/
typedef ad_status (*model_gradient_fn)(void *ctx, ad_tape *tape, const ad_params *ps,
                                       ad_loss_fn loss_fn, void *user, ad_grads *gs,
                                       double *loss);

typedef struct model {
    model_config cfg;
    ad_tensor *W[MODEL_MAX_LAYERS], *b[MODEL_MAX_LAYERS];
    ad_tensor *B[MODEL_MAX_LAYERS]; /* FA/KP: W's shape; SF: magnitudes; DFA: units x classes */
    ad_tensor *x, *labels;          /* the current batch, filled by model_step's caller */
    ad_params *ps;
    ad_grads *gs;
    ad_grads *align_gs;             /* model_alignment's sweeps write here, never into gs */
    model_gradient_fn gradient;     /* model_step's gradient (see above) */
    void *gradient_ctx;
    ad_optim *opt;
    ad_tape *tape, *eval_tape;
    ad_dfa dfa;
    ad_rng rng;
    ad_var pre[MODEL_MAX_LAYERS];   /* hidden pre-activations of the last recording */
} model;

/* "fc<layer + 1>.<what>" ("weight", "bias", "feedback"): the names of the model's
** tensors in its parameter set and its checkpoints. */
void model_tensor_name(char *out, size_t size, int layer, const char *what);

/* Builds the model: Glorot-uniform W and feedback, zero biases, from cfg.seed. */
ad_status model_init(model *m, const model_config *cfg);
void model_free(model *m);

/* One training step on rows idx[0..batch) of images/labels (copied into the batch):
** gradient with the model's rule through m->gradient, optimiser step. *loss gets the
** batch loss (under MPI: the mean over the ranks' shards). */
ad_status model_step(model *m, const ad_tensor *images, const ad_tensor *labels,
                     const int64_t *idx, double *loss);

/* Test accuracy in [0, 1], forward only, in chunks of up to 1000 rows. */
ad_status model_accuracy(model *m, const ad_tensor *images, const ad_tensor *labels,
                         double *accuracy);

/*
** Alignment on rows [0, n) of images/labels: for each hidden layer l, the angle in
** degrees between the rule's pre-activation gradient and backprop's (two sweeps of one
** tape, the second with reference pullbacks), flattened over batch x units, and the
** angle between B_l and W_l (NaN where the rule has no such B). n_hidden entries each.
** Sweeps into align_gs, so it neither calls m->gradient nor fires gs's ready callback.
*/
ad_status model_alignment(model *m, const ad_tensor *images, const ad_tensor *labels,
                          int64_t n, double *grad_angle, double *weight_angle);

#endif /* TRAIN_MODEL_H */
