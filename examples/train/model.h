/*
** model.h: the networks adtape-train trains, one learning rule per model.
**
** mlp: widths[0] inputs -> hidden widths -> widths[n] classes, each dense with a bias;
** tanh or relu between layers. lenet and cnn: BioTorch's LeNet (1 x 32 x 32 inputs) and
** its small CIFAR-10 network (3 x 32 x 32): three 5 x 5 convolutions with a bias and a
** relu, 2 x 2 max pooling after the first two, then two dense layers with nothing
** between them (layers.c). Softmax cross-entropy on the logits. The rule decides which
** op each layer records (ad_conv2d_bias or ad_matmul for backprop, the _fa ops, ...)
** and which tensors are parameters; everything else is the same for every rule.
*/
#ifndef TRAIN_MODEL_H
#define TRAIN_MODEL_H

#include "ad.h"

enum { MODEL_MAX_LAYERS = 6, MODEL_MAX_MILESTONES = 8 };

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

typedef enum model_arch { ARCH_MLP, ARCH_LENET, ARCH_CNN, ARCH_COUNT } model_arch;

/* "mlp", "lenet", "cnn"; ARCH_COUNT for an unknown name. */
const char *arch_name(model_arch a);
model_arch arch_parse(const char *name);

typedef enum layer_act { ACT_NONE, ACT_RELU, ACT_TANH } layer_act;

/* One weight layer: a dense one (out x in weights) or a k x k convolution with stride 1
** and no padding (out x in x k x k), then its activation and, for a conv, pooling. */
typedef struct layer_spec {
    int conv;
    int64_t in, out;     /* units, or channels */
    int64_t kernel;      /* conv only */
    int64_t extent;      /* conv only: the input's height and width (square images) */
    layer_act act;
    int pool;            /* 2 x 2 max pooling after the activation */
} layer_spec;

typedef struct model_config {
    model_arch arch;                       /* ARCH_MLP (0): widths and relu describe it */
    rule_kind rule;
    int n_layers;                          /* weight layers (hidden layers + 1); for
                                           ** lenet and cnn model_init sets it */
    int64_t widths[MODEL_MAX_LAYERS + 1];  /* widths[0] inputs ... widths[n] classes */
    int relu;                              /* 0: tanh */
    uint64_t seed;
    ad_optim_config optim;                 /* KP needs weight_decay > 0 to align */
    int64_t batch;
    int usf_scaled;                        /* uSF: sign(W) times ad_usf_scale(W) */
    double bias_init;                      /* every bias's initial value */
    int milestones[MODEL_MAX_MILESTONES];  /* the rate's schedule (ad_lr_multistep from
                                           ** optim.lr); none: optim.lr throughout */
    int n_milestones;
    double gamma;
    int clamp_grad;                        /* ad_clamp_grad on every layer's input but
                                           ** the first's (BioTorch's gradient clamping) */
    int constrain_weights;                 /* every W back to its initial norm after each
                                           ** step (BioTorch's constrain_weights) */
    int augment_pad;                       /* > 0: model_step crops each training image
                                           ** from it padded by this much, and flips it
                                           ** (ad_random_crop_flip from model.augment) */
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
    layer_spec layers[MODEL_MAX_LAYERS];
    int64_t input[4];               /* one batch: batch x 784, or batch x C x H x W */
    int input_rank;
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
    ad_tensor *norms;               /* constrain_weights: W's initial norms (F64) */
    ad_tensor *x_raw;               /* augment_pad: the batch before its crop and flip */
    ad_rng *augment;                /* augment_pad: the caller's generator (NULL: none);
                                    ** each step draws for augment_skip[0] images
                                    ** before this process's and augment_skip[1] after,
                                    ** so that MPI ranks stay in step */
    int64_t augment_skip[2];
} model;

/* "fc<k>.<what>" or "conv<k>.<what>" ("weight", "bias", "feedback"), k counting the
** layers of that kind from 1 as PyTorch's state_dict of the same network: the names of
** the model's tensors in its parameter set and its checkpoints. */
void model_tensor_name(const model *m, char *out, size_t size, int layer, const char *what);

/* Fills m->layers, m->input and m->cfg.n_layers from m->cfg (layers.c). */
ad_status model_layout(model *m);

/* Records layer l of m on t with the op the rule asks for, activation and pooling
** included (layers.c). pre gets the layer's output before its activation. */
ad_var model_layer(model *m, ad_tape *t, int l, ad_var h, ad_var *pre);

/* The shape of the feedback tensor layer l needs under the rule, or 0 (layers.c). */
int model_feedback_shape(const model *m, int l, int64_t shape[4]);

/* Builds the model: Glorot-uniform W and feedback, zero biases, from cfg.seed. */
ad_status model_init(model *m, const model_config *cfg);
void model_free(model *m);

/* Sets the learning rate for epoch e (0-based) from the schedule; with no milestones
** it leaves the rate alone. */
ad_status model_set_epoch(model *m, int e);

/* One training step on rows idx[0..batch) of images/labels (copied into the batch):
** gradient with the model's rule through m->gradient, optimiser step, then the weight
** constraint if asked. *loss gets the batch loss (under MPI: the mean over the ranks'
** shards). */
ad_status model_step(model *m, const ad_tensor *images, const ad_tensor *labels,
                     const int64_t *idx, double *loss);

/* Test accuracy in [0, 1], forward only, in chunks of up to 1000 rows. */
ad_status model_accuracy(model *m, const ad_tensor *images, const ad_tensor *labels,
                         double *accuracy);

/*
** Alignment on rows [0, n) of images/labels: for each hidden layer l, the angle in
** degrees between the rule's pre-activation gradient and backprop's (two sweeps of one
** tape, the second with reference pullbacks), flattened over batch x units, and the
** weight angles of model_weight_metrics. n_hidden entries of grad_angle, n_layers of
** weight_angle. Sweeps into align_gs, so it neither calls m->gradient nor fires gs's
** ready callback.
*/
ad_status model_alignment(model *m, const ad_tensor *images, const ad_tensor *labels,
                          int64_t n, double *grad_angle, double *weight_angle);

/* For every weight layer l (n_layers entries; NULL outputs skipped): BioTorch's weight
** angle between the feedback F_l that the rule sends dX through in place of W_l (B for
** FA and KP, sign(W_l) for uSF, |M_l| sign(W_l) for brSF and frSF) and W_l, in
** degrees, and the norm ratio |F_l| / |W_l| (Frobenius). NaN for rules without such
** an F (backprop, DFA, the frozen control). Reads the weights only. */
void model_weight_metrics(const model *m, double *angle, double *norm_ratio);

#endif /* TRAIN_MODEL_H */
