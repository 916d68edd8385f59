/*
** options.h: adtape-train's command line. Parsing exits the process itself (0 after
** --help, 2 with a message on a bad value): this is a program, not the library.
*/
#ifndef TRAIN_OPTIONS_H
#define TRAIN_OPTIONS_H

#include "model.h"

enum { OPTIONS_MAX_SEEDS = 64 };

typedef struct options {
    model_arch arch;                         /* --model; mlp uses --hidden, --activation */
    rule_kind rules[RULE_COUNT];             /* in the order asked, no repeats */
    int n_rules;
    int64_t hidden[MODEL_MAX_LAYERS - 1];
    int n_hidden, relu, epochs, threads, json;
    int64_t batch, subset, holdout;          /* subset 0: every training image */
    double lr, weight_decay, momentum;       /* lr, decay NaN: the rule's default;
                                             ** momentum NaN: the optimiser's */
    ad_optim_kind optim;
    uint64_t seeds[OPTIONS_MAX_SEEDS];
    int n_seeds;
    const char *data_dir, *out_dir;          /* point into argv or static text; data_dir
                                             ** NULL: the model's data set's default */
    const char *checkpoint;                  /* --checkpoint or --resume FILE; NULL: none */
    int resume;                              /* --resume: continue from the checkpoints */
    int usf_scaling;                         /* --usf-scaling: BioTorch's scaled uSF */
    double bias_init;                        /* --bias-init: every bias's initial value */
    int augment;                             /* --augment 1, --no-augment 0; -1: on for
                                             ** cnn (BioTorch's CIFAR-10 training), off
                                             ** for mlp and lenet */
    int milestones[MODEL_MAX_MILESTONES];    /* --milestones: after so many epochs the
                                             ** rate is multiplied by --gamma */
    int n_milestones;
    double gamma;
    int clamp_grad;                          /* --clamp-grad: layer inputs' gradients
                                             ** clamped to [-1, 1] */
    int constrain_weights;                   /* --constrain-weights */
} options;

/* Learning rates per rule when --lr is not given, for mlp and for the conv models
** (lenet, cnn); defined in main.c, shown by --help. */
extern const double train_default_lr[RULE_COUNT], train_default_lr_conv[RULE_COUNT];

void options_parse(int argc, char **argv, options *o);

/* Whether training crops and flips its images (--augment, --no-augment, the model's
** default). */
int options_augments(const options *o);

/* "sgd", "momentum", ... as --optimiser spells it. */
const char *options_optim_name(ad_optim_kind k);

/* The training recipe's part of a model's configuration: the optimiser (its kind's
** defaults, then --momentum if given; lr and weight decay are per run), the schedule,
** clamping and the weight constraint. */
void options_recipe(const options *o, model_config *cfg);

#endif /* TRAIN_OPTIONS_H */
